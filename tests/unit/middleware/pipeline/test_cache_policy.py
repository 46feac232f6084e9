from __future__ import annotations

import logging

import pytest

from ragpress.cache.memory import MemoryCache
from ragpress.exceptions import CacheUnavailableError
from ragpress.middleware.pipeline.cache_policy import FailOpenCache


class FlakyStore(MemoryCache):
    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def get_many(self, keys):
        self.calls += 1
        if self.down:
            raise CacheUnavailableError("connection refused")
        return await super().get_many(keys)

    async def set_many(self, items, *, ttl_seconds=None):
        self.calls += 1
        if self.down:
            raise CacheUnavailableError("connection refused")
        await super().set_many(items, ttl_seconds=ttl_seconds)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_outage_degrades_to_misses_logs_once_and_recovers(caplog) -> None:
    store, clock = FlakyStore(), Clock()
    cache = FailOpenCache(store, retry_after_seconds=5, clock=clock)
    await cache.set_many({"k": b"v"})
    store.down = True
    with caplog.at_level(logging.WARNING, logger="ragpress.cache"):
        assert await cache.get_many(["k"]) == [None]
        calls = store.calls
        for _ in range(10):  # while down, the backend is not even asked
            assert await cache.get_many(["k"]) == [None]
            await cache.set_many({"x": b"1"})
        assert store.calls == calls
        store.down = False
        clock.now = 6
        assert await cache.get_many(["k"]) == [b"v"]
    warnings = [r.message for r in caplog.records]
    assert len([m for m in warnings if "unavailable" in m]) == 1
    assert any("reachable again" in m for m in warnings)
    assert cache.counters.errors == 1
    assert cache.counters.bypassed == 20


async def test_fail_closed_raises() -> None:
    store = FlakyStore()
    store.down = True
    with pytest.raises(CacheUnavailableError):
        await FailOpenCache(store, fail_open=False).get_many(["k"])
