"""CompLLM: time to first token and KV cache, full context vs concept embeddings, side by side.

For each context length, in one run and interleaved: the full context as tokens, the same
context as concept embeddings compressed cold (empty cache), and the same embeddings served from
a warm cache (the documents were seen by an earlier query). Every path goes through the real
code: the pipeline with the per-segment cache, the chat-templated prompt, and the frozen LLM's
prefill with ``inputs_embeds``. Time to first token = everything from the texts in hand to the
first generated token (tokenising, cache reads, compression, prefill). The model is built from
a config with random weights (timing does not depend on the weights); the default shape is
Qwen2.5-0.5B's (24 layers, width 896, 2 KV heads, 151,936-token vocabulary).

    # GPU (the numbers the issue's goals are stated for):
    .venv/bin/python bench/compllm.py --device cuda --dtype bfloat16 --lengths 2048 8192 32768
    # CPU, what fits in a few minutes:
    .venv/bin/python bench/compllm.py --lengths 2048 8192
    # quick look with a 4-layer, 256-wide model:
    .venv/bin/python bench/compllm.py --small

Reported: TTFT per path (median of --repeats), the ratios to full context (median of the
per-repeat ratios, each from paths run back to back; the row line adds their range), KV-cache
bytes, cold compression time per 1,000 context tokens (flat across lengths = linear in
length), the warm path's time before the prefill and both prompts' positions. Then, for a
bf16/fp16 model, the compression of the first length's segments with the LoRA in the model's
dtype (what ragpress runs) against PEFT's float32 adapter route, alternating.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import torch

from ragpress.cache.memory import MemoryCache
from ragpress.compressors.compllm import CompLLMCompressor
from ragpress.compressors.compllm.generation import EmbeddingGenerator
from ragpress.compressors.compllm.synthetic import build_random_checkpoint
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.types import Passage

ROOT = Path(__file__).resolve().parents[1]


def corpus(data_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Distinct documents and a question from the shared QA set (or the test fixture)."""
    path = data_dir / "nq_dev.jsonl.gz"
    if not path.is_file():
        path = ROOT / "tests" / "fixtures" / "nq_sample.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        for doc in row["docs"]:
            seen.setdefault(doc["text"], doc)
    return list(seen.values()), rows[0]["question"]


def context_of(
    compressor: CompLLMCompressor, docs: list[dict[str, Any]], tokens: int
) -> list[Passage]:
    """Distinct passages adding up to about ``tokens`` context tokens (cycled and numbered)."""
    out: list[Passage] = []
    total = 0
    round_ = 0
    while total < tokens:
        for doc in docs:
            title = doc["title"] if round_ == 0 else f"{doc['title']} ({round_})"
            passage = Passage(doc["text"], title=title)
            out.append(passage)
            total += sum(len(s.ids) for s in compressor.segments(passage))
            if total >= tokens:
                break
        round_ += 1
    return out


async def one_length(
    compressor: CompLLMCompressor,
    generator: EmbeddingGenerator,
    passages: list[Passage],
    question: str,
    store: Any,
) -> dict[str, float]:
    """Full, cold and warm TTFT for one context, in that order, with fresh cache namespaces."""
    result: dict[str, float] = {}
    started = time.perf_counter()
    ids = compressor.full_prompt_ids(question, passages)
    full = generator.prefill(compressor.encoder.embed_ids(ids))
    result["full_s"] = time.perf_counter() - started
    result["full_kv"] = full.kv_cache_bytes
    result["full_positions"] = len(ids)
    result["context_tokens"] = sum(len(s.ids) for p in passages for s in compressor.segments(p))

    pipeline = Pipeline([Stage(compressor)], cache=FailOpenCache(store))
    started = time.perf_counter()
    cold = await pipeline.acompress(question, passages)
    assert isinstance(cold.embeddings, torch.Tensor)
    prompt = compressor.prompt_embeddings(question, cold.embeddings)
    first = generator.prefill(prompt)
    result["cold_s"] = time.perf_counter() - started
    result["compress_s"] = cold.timings_ms.get("analyze", 0.0) / 1e3
    result["soft_kv"] = first.kv_cache_bytes
    result["concepts"] = cold.tokens_after

    started = time.perf_counter()
    warm = await pipeline.acompress(f"{question} (asked again)", passages)
    assert isinstance(warm.embeddings, torch.Tensor)
    prompt = compressor.prompt_embeddings(f"{question} (asked again)", warm.embeddings)
    result["warm_before_prefill_s"] = time.perf_counter() - started
    generator.prefill(prompt)
    result["warm_s"] = time.perf_counter() - started
    assert warm.cache_misses == 0, "the warm pass must be served from the cache"
    result["warm_positions"] = prompt.shape[0]
    return result


