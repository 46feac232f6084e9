"""Every cache backend behaves the same (memory in-process, Redis for real)."""

from __future__ import annotations

import os

import pytest

from ragpress.cache.base import CacheStore


@pytest.fixture(params=["memory_cache", pytest.param("redis_cache", marks=pytest.mark.redis)])
def cache(request: pytest.FixtureRequest) -> CacheStore:
    store: CacheStore = request.getfixturevalue(request.param)
    return store


async def test_missing_key_is_none(cache: CacheStore) -> None:
    assert await cache.get("absent") is None
    assert await cache.get_many(["a", "b"]) == [None, None]


async def test_binary_values_round_trip_exactly(cache: CacheStore) -> None:
    value = bytes(range(256)) + os.urandom(1000) + b"\x00\xff"
    await cache.set("k", value)
    assert await cache.get("k") == value


async def test_get_many_keeps_order_and_reports_misses(cache: CacheStore) -> None:
    await cache.set_many({"a": b"1", "c": b"3"})
    assert await cache.get_many(["c", "b", "a"]) == [b"3", None, b"1"]


async def test_set_overwrites(cache: CacheStore) -> None:
    await cache.set("k", b"old")
    await cache.set("k", b"new")
    assert await cache.get("k") == b"new"


async def test_delete_and_clear(cache: CacheStore) -> None:
    await cache.set_many({"a": b"1", "b": b"2"})
    assert await cache.delete("a") is True
    assert await cache.delete("a") is False
    await cache.clear()
    assert await cache.get_many(["a", "b"]) == [None, None]


async def test_empty_value_is_a_hit(cache: CacheStore) -> None:
    await cache.set("empty", b"")
    assert await cache.get("empty") == b""


async def test_large_batches(cache: CacheStore) -> None:
    items = {f"key-{i}": str(i).encode() for i in range(1200)}
    await cache.set_many(items)
    values = await cache.get_many(list(items))
    assert values == list(items.values())


async def test_ping_succeeds_when_reachable(cache: CacheStore) -> None:
    await cache.ping()
