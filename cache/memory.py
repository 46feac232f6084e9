"""In-process cache bounded by bytes, with per-entry TTLs: the embedded default."""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, NamedTuple

from cachetools import TLRUCache

from ragpress.cache.base import CacheStore

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = ["DEFAULT_MAX_BYTES", "MemoryCache"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_ENTRY_OVERHEAD_BYTES = 96  # rough per-entry bookkeeping, so tiny values still count


class _Entry(NamedTuple):
    value: bytes
    ttl_seconds: float | None


class MemoryCache(CacheStore):
    """Least-recently-used in-process store, bounded by total bytes, entries expire by TTL.

    Thread-safe, so one instance can serve the event loop and worker threads alike.

    Args:
        max_bytes: Upper bound on stored bytes (values plus a small per-entry overhead).
        default_ttl_seconds: Lifetime of entries set without a TTL; ``None`` keeps them until
            evicted.
        clock: Monotonic time source in seconds; tests inject a fake one.
    """

    name = "memory"

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        default_ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes={max_bytes} must be positive")
        self._default_ttl = default_ttl_seconds
        self._lock = threading.Lock()
        self._data: TLRUCache[str, _Entry] = TLRUCache(
            maxsize=max_bytes,
            ttu=_expires_at,
            timer=clock,
            getsizeof=lambda entry: len(entry.value) + _ENTRY_OVERHEAD_BYTES,
        )

    @property
    def size_bytes(self) -> int:
        """Bytes currently held (values plus overhead)."""
        with self._lock:
            self._data.expire()
            return int(self._data.currsize)

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)

    async def get(self, key: str) -> bytes | None:
        """Read one value; ``None`` when missing or expired."""
        with self._lock:
            entry = self._data.get(key)
        return None if entry is None else entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read several values."""
        with self._lock:
            entries = [self._data.get(k) for k in keys]
        return [None if e is None else e.value for e in entries]

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        """Store one value; a value larger than the whole cache is not stored."""
        self._put(key, value, ttl_seconds)

    async def set_many(
        self, items: Mapping[str, bytes], *, ttl_seconds: float | None = None
    ) -> None:
        """Store several values."""
        for key, value in items.items():
            self._put(key, value, ttl_seconds)

    async def delete(self, key: str) -> bool:
        """Remove one value; whether it was there."""
        with self._lock:
            return self._data.pop(key, None) is not None

    async def clear(self) -> None:
        """Remove everything."""
        with self._lock:
            self._data.clear()

    def _put(self, key: str, value: bytes, ttl_seconds: float | None) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"cache values are bytes, not {type(value).__name__}")
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        entry = _Entry(bytes(value), ttl)
        if len(entry.value) + _ENTRY_OVERHEAD_BYTES > self._data.maxsize:
            return
        with self._lock:
            self._data[key] = entry


def _expires_at(_key: str, entry: _Entry, now: float) -> float:
    return math.inf if entry.ttl_seconds is None else now + entry.ttl_seconds
