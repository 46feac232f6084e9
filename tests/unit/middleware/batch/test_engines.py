"""Micro-batching across records, the multi-process engine, and memory on a streaming corpus."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from ragpress.config import RagpressSettings
from ragpress.exceptions import RequestValidationError, WorkerFailedError
from ragpress.middleware.batch.job import BatchJob, run_job
from ragpress.middleware.batch.pool import PipelineFactory, run_processes
from ragpress.middleware.batch.records import record_key
from ragpress.middleware.batch.runner import ResumeSet, micro_batches, run_batch
from ragpress.middleware.pipeline.core import Pipeline, PipelineRequest
from ragpress.middleware.pipeline.factory import build_pipeline
from ragpress.types import CompressionOptions, Passage
from tests.support.fakes import EchoPipeline, HashingEmbedder

TOPICS = ["Paris", "bread", "rivers", "Nobel", "X-rays", "yeast", "towers", "physics"]


def corpus(n: int) -> list[dict[str, Any]]:
    """Records whose documents repeat across records (as retrieved passages do)."""
    return [
        {
            "id": f"r{i}",
            "question": f"What about {TOPICS[i % len(TOPICS)]}?",
            "docs": [
                {
                    "title": TOPICS[(i + k) % len(TOPICS)],
                    "text": f"{TOPICS[(i + k) % len(TOPICS)]} is a topic. It has fact {k}. "
                    "Records mention it. Nothing else matters here.",
                }
                for k in range(3)
            ],
        }
        for i in range(n)
    ]


@dataclass(frozen=True)
class HashingFactory:
    """A picklable pipeline factory on the hashing embedder (no model: fast worker start)."""

    cache: str = "memory"

    def __call__(self, *, device: str | None = None) -> Pipeline:
        settings = RagpressSettings(_env_file=None, cache={"backend": self.cache})
        return build_pipeline(settings, embedder=HashingEmbedder())


def lines_of(records: list[Any]) -> list[tuple[int, bytes]]:
    return [
        (i, r if isinstance(r, bytes) else json.dumps(r).encode()) for i, r in enumerate(records, 1)
    ]


def passes(embedder) -> int:
    """Passage-embedding calls (the query is embedded on its own, one text per request)."""
    return sum(n > 1 for n in embedder.calls)


def without_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for record in records:
        if record.get("stats"):
            record["stats"].pop("ms")
    return records


def test_micro_batches_align_on_ordinals_whatever_is_skipped() -> None:
    lines = lines_of([{"id": i, "text": "x"} for i in range(10)])
    assert [[n for n, _ in b] for b in micro_batches(lines, 4)] == [
        [1, 2, 3, 4],
        [5, 6, 7, 8],
        [9, 10],
    ]
    skip = ResumeSet([record_key({"id": i}, 0) for i in range(6)])
    skipped = []
    batches = micro_batches(lines, 4, skip=skip, on_skip=lambda: skipped.append(1))
    assert [[n for n, _ in b] for b in batches] == [[7, 8], [9, 10]]
    assert len(skipped) == 6


def test_resume_set_skips_a_repeated_id_only_as_often_as_it_was_written() -> None:
    done = ResumeSet(["id:a", "id:b"])
    assert [done(k) for k in ("id:a", "id:a", "id:b", "id:c")] == [True, False, True, False]


async def test_acompress_many_equals_one_by_one_with_one_model_pass(fake_embedder) -> None:
    settings = RagpressSettings(_env_file=None, cache={"backend": "memory"})
    records = corpus(6)
    requests = [
        PipelineRequest(r["question"], [Passage(d["text"], title=d["title"]) for d in r["docs"]])
        for r in records
    ]
    bad = PipelineRequest("q", [Passage("a b c " * 50)], CompressionOptions(target_tokens=1))
    requests.insert(
        2,
        PipelineRequest(
            "q",
            [Passage("keep ACME. other words.")],
            CompressionOptions(target_tokens=1, keep=("ACME",)),
        ),
    )
    requests.append(bad)
    together = build_pipeline(settings, embedder=fake_embedder)
    results = await together.acompress_many(requests)
    assert passes(fake_embedder) == 1  # every record's passages in one model pass
    alone_embedder = type(fake_embedder)()
    alone = build_pipeline(settings, embedder=alone_embedder)
    for request, result in zip(requests, results, strict=True):
        try:
            expected = await alone.acompress(request.query, request.passages, request.options)
        except RequestValidationError as exc:
            assert type(result) is type(exc) and str(result) == str(exc)
            continue
        assert not isinstance(result, Exception)
        assert [p.text for p in result.passages] == [p.text for p in expected.passages]
        assert [p.spans for p in result.passages] == [p.spans for p in expected.passages]
        assert (result.tokens_before, result.tokens_after, result.cache_hits) == (
            expected.tokens_before,
            expected.tokens_after,
            expected.cache_hits,
        )
    assert isinstance(results[2], RequestValidationError)
    assert passes(alone_embedder) > 1


async def test_acompress_many_without_cache_still_batches(fake_embedder) -> None:
    settings = RagpressSettings(_env_file=None, cache={"backend": "none"})
    pipeline = build_pipeline(settings, embedder=fake_embedder)
    records = corpus(4)
    results = await pipeline.acompress_many(
        [PipelineRequest(r["question"], [Passage(d["text"]) for d in r["docs"]]) for r in records]
    )
    assert passes(fake_embedder) == 1
    assert all(not isinstance(r, Exception) and r.tokens_after < r.tokens_before for r in results)


async def test_micro_batched_run_keeps_order_errors_and_one_line_per_input(fake_embedder) -> None:
    pipeline = build_pipeline(
        RagpressSettings(_env_file=None, cache={"backend": "memory"}), embedder=fake_embedder
    )
    records: list[Any] = corpus(23)
    records[4] = b"{broken"
    records[9] = {"id": "empty", "docs": [{"text": " "}]}
    out: list[dict[str, Any]] = []
    report = await run_batch(lines_of(records), pipeline, out.append, batch_size=8, workers=1)
    assert len(out) == 23 and report.records == 23 and report.errors == 2
    assert [r.get("id") for r in out] == [
        None if i == 4 else ("empty" if i == 9 else f"r{i}") for i in range(23)
    ]
    assert out[4]["error"].startswith("line 5: not valid JSON")
    assert "every document is empty" in out[9]["error"]
    # At most one model pass per micro-batch of 8 (none when the cache has every document).
    assert 1 <= passes(fake_embedder) <= 3
    assert report.cache_hits > 0 and report.tokens_after < report.tokens_before


async def test_micro_batching_does_not_change_the_output(fake_embedder) -> None:
    settings = RagpressSettings(_env_file=None, cache={"backend": "none"})
    records = corpus(12)
    outputs = []
    for batch_size in (1, 5):
        out: list[dict[str, Any]] = []
        pipeline = build_pipeline(settings, embedder=fake_embedder)
        await run_batch(lines_of(records), pipeline, out.append, batch_size=batch_size)
        outputs.append(without_timing(out))
    assert outputs[0] == outputs[1]


def test_worker_processes_give_the_in_process_output(tmp_path: Path) -> None:
    records: list[Any] = corpus(30)
    records[7] = b"not json"
    here: list[dict[str, Any]] = []
    anyio.run(
        lambda: run_batch(
            lines_of(records), HashingFactory("none")(), here.append, batch_size=4, workers=1
        )
    )
    pooled: list[dict[str, Any]] = []
    progress: list[int] = []
    report = run_processes(
        lines_of(records),
        HashingFactory("none"),
        pooled.append,
        workers=2,
        batch_size=4,
        on_progress=progress.append,
    )
    assert without_timing(pooled) == without_timing(here)
    assert report.records == 30 and report.errors == 1 and sum(progress) == 30


@dataclass(frozen=True)
class BrokenFactory:
    def __call__(self, *, device: str | None = None) -> Pipeline:
        return build_pipeline(RagpressSettings(_env_file=None, compression={"method": "nope"}))


def test_a_worker_that_cannot_build_its_pipeline_fails_the_run_clearly() -> None:
    with pytest.raises(Exception, match="nope") as caught:
        run_processes(lines_of(corpus(3)), BrokenFactory(), print, workers=1, batch_size=2)
    assert not isinstance(caught.value, WorkerFailedError)


def _peak_bytes(tmp_path: Path, n: int, suffix: str, *, traced: bool = True) -> int:
    source = tmp_path / f"in-{n}.jsonl.gz"
    with gzip.open(source, "wt") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": i, "text": f"document {i} " + "word " * 40}) + "\n")
    if traced:
        tracemalloc.start()
    try:
        report = run_job(
            BatchJob(
                str(source),
                str(tmp_path / f"out-{n}{suffix}"),
                batch_size=32,
                checkpoint_records=200,
            ),
            cast("PipelineFactory", EchoPipeline),  # the class builds one: a picklable factory
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.records == n
    return peak


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".parquet"])
def test_memory_stays_flat_on_a_streaming_corpus(tmp_path: Path, suffix: str) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    _peak_bytes(tmp_path, 10, suffix, traced=False)  # imports and first-use caches
    small = _peak_bytes(tmp_path, 400, suffix)
    large = _peak_bytes(tmp_path, 4_000, suffix)  # ten times the records
    print(f"peak traced memory: {small:,} B for 400 records, {large:,} B for 4,000")
    assert large < 1.3 * small, (small, large)
