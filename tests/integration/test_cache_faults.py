"""Fault-injection matrix for the Redis cache (issue 21).

Documented outcome for every fault: the request succeeds with exactly the output a run without
a cache gives; the cache counts a miss, never a hit; the fault is counted (``errors`` for a
backend that cannot serve, ``rejected`` for an entry that cannot be used) and logged.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

from ragpress.cache.envelope import open_sealed, seal
from ragpress.cache.keys import make_key
from ragpress.cache.redis import RedisCache
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.types import CompressionOptions, Passage
from tests.conftest import REQUIRE_REDIS, TcpRelay
from tests.support.fakes import HashingEmbedder
from tests.support.redis_server import OOM_ARGS, RedisServer, redis_server_binary

pytestmark = pytest.mark.redis

QUERY = "How tall is the tower?"
DOCS = [
    Passage(
        "The Eiffel Tower is in Paris. It opened in 1889. It is 330 metres tall.", title="Tower"
    ),
    Passage(
        "Bread needs flour and water. Yeast makes the dough rise over several hours. Ovens bake "
        "it. A baguette is long. Rye bread is dark and dense, and keeps for a week.",
        title="Bread",
    ),
]
OPTIONS = CompressionOptions(target_ratio=2)


@dataclass
class Rig:
    """A pipeline on a Redis, and what a fault needs to reach into it."""

    pipeline: Pipeline
    cache: FailOpenCache
    compressor: SentenceSelectionCompressor
    namespace: str
    url: str

    def entry_keys(self) -> list[str]:
        c = self.compressor
        assert c.analysis_artefact is not None
        return [
            make_key(c.analysis_artefact, c.name, c.fingerprint(), c.analysis_key(p)) for p in DOCS
        ]

    def raw(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def rig(url: str) -> Rig:
    namespace = f"test-faults-{uuid.uuid4().hex[:8]}"
    store = RedisCache.from_url(url, namespace=namespace, retries=0, socket_timeout_seconds=0.3)
    cache = FailOpenCache(store, retry_after_seconds=60)
    compressor = SentenceSelectionCompressor(HashingEmbedder())
    pipeline = Pipeline([Stage(compressor)], cache=cache, defaults=OPTIONS)
    return Rig(pipeline, cache, compressor, namespace, url)


def reference() -> list[str]:
    """What compression gives with no cache at all."""
    pipeline = Pipeline([Stage(SentenceSelectionCompressor(HashingEmbedder()))], defaults=OPTIONS)
    return [p.text for p in pipeline.compress(QUERY, DOCS).passages]


def blackhole() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    listener.close()
    for sock in held:
        sock.close()


# -- the faults: each gets a warmed rig (or makes its own) and breaks it ------------------------


async def refuses_writes(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    server = RedisServer(tmp / "oom", *OOM_ARGS)
    _cleanups.append(server.stop)
    return rig_on(server.url), "errors"


async def stops_answering(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    hole = blackhole()
    url = next(hole)
    _cleanups.append(lambda: next(hole, None))
    return rig_on(url), "errors"


async def connection_drops(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    target = urlparse(_shared_url[0])
    relay = TcpRelay((target.hostname or "127.0.0.1", target.port or 6379))
    relay.start()
    _cleanups.append(relay.stop)
    r = rig_on(f"redis://127.0.0.1:{relay.port}{target.path or '/0'}")
    await r.pipeline.acompress(QUERY, DOCS)  # warm
    relay.stop()
    return r, "errors"


async def garbage_bytes(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    r = rig_on(_shared_url[0])
    await r.pipeline.acompress(QUERY, DOCS)
    with r.raw() as client:
        for key in r.entry_keys():
            client.set(f"{r.namespace}:{key}", b"\x00garbage\xff" * 7)
    return r, "rejected"


async def truncated_entries(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    r = rig_on(_shared_url[0])
    await r.pipeline.acompress(QUERY, DOCS)
    with r.raw() as client:
        for key in r.entry_keys():
            value = client.get(f"{r.namespace}:{key}")
            assert isinstance(value, bytes)
            client.set(f"{r.namespace}:{key}", value[: len(value) // 2])
    return r, "rejected"


async def swapped_entries(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    r = rig_on(_shared_url[0])
    await r.pipeline.acompress(QUERY, DOCS)
    names = [f"{r.namespace}:{k}" for k in r.entry_keys()]
    with r.raw() as client:
        first, second = client.get(names[0]), client.get(names[1])
        client.set(names[0], second)
        client.set(names[1], first)
    return r, "rejected"


async def wrong_but_valid_entries(rig_on: Callable[[str], Rig], tmp: Path) -> tuple[Rig, str]:
    """Someone with write access re-seals each passage's analysis under the other's key."""
    r = rig_on(_shared_url[0])
    await r.pipeline.acompress(QUERY, DOCS)
    keys = r.entry_keys()
    with r.raw() as client:
        payloads = [open_sealed(k, client.get(f"{r.namespace}:{k}")) for k in keys]
        client.set(f"{r.namespace}:{keys[0]}", seal(keys[0], payloads[1]))
        client.set(f"{r.namespace}:{keys[1]}", seal(keys[1], payloads[0]))
    return r, "rejected"


FAULTS: dict[str, Callable[[Callable[[str], Rig], Path], Awaitable[tuple[Rig, str]]]] = {
    "refuses writes": refuses_writes,
    "stops answering": stops_answering,
    "connection drops": connection_drops,
    "garbage bytes": garbage_bytes,
    "truncated entries": truncated_entries,
    "swapped entries": swapped_entries,
    "wrong but valid entries": wrong_but_valid_entries,
}
_cleanups: list[Callable[[], Any]] = []
_shared_url: list[str] = []


@pytest.fixture
def faulty(request: pytest.FixtureRequest, redis_url: str) -> Iterator[None]:
    if request.node.callspec.params["fault"] == "refuses writes" and redis_server_binary() is None:
        if REQUIRE_REDIS:
            pytest.fail("redis-server is not on PATH, and RAGPRESS_REQUIRE_REDIS is set")
        pytest.skip("redis-server is not on PATH")
    _shared_url[:] = [redis_url]
    yield
    while _cleanups:
        _cleanups.pop()()


@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_every_fault_is_a_miss_and_never_a_failed_request(
    fault: str, faulty: None, tmp_path: Path, caplog
) -> None:
    rigs: list[Rig] = []

    def rig_on(url: str) -> Rig:
        rigs.append(rig(url))
        return rigs[-1]

    r, counter = await FAULTS[fault](rig_on, tmp_path)
    before = r.cache.counters.hits
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="ragpress.cache"):
        result = await r.pipeline.acompress(QUERY, DOCS)
    assert [p.text for p in result.passages] == reference()  # exactly the uncached output
    assert result.cache_hits == 0 and result.cache_misses == len(DOCS)
    assert r.cache.counters.hits == before  # nothing served from the cache
    if counter == "errors":
        assert r.cache.counters.errors >= 1 and not r.cache.available
        assert time.perf_counter() - started < 3  # a short timeout, not a hang
        assert any("unavailable" in m.message for m in caplog.records)
    else:
        assert r.cache.counters.rejected == len(DOCS)
        assert any("rejected" in m.message for m in caplog.records)
        again = await r.pipeline.acompress(QUERY, DOCS)  # recomputed entries were rewritten
        assert again.cache_hits == len(DOCS)
    for each in rigs:
        if counter == "rejected":
            await each.cache.store.clear()
        await each.pipeline.aclose()
