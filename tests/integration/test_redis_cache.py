"""RedisCache against the real server: namespacing, TTLs, several event loops, outages."""

from __future__ import annotations

import threading

import anyio
import pytest

from ragpress.cache.redis import RedisCache
from ragpress.exceptions import CacheUnavailableError

pytestmark = pytest.mark.redis


async def test_keys_live_under_the_namespace_and_clear_spares_others(redis_url: str) -> None:
    ours = RedisCache.from_url(redis_url, namespace="test-ours")
    theirs = RedisCache.from_url(redis_url, namespace="test-theirs")
    try:
        await ours.set("k", b"1")
        await theirs.set("k", b"2")
        await ours.clear()
        assert await ours.get("k") is None
        assert await theirs.get("k") == b"2"
    finally:
        await theirs.clear()
        await ours.aclose()
        await theirs.aclose()


async def test_ttl_is_set_with_jitter_below_it(redis_url: str) -> None:
    from redis.asyncio import Redis

    cache = RedisCache.from_url(redis_url, namespace="test-ttl", default_ttl_seconds=1000)
    raw = Redis.from_url(redis_url)
    try:
        await cache.set("k", b"v")
        ttl = await raw.ttl("test-ttl:k")
        assert 890 <= ttl <= 1000
    finally:
        await cache.clear()
        await cache.aclose()
        await raw.aclose()


def test_one_store_serves_several_event_loops(redis_url: str) -> None:
    cache = RedisCache.from_url(redis_url, namespace="test-loops")
    errors: list[BaseException] = []

    async def use(i: int) -> None:
        await cache.set(f"k{i}", str(i).encode())
        assert await cache.get(f"k{i}") == str(i).encode()
        await cache.aclose()  # closes this loop's connections; the store reconnects if reused

    def in_thread(i: int) -> None:
        try:
            anyio.run(use, i)
        except BaseException as exc:
            errors.append(exc)

    anyio.run(use, 0)
    threads = [threading.Thread(target=in_thread, args=(i,)) for i in range(1, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    anyio.run(use, 4)

    async def clear() -> None:
        assert await cache.get_many([f"k{i}" for i in range(5)]) == [b"0", b"1", b"2", b"3", b"4"]
        await cache.clear()
        await cache.aclose()

    anyio.run(clear)
    assert errors == []


async def test_unreachable_server_raises_cache_unavailable() -> None:
    cache = RedisCache.from_url("redis://127.0.0.1:1/0", retries=0, socket_timeout_seconds=0.2)
    with pytest.raises(CacheUnavailableError):
        await cache.get("k")
    with pytest.raises(CacheUnavailableError):
        await cache.set_many({"a": b"1"})
    with pytest.raises(CacheUnavailableError):
        await cache.ping()
    await cache.aclose()
