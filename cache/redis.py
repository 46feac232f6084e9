"""Redis-backed cache: redis-py asyncio, binary values, pipelined batches, namespaced keys."""

from __future__ import annotations

import asyncio
import random
import weakref
from typing import TYPE_CHECKING, Any

from ragpress.cache.base import CacheStore
from ragpress.exceptions import CacheUnavailableError, MissingDependencyError

try:
    import redis.exceptions
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("redis", extra="redis") from exc

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["DEFAULT_NAMESPACE", "RedisCache"]

DEFAULT_NAMESPACE = "ragpress"
DEFAULT_SOCKET_TIMEOUT_SECONDS = 0.5
_BATCH = 500
_TTL_JITTER = 0.1  # spread expiries by up to 10% so entries written together do not expire together
# Any failure of the server counts as unavailability, not only the network: a Redis that
# answers an error (OOM at maxmemory with noeviction, READONLY replica, NOREPLICAS, MISCONF
# after a failed snapshot, LOADING, ACL refusals) cannot serve as a cache either (issue 21).
_UNAVAILABLE = (redis.exceptions.RedisError, OSError)
# Error codes of a Redis that refuses writes (or everything) for now, and what fixes it.
_REFUSALS = {
    "OOM": "it is at maxmemory with maxmemory-policy noeviction; give it more memory or set "
    "maxmemory-policy allkeys-lru (cache entries may then be evicted)",
    "READONLY": "it is a read-only replica; point the cache URL at the primary",
    "NOREPLICAS": "fewer replicas than its min-replicas-to-write are connected",
    "MISCONF": "its last RDB snapshot failed and stop-writes-on-bgsave-error is set; fix its "
    "disk or persistence settings",
    "LOADING": "it is loading its dataset into memory",
    "NOPERM": "its ACL forbids this user a command or the keys; grant the namespace's keys "
    "and GET, MGET, SET, UNLINK and SCAN",
    "NOAUTH": "it needs a password; put it in the cache URL (redis://:PASSWORD@host:port/db)",
    "WRONGPASS": "the user or password in the cache URL is wrong",
}


