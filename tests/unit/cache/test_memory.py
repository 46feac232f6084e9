from __future__ import annotations

import pytest

from ragpress.cache.memory import MemoryCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_entries_expire_by_their_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock, default_ttl_seconds=100)
    await cache.set("short", b"x", ttl_seconds=10)
    await cache.set("default", b"y")
    clock.now = 11
    assert await cache.get("short") is None
    assert await cache.get("default") == b"y"
    clock.now = 101
    assert await cache.get("default") is None


async def test_bounded_by_bytes_evicting_least_recently_used() -> None:
    cache = MemoryCache(max_bytes=3 * (1000 + 96))
    for key in "abc":
        await cache.set(key, b"x" * 1000)
    assert await cache.get("a") is not None  # "a" is now the most recently used
    await cache.set("d", b"x" * 1000)
    assert await cache.get("b") is None
    assert {k for k in "acd" if await cache.get(k) is not None} == {"a", "c", "d"}
    assert cache.size_bytes <= 3 * (1000 + 96)


async def test_value_larger_than_the_cache_is_not_stored() -> None:
    cache = MemoryCache(max_bytes=100)
    await cache.set("big", b"x" * 1000)
    assert await cache.get("big") is None


async def test_values_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        await MemoryCache().set("k", "text")  # type: ignore[arg-type]