async def main(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    docs, question = corpus(args.data_dir)
    with tempfile.TemporaryDirectory() as folder:
        print(f"building a random {args.shape} model ...", flush=True)
        texts = [d["text"] for d in docs[:3000]]
        build_random_checkpoint(
            folder, corpus=texts, shape=args.shape, vocab_size=8192, dtype=torch.bfloat16
        )
        compressor = CompLLMCompressor.create(
            folder, device=args.device, dtype=args.dtype, batch_size=args.batch_size
        )
        params = sum(p.numel() for p in compressor.encoder.llm.parameters())
        generator = EmbeddingGenerator(compressor.encoder)
        print(
            f"{params / 1e6:.0f}M parameters (LoRA included), {args.dtype} on {args.device}; "
            f"threads={torch.get_num_threads()}",
            flush=True,
        )
        warmup = context_of(compressor, docs, 256)
        await one_length(compressor, generator, warmup, question, MemoryCache())
        rows = []
        for length in args.lengths:
            passages = context_of(compressor, docs, length)
            runs = []
            for _ in range(args.repeats):
                store = await _store(args.redis_url)
                runs.append(await one_length(compressor, generator, passages, question, store))
                await store.clear()
                await store.aclose()
            for run in runs:  # paired: the three paths of one repeat ran back to back
                run["warm_ratio"] = run["warm_s"] / run["full_s"]
                run["cold_ratio"] = run["cold_s"] / run["full_s"]
            row = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            row["warm_ratio_min"] = min(r["warm_ratio"] for r in runs)
            row["warm_ratio_max"] = max(r["warm_ratio"] for r in runs)
            rows.append(row)
            _print_row(length, row)
        _print_table(rows, args)
        if args.dtype != "float32":
            passages = context_of(compressor, docs, args.lengths[0])
            adapter_routes(compressor, passages, max(2, args.repeats), args.batch_size)


def adapter_routes(
    compressor: CompLLMCompressor, passages: list[Passage], repeats: int, batch_size: int
) -> None:
    """Best compression time per 1k tokens: LoRA in the model's dtype vs PEFT's float32 route."""
    encoder = compressor.encoder
    segments = [s.ids for p in passages for s in compressor.segments(p)]
    tokens = sum(len(s) for s in segments)

    def float32_route() -> None:
        with torch.no_grad():  # encode_with_grad keeps PEFT's float32 adapter path
            encoder.encode_with_grad(segments, batch_size=batch_size)

    routes = {
        "model dtype": lambda: encoder.encode(segments, batch_size=batch_size),
        "float32": float32_route,
    }
    best = dict.fromkeys(routes, float("inf"))
    for _ in range(repeats):
        for name, run in routes.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    fast, slow = (best[name] * 1e6 / tokens for name in routes)
    print(
        f"\ncompression of {tokens:,} tokens, best of {repeats}: LoRA in the model's dtype "
        f"{fast:,.0f} ms per 1k tokens, PEFT's float32 LoRA {slow:,.0f} ms per 1k tokens "
        f"({slow / fast:.2f}x)"
    )


async def _store(redis_url: str | None) -> Any:
    if not redis_url:
        return MemoryCache(max_bytes=4 << 30)
    from ragpress.cache.redis import RedisCache

    return RedisCache.from_url(redis_url, namespace=f"bench-compllm-{uuid.uuid4().hex[:8]}")


def _print_row(length: int, row: dict[str, float]) -> None:
    print(
        f"  {length}: full {row['full_s']:.2f}s, cold {row['cold_s']:.2f}s "
        f"(compress {row['compress_s']:.2f}s), warm {row['warm_s']:.2f}s "
        f"({row['warm_before_prefill_s'] * 1e3:.0f} ms before the prefill); prefill positions: "
        f"full {row['full_positions']:,.0f}, soft {row['warm_positions']:,.0f}; warm / full "
        f"{row['warm_ratio']:.3f} ({row['warm_ratio_min']:.3f}-{row['warm_ratio_max']:.3f})",
        flush=True,
    )


def _print_table(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    cache = "Redis" if args.redis_url else "in-process"
    print()
    print(
        f"| context tokens | concept embeddings | TTFT full | TTFT cold | TTFT warm ({cache}) "
        "| warm / full | cold / full | KV full | KV soft | KV soft / full "
        "| compress ms per 1k tokens |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        n = row["context_tokens"]
        print(
            f"| {n:,.0f} | {row['concepts']:,.0f} | {row['full_s'] * 1e3:,.0f} ms "
            f"| {row['cold_s'] * 1e3:,.0f} ms | {row['warm_s'] * 1e3:,.0f} ms "
            f"| {row['warm_ratio']:.2f}x | {row['cold_ratio']:.2f}x "
            f"| {row['full_kv'] / 2**20:.1f} MiB | {row['soft_kv'] / 2**20:.1f} MiB "
            f"| {row['soft_kv'] / row['full_kv']:.2f}x | {row['compress_s'] * 1e6 / n:.0f} |"
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=["qwen2.5-0.5b", "small"])
    parser.add_argument(
        "--small",
        action="store_true",
        help="4 layers, width 256: a quick run (lengths 2048 8192 32768)",
    )
    parser.add_argument("--lengths", nargs="+", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--batch-size", type=int, default=64, help="segments per forward pass")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--redis-url", help="serve the warm path from Redis instead of memory")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    if args.small:
        args.shape = "small"
    if args.lengths is None:
        args.lengths = [2048, 8192, 32768] if args.small or args.device != "cpu" else [2048, 8192]
    return args


if __name__ == "__main__":
    anyio.run(main, parse())
