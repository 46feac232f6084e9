"""The cache interface: an async key/bytes store with TTLs and batched access.

Values are opaque bytes. Serialising what is cached is the caller's job, so every backend stays
small and no backend ever unpickles anything.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["CacheStore", "NullCache"]


class CacheStore(ABC):
    """Async key/value store for compressed artefacts.

    Backends raise :class:`ragpress.exceptions.CacheUnavailableError` when they cannot be
    reached; deciding whether that fails a request is the caller's policy, not the store's.
    """

    name: str = "cache"
    """Short backend name for logs and metrics (``memory``, ``redis``, ``none``)."""

    @abstractmethod
    async def get(self, key: str) -> bytes | None:
        """Read one value.

        Args:
            key: The key, without the store's namespace.

        Returns:
            The stored bytes, or ``None`` when missing or expired.
        """

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read several values in one round trip where the backend can.

        Args:
            keys: Keys, without namespace.

        Returns:
            One entry per key, in order; ``None`` for misses.
        """
        return list(await asyncio.gather(*(self.get(k) for k in keys)))

    @abstractmethod
    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        """Store one value.

        Args:
            key: The key, without namespace.
            value: The bytes to store.
            ttl_seconds: Lifetime; ``None`` uses the store's default (which may be forever).
        """

    async def set_many(
        self, items: Mapping[str, bytes], *, ttl_seconds: float | None = None
    ) -> None:
        """Store several values in one round trip where the backend can.

        Args:
            items: Key to value.
            ttl_seconds: Lifetime for all of them; ``None`` uses the store's default.
        """
        await asyncio.gather(*(self.set(k, v, ttl_seconds=ttl_seconds) for k, v in items.items()))

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove one value.

        Returns:
            Whether the key existed.
        """

    @abstractmethod
    async def clear(self) -> None:
        """Remove every value in this store's namespace (never anything else)."""

    async def ping(self) -> None:  # noqa: B027 - optional; backends that can fail override it
        """Check the backend is reachable.

        Raises:
            CacheUnavailableError: It is not.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional; most backends hold nothing
        """Release connections. The store must not be used afterwards."""


class NullCache(CacheStore):
    """A store that keeps nothing: ``cache=none``."""

    name = "none"

    async def get(self, key: str) -> bytes | None:
        """Always a miss."""
        return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Always misses."""
        return [None] * len(keys)

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        """Discard the value."""

    async def set_many(
        self, items: Mapping[str, bytes], *, ttl_seconds: float | None = None
    ) -> None:
        """Discard the values."""

    async def delete(self, key: str) -> bool:
        """Nothing to delete."""
        return False

    async def clear(self) -> None:
        """Nothing to clear."""