class RedisCache(CacheStore):
    """Store values in Redis under ``{namespace}:{key}``.

    Every key lives under the namespace, and :meth:`clear` removes only that namespace (by
    ``SCAN``/``UNLINK``, never ``FLUSHDB``). Network failures raise
    :class:`CacheUnavailableError`; the pipeline decides whether that fails a request.

    A ``redis.asyncio`` connection belongs to the event loop that opened it. Built with
    :meth:`from_url`, the store opens one client per running loop, so it can be shared by the
    proxy's loop, a sync wrapper's loop and batch workers.

    Args:
        client: A ready client (``decode_responses`` must be false); used on every loop.
        namespace: Key prefix for this deployment.
        default_ttl_seconds: Lifetime of entries set without a TTL; ``None`` keeps them.
        owns_client: Close the client in :meth:`aclose`.
    """

    name = "redis"

    def __init__(
        self,
        client: Redis | None = None,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        default_ttl_seconds: float | None = None,
        owns_client: bool = False,
        _url: str | None = None,
        _client_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if client is None and _url is None:
            raise ValueError("pass a redis.asyncio client, or use RedisCache.from_url(url)")
        self._client = client
        self._url = _url
        self._client_kwargs = dict(_client_kwargs or {})
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = (
            weakref.WeakKeyDictionary()
        )
        self._namespace = namespace
        self._default_ttl = default_ttl_seconds
        self._owns_client = owns_client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        default_ttl_seconds: float | None = None,
        retries: int = 1,
        socket_timeout_seconds: float = DEFAULT_SOCKET_TIMEOUT_SECONDS,
    ) -> RedisCache:
        """Connect lazily to ``url`` (``redis://``, ``rediss://`` or ``unix://``).

        Args:
            url: Redis URL, e.g. ``redis://127.0.0.1:6379/0``.
            namespace: Key prefix for this deployment.
            default_ttl_seconds: Lifetime of entries set without a TTL.
            retries: Retries on connection errors, with jittered exponential backoff.
            socket_timeout_seconds: Connect and read timeout; keep it short, a slow cache is
                worse than no cache.
        """
        kwargs = {
            "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.2), retries),
            "socket_timeout": socket_timeout_seconds,
            "socket_connect_timeout": socket_timeout_seconds,
            "decode_responses": False,
            "health_check_interval": 30,
        }
        return cls(
            namespace=namespace,
            default_ttl_seconds=default_ttl_seconds,
            owns_client=True,
            _url=url,
            _client_kwargs=kwargs,
        )

    @property
    def namespace(self) -> str:
        """The key prefix."""
        return self._namespace

    def _redis(self) -> Redis:
        if self._client is not None:
            return self._client
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None:
            assert self._url is not None
            client = Redis.from_url(self._url, **self._client_kwargs)
            self._per_loop[loop] = client
        return client

    def _k(self, key: str) -> str:
        return f"{self._namespace}:{key}"

    def _ttl(self, ttl_seconds: float | None) -> int | None:
        ttl = self._default_ttl if ttl_seconds is None else ttl_seconds
        if ttl is None:
            return None
        return max(1, round(ttl * (1 - random.random() * _TTL_JITTER)))

    @staticmethod
    def _unavailable(exc: BaseException, doing: str) -> CacheUnavailableError:
        """The error for a failed operation: what Redis said, and the fix when it is known."""
        if not isinstance(
            exc, redis.exceptions.ResponseError | redis.exceptions.AuthenticationError
        ):
            return CacheUnavailableError(f"Redis unreachable while {doing}: {exc}")
        # redis-py strips the code of the errors it maps to a class (and keeps it in
        # status_code); the others keep it as their first word.
        said = str(exc)
        code = getattr(exc, "status_code", None) or (said.split(maxsplit=1) or [""])[0]
        reason = _REFUSALS.get(code)
        if reason is not None:
            return CacheUnavailableError(
                f"Redis refused {doing} ({code} {said.removeprefix(code).strip()}): {reason}; "
                "serving without the cache until it accepts again"
            )
        return CacheUnavailableError(
            f"Redis answered an error while {doing} ({type(exc).__name__}: {said}); serving "
            "without the cache until it accepts again; check the server's log"
        )

    async def ping(self) -> None:
        """Raise :class:`CacheUnavailableError` unless Redis answers."""
        try:
            await self._redis().ping()
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, "PING") from exc

    async def get(self, key: str) -> bytes | None:
        """Read one value."""
        try:
            value = await self._redis().get(self._k(key))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, f"reading {key!r}") from exc
        return None if value is None else _as_bytes(value)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """Read values with ``MGET``, in batches of 500 keys."""
        out: list[bytes | None] = []
        try:
            for i in range(0, len(keys), _BATCH):
                chunk = [self._k(k) for k in keys[i : i + _BATCH]]
                values = await self._redis().mget(chunk)
                out.extend(None if v is None else _as_bytes(v) for v in values)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, f"reading {len(keys)} keys") from exc
        return out

    async def set(self, key: str, value: bytes, *, ttl_seconds: float | None = None) -> None:
        """Store one value with ``SET ... EX``."""
        try:
            await self._redis().set(self._k(key), value, ex=self._ttl(ttl_seconds))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, f"writing {key!r}") from exc

    async def set_many(
        self, items: Mapping[str, bytes], *, ttl_seconds: float | None = None
    ) -> None:
        """Store values with pipelined ``SET ... EX`` (no MULTI/EXEC), 500 per round trip."""
        pairs = list(items.items())
        try:
            for i in range(0, len(pairs), _BATCH):
                pipe = self._redis().pipeline(transaction=False)
                for key, value in pairs[i : i + _BATCH]:
                    pipe.set(self._k(key), value, ex=self._ttl(ttl_seconds))
                # Errors come back as results, as the server said them (raising would wrap the
                # first one in a message that quotes the command and its value).
                for result in await pipe.execute(raise_on_error=False):
                    if isinstance(result, BaseException):
                        raise result
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, f"writing {len(pairs)} keys") from exc

    async def delete(self, key: str) -> bool:
        """Remove one value with ``UNLINK``."""
        try:
            return bool(await self._redis().unlink(self._k(key)))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, f"deleting {key!r}") from exc

    async def clear(self) -> None:
        """Remove every key of this namespace, ``SCAN`` + ``UNLINK`` in batches."""
        client = self._redis()
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{self._namespace}:*", count=_BATCH):
                batch.append(key)
                if len(batch) >= _BATCH:
                    await client.unlink(*batch)
                    batch.clear()
            if batch:
                await client.unlink(*batch)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc, "clearing the namespace") from exc

    async def aclose(self) -> None:
        """Close the connections this store opened on the running event loop.

        Connections belong to their loop, so a store used from several loops is closed on each
        of them. The store reconnects lazily if used again.
        """
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        client = self._per_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def _as_bytes(value: bytes | str) -> bytes:
    # decode_responses=False makes redis-py return bytes; the str case only satisfies typing.
    return value if isinstance(value, bytes) else value.encode()
