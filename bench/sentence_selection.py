"""Benchmark of the default compressor: quality against naive top-k, and cold vs warm latency.

Quality (answer retention, achieved ratio, supporting-paragraph recall) on the shared QA sets,
for the naive baseline (each sentence embedded alone, best sentences first until the budget is
spent) and for ragpress's sentence_selection, at the same budgets; the figures are in
docs/compressors/sentence_selection.md. Latency: ms per
10-document request through the real pipeline with a cold cache and then a warm one, with the
in-process cache and with Redis, side by side in one run.

    .venv/bin/python bench/sentence_selection.py --data-dir ../shared/data
    .venv/bin/python bench/sentence_selection.py --data-dir ../shared/data \
        --limit 300 --skip-latency
    .venv/bin/python bench/sentence_selection.py --data-dir ../shared/data \
        --sets nq_dev --skip 300 --skip-latency      # the records tuning did not see

Measures: retention = share of records whose compressed context contains an answer string
(case-insensitive, alphanumerics only); ratio = tokens before / after (cl100k_base, document
texts); recall = share of gold (``is_gold``) documents that keep at least one sentence.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict

import anyio

from ragpress.cache.memory import MemoryCache
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.retrieval.embedders import SentenceTransformerEmbedder
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions, Passage


class SelectionSettings(TypedDict):
    title_in_embedding: bool
    document_weight: float
    lexical_weight: float
    neighbor_weight: float
    document_decay: float


NAIVE: SelectionSettings = {
    "title_in_embedding": False,
    "document_weight": 0.0,
    "lexical_weight": 0.0,
    "neighbor_weight": 0.0,
    "document_decay": 0.0,
}


def normalise(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def load(path: Path, limit: int | None, skip: int = 0) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle][skip:]
    return rows[:limit] if limit else rows


def passages(record: dict[str, Any]) -> list[Passage]:
    return [Passage(d["text"], title=d.get("title")) for d in record["docs"]]


async def quality(pipeline: Pipeline, rows: list[dict[str, Any]], ratio: float) -> dict[str, float]:
    kept = before = after = 0
    recalls: list[float] = []
    for row in rows:
        result = await pipeline.acompress(
            row["question"], passages(row), CompressionOptions(target_ratio=ratio)
        )
        context = normalise(result.context())
        kept += any(normalise(a) in context for a in row["answers"])
        before += result.tokens_before
        after += result.tokens_after
        gold = [i for i, d in enumerate(row["docs"]) if d.get("is_gold")]
        if gold:
            recalls.append(sum(bool(result.passages[i].text) for i in gold) / len(gold))
    return {
        "retention": kept / len(rows),
        "ratio": before / after,
        "recall": statistics.mean(recalls) if recalls else float("nan"),
    }


def pipeline_for(compressor: SentenceSelectionCompressor, store: Any) -> Pipeline:
    return Pipeline(
        [Stage(compressor)],
        cache=FailOpenCache(store),
        token_counter=get_token_counter(),
        defaults=CompressionOptions(target_ratio=3),
    )


async def latency(
    embedder: SentenceTransformerEmbedder, rows: list[dict[str, Any]], store: Any
) -> tuple[float, float]:
    """Median ms per request: first pass over the records (cold), then again (warm)."""
    pipeline = pipeline_for(SentenceSelectionCompressor(embedder), store)
    timings: dict[str, list[float]] = {"cold": [], "warm": []}
    for phase in ("cold", "warm"):
        for row in rows:
            started = time.perf_counter()
            await pipeline.acompress(row["question"], passages(row))
            timings[phase].append((time.perf_counter() - started) * 1e3)
    await store.clear()
    await store.aclose()
    return statistics.median(timings["cold"]), statistics.median(timings["warm"])


async def main(args: argparse.Namespace) -> None:
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up the model"])
    print(
        "| set | records | budget | naive retention | ours retention | naive ratio | ours "
        "ratio | naive recall | ours recall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.sets:
        rows = load(args.data_dir / f"{name}.jsonl.gz", args.limit, args.skip)
        naive = pipeline_for(SentenceSelectionCompressor(embedder, **NAIVE), MemoryCache())
        ours = pipeline_for(SentenceSelectionCompressor(embedder), MemoryCache())
        for ratio in args.ratios:
            a = await quality(naive, rows, ratio)
            b = await quality(ours, rows, ratio)
            print(
                f"| {name} | {len(rows)} | {ratio:g}x | {a['retention']:.3f} | "
                f"{b['retention']:.3f} | {a['ratio']:.2f} | {b['ratio']:.2f} | "
                f"{a['recall']:.3f} | {b['recall']:.3f} |",
                flush=True,
            )
    if args.skip_latency:
        return
    rows = load(args.data_dir / "nq_dev.jsonl.gz", None)[-args.latency_records :]
    backends: dict[str, Any] = {"memory": MemoryCache()}
    if args.redis_url:
        from ragpress.cache.redis import RedisCache

        backends["redis"] = RedisCache.from_url(
            args.redis_url, namespace=f"bench-{uuid.uuid4().hex[:8]}"
        )
    print()
    print("| cache | requests | cold ms (median) | warm ms (median) | speedup |")
    print("|---|---|---|---|---|")
    for label, store in backends.items():
        cold, warm = await latency(embedder, rows, store)
        print(
            f"| {label} | {len(rows)} | {cold:.1f} | {warm:.1f} | {cold / warm:.1f}x |", flush=True
        )


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--sets", nargs="+", default=["nq_dev", "musique_dev"])
    parser.add_argument("--limit", type=int, help="records per set (default: all)")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N records")
    parser.add_argument("--ratios", nargs="+", type=float, default=[3.0, 5.0])
    parser.add_argument("--latency-records", type=int, default=50)
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/0",
        help="empty to skip the Redis latency row",
    )
    parser.add_argument("--skip-latency", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    anyio.run(main, parse())
