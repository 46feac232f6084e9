"""The pipeline's cache policy: an outage degrades to "no cache", never to a failed request.

:class:`FailOpenCache` wraps any :class:`~ragpress.cache.base.CacheStore`. When the store raises
:class:`~ragpress.exceptions.CacheUnavailableError` it logs once, counts the failure, and serves
without the cache for ``retry_after_seconds`` (so a dead Redis costs one timeout, not one per
request). Then it tries again; the first success logs the recovery. With ``fail_open=False``
the error propagates instead.

Values are sealed on the way in and checked on the way out (:mod:`ragpress.cache.envelope`):
a value that is corrupted, was stored under another key or, with a ``signing_key``, was not
signed by this deployment is a miss (logged, counted in ``rejected``), never a hit. Callers that
decode values report what they cannot use with :meth:`FailOpenCache.reject`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.cache.envelope import InvalidEntryError, open_sealed, seal
from ragpress.exceptions import CacheUnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ragpress.cache.base import CacheStore

__all__ = ["CacheCounters", "FailOpenCache"]

logger = logging.getLogger("ragpress.cache")

_REJECT_LOG_SECONDS = 10.0


@dataclass
class CacheCounters:
    """Running totals, read by metrics and reports."""

    hits: int = 0
    misses: int = 0
    errors: int = 0
    """Operations that failed because the backend was unreachable."""
    bypassed: int = 0
    """Operations skipped while the backend was considered down."""
    rejected: int = 0
    """Entries read but not used: unreadable, not sealed for their key, or failing the
    compressor's check (each also counts as a miss, not a hit)."""


class FailOpenCache:
    """Cache access with the fail-open policy and counters.

    Args:
        store: The backend.
        fail_open: Treat an unreachable backend as a miss (``True``) or raise.
        retry_after_seconds: How long to bypass the backend after a failure.
        ttl_seconds: Lifetime of entries written through this wrapper.
        signing_key: Secret that signs every entry (HMAC-SHA256), for a Redis shared with
            writers you do not trust; every process of the deployment needs the same one.
            ``None``: entries carry an unsigned checksum bound to their key.
        clock: Monotonic time source; tests inject one.
    """

    def __init__(
        self,
        store: CacheStore,
        *,
        fail_open: bool = True,
        retry_after_seconds: float = 5.0,
        ttl_seconds: float | None = None,
        signing_key: bytes | str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.fail_open = fail_open
        self.retry_after_seconds = retry_after_seconds
        self.ttl_seconds = ttl_seconds
        self.counters = CacheCounters()
        self._secret = signing_key.encode() if isinstance(signing_key, str) else signing_key
        self._clock = clock
        self._last_reject_log = -math.inf
        self._down_until: float | None = None
        self._last_error: str | None = None
        self._write_failed = False
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Whether the backend is currently used (not bypassed after a failure)."""
        return self._down_until is None or self._clock() >= self._down_until

    @property
    def last_error(self) -> str | None:
        """Why the backend was last found unusable, or ``None`` while it works.

        Set by the first failure (unreachable, or an error answer such as a refused write) and
        cleared by the next success of the same kind: a backend that refuses writes stays in
        error until a write succeeds, even though reads work. Readiness checks report it.
        """
        return self._last_error

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
            self._failed(exc, writing=False)
            self._count(misses=len(keys))
            return [None] * len(keys)
        self._recovered(writing=False)
        hits = sum(v is not None for v in values)
        self._count(hits=hits, misses=len(keys) - hits)
        out: list[bytes | None] = []
        for key, value in zip(keys, values, strict=True):
            if value is not None:
                try:
                    value = open_sealed(key, value, self._secret)
                except InvalidEntryError as exc:
                    self.reject(key, str(exc))
                    value = None
            out.append(value)
        return out

    async def set_many(self, items: Mapping[str, bytes]) -> None:
        """Store ``items``; silently skipped while the backend is down."""
        if not items:
            return
        if not self.available:
            self._count(bypassed=1)
            return
        sealed = {key: seal(key, value, self._secret) for key, value in items.items()}
        try:
            await self.store.set_many(sealed, ttl_seconds=self.ttl_seconds)
        except CacheUnavailableError as exc:
            self._failed(exc, writing=True)
            return
        self._recovered(writing=True)

    def _failed(self, exc: CacheUnavailableError, *, writing: bool) -> None:
        if not self.fail_open:
            raise exc
        with self._lock:
            first = self._down_until is None
            self._down_until = self._clock() + self.retry_after_seconds
            self._last_error = str(exc)
            self._write_failed = writing
            self.counters.errors += 1
        if first:
            logger.warning(
                "cache backend %r unavailable, serving without it (retrying every %.0fs): %s",
                self.store.name,
                self.retry_after_seconds,
                exc,
            )

    def _recovered(self, *, writing: bool) -> None:
        # A Redis that refuses writes (OOM, READONLY) still reads: only a write proves it well.
        if self._down_until is None or (self._write_failed and not writing):
            return
        with self._lock:
            self._down_until = None
            self._last_error = None
        logger.warning("cache backend %r is reachable again", self.store.name)

    def reject(self, key: str, reason: str) -> None:
        """Turn the hit on ``key`` into a miss: its value cannot be used (the ``reason``).

        Counted in ``rejected``; logged as a warning at most every 10 seconds (a poisoned or
        mismatched cache would otherwise flood the log), at debug level in between.
        """
        now = time.monotonic()
        with self._lock:
            self.counters.hits -= 1
            self.counters.misses += 1
            self.counters.rejected += 1
            rejected = self.counters.rejected
            loud = now - self._last_reject_log >= _REJECT_LOG_SECONDS
            if loud:
                self._last_reject_log = now
        logger.log(
            logging.WARNING if loud else logging.DEBUG,
            "cache entry %s rejected, recomputing it (%d rejected so far): %s",
            key,
            rejected,
            reason,
        )

    def _count(self, *, hits: int = 0, misses: int = 0, bypassed: int = 0) -> None:
        with self._lock:
            self.counters.hits += hits
            self.counters.misses += misses
            self.counters.bypassed += bypassed

    async def aclose(self) -> None:
        """Close the backend."""
        await self.store.aclose()
