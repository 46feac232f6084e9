"""The pipeline's cache policy: an outage degrades to "no cache", never to a failed request.

:class:`FailOpenCache` wraps any :class:`~ragpress.cache.base.CacheStore`. When the store raises
:class:`~ragpress.exceptions.CacheUnavailableError` it logs once, counts the failure, and serves
without the cache for ``retry_after_seconds`` (so a dead Redis costs one timeout, not one per
request). Then it tries again; the first success logs the recovery. With ``fail_open=False``
the error propagates instead.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import CacheUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ragpress.cache.base import CacheStore

__all__ = ["CacheCounters", "FailOpenCache"]

logger = logging.getLogger("ragpress.cache")


@dataclass
class CacheCounters:
    """Running totals, read by metrics and reports."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    """Operations that failed because the backend was unreachable."""
    bypassed: int = 0
    """Operations skipped while the backend was considered down."""


class FailOpenCache:
    """Cache access with the fail-open policy and counters.

    Args:
        store: The backend.
        fail_open: Treat an unreachable backend as a miss (``True``) or raise.
        retry_after_seconds: How long to bypass the backend after a failure.
        ttl_seconds: Lifetime of entries written through this wrapper.
        clock: Monotonic time source; tests inject one.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        fail_open: bool = True,
        retry_after_seconds: float = 5.0,
        ttl_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.fail_open = fail_open
        self.retry_after_seconds = retry_after_seconds
        self.ttl_seconds = ttl_seconds
        self.counters = CacheCounters()
        self._clock = clock
        self._down_until: float | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the backend is currently used (not bypassed after a failure)."""
        return self._down_until is None or self._clock() >= self._down_until

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Values for ``keys``; all misses while the backend is down."""
        if not keys:
            return []
        if not self.available:
            self._count(bypassed=1, misses=len(keys))
            return [None] * len(keys)
        try:
            values = await self.store.get_many(keys)
        except CacheUnavailableError as exc:
            self._failed(exc)
            self._count(misses=len(keys))
            return [None] * len(keys)
        self._recovered()
        hits = sum(v is not None for v in values)
        self._count(hits=hits, misses=len(keys) - hits)
        return values

    async def set_many(self, items: Mapping[str, bytes]) -> None:
        """Store ``items``; silently skipped while the backend is down."""
        if not items:
            return
        if not self.available:
            self._count(bypassed=1)
            return
        try:
            await self.store.set_many(items, ttl_seconds=self.ttl_seconds)
        except CacheUnavailableError as exc:
            self._failed(exc)
            return
        self._recovered()

    def _failed(self, exc: CacheUnavailableError) -> None:
        if not self.fail_open:
            raise exc
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.retry_after_seconds
            self.counters.errors += 1
        if first:
            logger.warning(
                "cache backend %r unavailable, serving without it (retrying every %.0fs): %s",
                self.store.name,
                self.retry_after_seconds,
                exc,
            )

    def _recovered(self) -> None:
        if self._down_until is None:
            return
        with self._lock:
            self._down_until = None
        logger.warning("cache backend %r is reachable again", self.store.name)

    def _count(self, *, hits: int = 0, misses: int = 0, bypassed: int = 0) -> None:
        with self._lock:
            self.counters.hits += hits
            self.counters.misses += misses
            self.counters.bypassed += bypassed

    async def aclose(self) -> None:
        """Close the backend."""
        await self.store.aclose()
