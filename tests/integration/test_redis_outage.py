"""A Redis outage in the middle of work never fails a request: it degrades to no cache."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest

from ragpress.cache.redis import RedisCache
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.middleware.batch.runner import run_batch
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions, Passage

pytestmark = pytest.mark.redis

DOCS = [
    Passage("Alpha is first. Beta is second. Gamma is third.", title="Greek"),
    Passage("Red is a colour. Blue is another colour. Green is calm.", title="Colours"),
]


def pipeline_on(url: str, embedder, *, retry_after: float = 60) -> Pipeline:
    store = RedisCache.from_url(
        url, namespace=f"test-{uuid.uuid4().hex[:8]}", retries=0, socket_timeout_seconds=0.3
    )
    return Pipeline(
        [Stage(SentenceSelectionCompressor(embedder))],
        cache=FailOpenCache(store, retry_after_seconds=retry_after),
        defaults=CompressionOptions(target_ratio=2),
        token_counter=get_token_counter(),
    )


async def test_requests_succeed_through_an_outage_and_use_redis_again(
    redis_relay, fake_embedder, caplog
) -> None:
    pipeline = pipeline_on(redis_relay.url, fake_embedder, retry_after=0)
    assert pipeline.cache is not None
    warm = await pipeline.acompress("Beta", DOCS)
    assert warm.cache_misses == 2
    assert (await pipeline.acompress("Blue", DOCS)).cache_hits == 2

    redis_relay.stop()
    with caplog.at_level(logging.WARNING, logger="ragpress.cache"):
        during = [await pipeline.acompress("Gamma", DOCS) for _ in range(3)]
    assert all(r.cache_hits == 0 and len(r.passages) == 2 for r in during)
    assert pipeline.cache.counters.errors >= 1
    assert sum("unavailable" in r.message for r in caplog.records) == 1  # logged once

    redis_relay.start()
    after = await pipeline.acompress("Alpha", DOCS)
    assert after.cache_hits == 2  # the entries written before the outage are back
    await pipeline.cache.store.clear()
    await pipeline.aclose()


async def test_a_batch_keeps_going_when_redis_stops_midway(redis_relay, fake_embedder) -> None:
    pipeline = pipeline_on(redis_relay.url, fake_embedder)
    assert pipeline.cache is not None
    records = [
        json.dumps(
            {
                "id": str(i),
                "question": "colour",
                "docs": [{"title": d.title, "text": d.text + f" Item {i}."} for d in DOCS],
            }
        ).encode()
        for i in range(40)
    ]
    written: list[dict[str, Any]] = []

    def write(record: dict[str, Any]) -> None:
        written.append(record)
        if len(written) == 15:
            redis_relay.stop()

    report = await run_batch(enumerate(records, 1), pipeline, write, workers=4)
    assert [r["id"] for r in written] == [str(i) for i in range(40)]
    assert report.errors == 0 and all(r["error"] is None for r in written)
    assert pipeline.cache.counters.errors >= 1
    await pipeline.aclose()
