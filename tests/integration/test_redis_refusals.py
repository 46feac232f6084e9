"""Issue 21: a Redis that answers but refuses writes is an unavailable cache, not a failure.

Each test starts its own ``redis-server`` and puts it in the state under test (the shared test
Redis is never touched): OOM at maxmemory with noeviction, a read-only replica, NOREPLICAS
(min-replicas-to-write without replicas) and MISCONF (a failed snapshot with
stop-writes-on-bgsave-error).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from ragpress.cache.redis import RedisCache
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.exceptions import CacheUnavailableError
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions, Passage
from tests.conftest import REQUIRE_REDIS
from tests.support.fakes import HashingEmbedder
from tests.support.redis_server import OOM_ARGS, RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

DOCS = [
    Passage("Alpha is first. Beta is second. Gamma is third.", title="Greek"),
    Passage("Red is a colour. Blue is another colour. Green is calm.", title="Colours"),
]


def _oom(stack: ExitStack, folder: Path) -> str:
    server = stack.enter_context(RedisServer(folder, *OOM_ARGS))
    return server.url


def _readonly(stack: ExitStack, folder: Path) -> str:
    primary = stack.enter_context(RedisServer(folder / "primary"))
    replica = stack.enter_context(
        RedisServer(folder / "replica", "--replicaof", "127.0.0.1", str(primary.port))
    )
    return replica.url


def _noreplicas(stack: ExitStack, folder: Path) -> str:
    return stack.enter_context(RedisServer(folder, "--min-replicas-to-write", "1")).url


def _misconf(stack: ExitStack, folder: Path) -> str:
    server = stack.enter_context(RedisServer(folder, "--save", "3600 1"))
    shutil.rmtree(folder)  # the snapshot has nowhere to go
    client = stack.enter_context(redis.Redis.from_url(server.url))
    client.bgsave()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] != "ok":
            return server.url
        time.sleep(0.05)
    pytest.fail("the snapshot did not fail")


REFUSALS: dict[str, tuple[Callable[[ExitStack, Path], str], str]] = {
    "OOM": (_oom, "maxmemory-policy"),
    "READONLY": (_readonly, "read-only replica"),
    "NOREPLICAS": (_noreplicas, "min-replicas-to-write"),
    "MISCONF": (_misconf, "stop-writes-on-bgsave-error"),
}


@pytest.fixture(params=sorted(REFUSALS))
def refusing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """``(error code, remedy fragment, URL)`` of a live Redis that refuses writes that way."""
    if redis_server_binary() is None:
        message = "redis-server is not on PATH"
        if REQUIRE_REDIS:
            pytest.fail(f"{message}, and RAGPRESS_REQUIRE_REDIS is set")
        pytest.skip(message)
    code: str = request.param
    start, remedy = REFUSALS[code]
    with ExitStack() as stack:
        yield code, remedy, start(stack, tmp_path / code.lower())


async def test_a_refused_write_is_unavailability_with_its_cause(refusing) -> None:
    code, remedy, url = refusing
    store = RedisCache.from_url(url, retries=0)
    try:
        for write in (store.set("k", b"v"), store.set_many({"a": b"1", "b": b"2"})):
            with pytest.raises(CacheUnavailableError) as caught:
                await write
            assert "Redis refused writing" in str(caught.value) and code in str(caught.value)
            assert remedy in str(caught.value)
            assert "SET ragpress:" not in str(caught.value)  # no values in the message
        assert await store.get_many(["k"]) == [None]  # reads still work
    finally:
        await store.aclose()


async def test_requests_succeed_against_a_redis_that_refuses_writes(refusing, caplog) -> None:
    code, _, url = refusing
    cache = FailOpenCache(RedisCache.from_url(url, retries=0), retry_after_seconds=60)
    pipeline = Pipeline(
        [Stage(SentenceSelectionCompressor(HashingEmbedder()))],
        cache=cache,
        defaults=CompressionOptions(target_ratio=2),
        token_counter=get_token_counter(),
    )
    assert cache.available and cache.last_error is None
    with caplog.at_level(logging.WARNING, logger="ragpress.cache"):
        results = [await pipeline.acompress(q, DOCS) for q in ("Beta", "Blue", "Gamma")]
    assert all(len(r.passages) == 2 and r.cache_hits == 0 for r in results)
    assert cache.counters.errors == 1  # then bypassed, not retried per request
    assert not cache.available  # what a readiness probe reads
    assert cache.last_error is not None and code in cache.last_error
    assert sum("unavailable" in r.message for r in caplog.records) == 1  # logged once
    await pipeline.aclose()


async def test_a_successful_read_does_not_clear_a_write_refusal(refusing) -> None:
    code, _, url = refusing
    now = [0.0]
    cache = FailOpenCache(
        RedisCache.from_url(url, retries=0), retry_after_seconds=1, clock=lambda: now[0]
    )
    await cache.set_many({"k": b"v"})
    assert not cache.available and cache.last_error is not None
    now[0] = 2.0  # time to try again: reads work, writes still do not
    assert await cache.get_many(["k"]) == [None]
    assert cache.last_error is not None and code in cache.last_error
    await cache.aclose()
