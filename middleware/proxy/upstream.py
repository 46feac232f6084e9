"""The connection to the LLM APIs: pooled, with timeouts, retried on connect errors only.

A request is retried only when its connection could not be made, because only then is it
certain the upstream never saw it: a POST that reached the upstream must not be sent twice (it
would be billed twice). Network errors become :class:`~ragpress.exceptions.UpstreamError`
(502) or :class:`~ragpress.exceptions.UpstreamTimeoutError` (504) here and nowhere else.

Two interchangeable backends sit behind :class:`UpstreamClient`:

* **aiohttp** (the default): measured at about a third of httpx's CPU time per proxied request
  on this workload (``bench/proxy.py``), which is what lets one process pass 1,000 req/s;
* **httpx**, used whenever an ``httpx`` transport is injected (``httpx.MockTransport`` in tests,
  or any custom transport), through ``create_app(upstream_transport=...)``.

Bodies are relayed as raw bytes, never decoded, so a gzip answer stays gzip.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import anyio

from ragpress.exceptions import (
    MissingDependencyError,
    RequestValidationError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ragpress.redaction import mask_url, mask_urls

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("httpx", extra="proxy") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    import aiohttp

    from ragpress.config import UpstreamSettings
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["RetryPolicy", "UpstreamClient", "UpstreamResponse", "redact_url", "upstream_path"]

logger = logging.getLogger("ragpress.upstream")


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of requests whose connection failed: ``backoff_seconds * 2**attempt`` apart.

    Args:
        retries: Retries after the first attempt.
        backoff_seconds: Delay before the first retry.
        sleep: Awaitable sleep; tests inject one that records instead of sleeping.
    """

    retries: int = 2
    backoff_seconds: float = 0.05
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def delays(self) -> list[float]:
        """The waits before each retry."""
        return [self.backoff_seconds * 2**attempt for attempt in range(self.retries)]


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each phase of an upstream request."""

    connect: float = 5.0
    read: float = 600.0
    """Longest gap between two chunks of the answer (and for sending the request)."""


@dataclass
class UpstreamResponse:
    """An upstream answer whose body has not been read yet."""

    status_code: int
    headers: list[tuple[bytes, bytes]]
    """Raw header pairs, names in the upstream's case."""
    _chunks: AsyncIterator[bytes] = field(repr=False)
    _close: Callable[[], Awaitable[None]] = field(repr=False)

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower().encode("latin-1")
        for key, value in self.headers:
            if key.lower() == wanted:
                return value.decode("latin-1")
        return None

    async def iter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, bytes untouched; closes the response at the end.

        Raises:
            UpstreamError: The upstream broke off mid-body.
            UpstreamTimeoutError: The next bytes did not come in time.
        """
        try:
            async for chunk in self._chunks:
                yield chunk
        finally:
            await self._close()

    async def read_raw(self) -> bytes:
        """The whole body, bytes untouched."""
        return b"".join([chunk async for chunk in self.iter_raw()])


class _Backend(Protocol):
    async def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes,
        read_timeout: float,
    ) -> UpstreamResponse: ...

    async def aclose(self) -> None: ...


def redact_url(url: str) -> str:
    """``url`` with its password and secret parameters masked.

    The same as :func:`ragpress.redaction.mask_url`. Only logs carry upstream URLs, masked;
    error bodies sent to clients carry none.
    """
    return mask_url(url)


# RFC 3986 pchar minus the percent sign: what a path segment may hold unescaped.
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"
_ENCODED_SEPARATORS = (b"%2f", b"%5c")


def upstream_path(path: str, *, raw_path: bytes | None = None) -> str:
    """The percent-encoded upstream path for a client path, built segment by segment.

    ``path`` is what the server decoded once (the ASGI ``path``), relative to the version
    prefix. Each segment is checked and then escaped on its own, so nothing a client writes can
    climb out of the version prefix or turn into a query or fragment: ``..`` and ``.``
    segments, separators that arrived encoded (``%2F``, ``%5C``, visible in ``raw_path``),
    backslashes, control characters and percent signs left after the one decoding (double
    encoding such as ``%252e``) are refused; ``?`` and ``#`` stay in the path as ``%3F`` and
    ``%23``. The result is joined to the base URL as is, never normalised.

    Args:
        path: The decoded path after the version prefix, e.g. ``files/file-abc/content``.
        raw_path: The request's raw path as the client sent it (ASGI ``raw_path``), if known.

    Raises:
        RequestValidationError: A segment that could reach outside the prefix (HTTP 400).

    Example:
        >>> upstream_path("files/file-abc/content")
        '/files/file-abc/content'
        >>> upstream_path("files?purpose=x")
        '/files%3Fpurpose=x'
    """
    if raw_path is not None and any(sep in raw_path.lower() for sep in _ENCODED_SEPARATORS):
        raise _bad_path("an encoded / or \\ (%2F, %5C)")
    segments = path.removeprefix("/").split("/")
    for position, segment in enumerate(segments):
        if segment in (".", ".."):
            raise _bad_path(f"a {segment!r} segment")
        if segment == "" and position < len(segments) - 1:
            raise _bad_path("an empty segment (//)")
        if "\\" in segment or "%" in segment:
            raise _bad_path("a backslash or a percent sign left after decoding (%25, %5C)")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in segment):
            raise _bad_path("a control character")
    return "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)


def _bad_path(what: str) -> RequestValidationError:
    return RequestValidationError(
        f"the path holds {what}; ragpress forwards only plain paths below /v1, "
        "so a path can never reach outside the upstream's API",
        param="path",
    )


class _ConnectFailedError(Exception):
    """Internal: the connection was never made, so retrying is safe."""

    def __init__(self, error: UpstreamError) -> None:
        self.error = error


class UpstreamClient:
    """Sends requests to the OpenAI- and Anthropic-compatible APIs behind the proxy.

    Args:
        base_url: OpenAI-compatible base URL, ending in the version (``.../v1``).
        anthropic_base_url: Anthropic-compatible base URL (``.../v1``).
        timeouts: Connect and read timeouts.
        max_connections: Pool size.
        keepalive_seconds: How long idle connections stay open.
        retry: What to do when a connection cannot be made.
        transport: An ``httpx`` transport to send through instead of the network (tests).

    Example:
        >>> upstream = UpstreamClient.from_settings(settings.upstream)        # doctest: +SKIP
        >>> answer = await upstream.send("POST", "openai", "/chat/completions",
        ...                              headers=[], content=b"{}")          # doctest: +SKIP
        >>> body = await answer.read_raw()                                 # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        base_url: str,
        anthropic_base_url: str,
        timeouts: Timeouts | None = None,
        max_connections: int = 1000,
        keepalive_seconds: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._bases = {"openai": base_url.rstrip("/"), "anthropic": anthropic_base_url.rstrip("/")}
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self._backend: _Backend
        if transport is not None:
            self._backend = _HttpxBackend(
                transport, self.timeouts, max_connections, keepalive_seconds
            )
        else:
            self._backend = _AiohttpBackend(self.timeouts, max_connections, keepalive_seconds)

    @classmethod
    def from_settings(
        cls,
        settings: UpstreamSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> UpstreamClient:
        """Build the client the settings describe (``transport`` replaces the network)."""
        return cls(
            base_url=settings.base_url,
            anthropic_base_url=settings.anthropic_base_url,
            timeouts=Timeouts(
                connect=settings.connect_timeout_seconds, read=settings.timeout_seconds
            ),
            max_connections=settings.max_connections,
            keepalive_seconds=settings.keepalive_seconds,
            retry=retry or RetryPolicy(retries=settings.connect_retries),
            transport=transport,
        )

    def url(self, flavor: Flavor, path: str, query: str = "") -> str:
        """The upstream URL for ``path`` (relative to the version prefix, e.g. ``/models``).

        ``path`` must already be percent-encoded (:func:`upstream_path` builds one from what a
        client sent); the URL is a plain join, never normalised, so ``..`` cannot climb out.
        """
        url = self._bases[flavor] + path
        return f"{url}?{query}" if query else url

    async def send(
        self,
        method: str,
        flavor: Flavor,
        path: str,
        *,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes = b"",
        query: str = "",
        read_timeout_seconds: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; the answer's body is read later with ``iter_raw``/``read_raw``.

        Args:
            method: HTTP method.
            flavor: Which base URL to use.
            path: Path after the version prefix.
            headers: Headers to send, as raw pairs.
            content: The body.
            query: The query string, without ``?``.
            read_timeout_seconds: Lowers the read timeout for this request.

        Raises:
            UpstreamError: The upstream could not be reached (after the connect retries) or
                broke the protocol.
            UpstreamTimeoutError: A connect or read timeout expired.
        """
        url = self.url(flavor, path, query)
        read = self.timeouts.read
        if read_timeout_seconds is not None:
            read = min(read, read_timeout_seconds)
        delays = self.retry.delays()
        for attempt in range(len(delays) + 1):
            try:
                return await self._backend.open(method, url, headers, content, read)
            except _ConnectFailedError as failed:
                if attempt == len(delays):
                    raise failed.error from failed.__cause__
                logger.info(
                    "upstream connect failed, retrying: %s",
                    failed.error,
                    extra={"event": "upstream_retry", "attempt": attempt + 1},
                )
                await self.retry.sleep(delays[attempt])
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._backend.aclose()


# Error messages go to clients, so they never name the upstream's address (it may be an internal
# host, and its URL may hold credentials); the log line written with each gives the masked URL
# and the full reason.


def _logged(error: UpstreamError, url: str, exc: BaseException) -> UpstreamError:
    logger.warning(
        "upstream request to %s failed: %s (%s: %s)",
        mask_url(url),
        error,
        type(exc).__name__,
        mask_urls(str(exc)),
        extra={"event": "upstream_error", "error": type(exc).__name__},
    )
    return error


def _timeout_error(phase: str, url: str, exc: BaseException) -> UpstreamTimeoutError:
    error = UpstreamTimeoutError(
        f"timed out {phase} the upstream API; raise "
        "RAGPRESS_UPSTREAM__TIMEOUT_SECONDS (or x-ragpress-timeout) or check the upstream"
    )
    _logged(error, url, exc)
    return error


def _failed(url: str, exc: BaseException) -> UpstreamError:
    return _logged(UpstreamError(f"the upstream API failed: {type(exc).__name__}"), url, exc)


def _cannot_connect(url: str, exc: BaseException, errno: int | None) -> UpstreamError:
    reason = os.strerror(errno) if errno else type(exc).__name__
    return _logged(UpstreamError(f"cannot connect to the upstream API: {reason}"), url, exc)


class _AiohttpBackend:
    def __init__(self, timeouts: Timeouts, max_connections: int, keepalive: float) -> None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise MissingDependencyError("aiohttp", extra="proxy") from exc
        from yarl import URL  # aiohttp's own URL type

        self._aiohttp = aiohttp
        self._yarl = URL
        self._timeouts = timeouts
        self._limit = max_connections
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use, inside the server's event loop (a session belongs to one loop).
        if self._session is None:
            aiohttp = self._aiohttp
            connector = aiohttp.TCPConnector(
                limit=self._limit, limit_per_host=0, keepalive_timeout=self._keepalive
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # nothing the client did not send: no default User-Agent, Accept, Accept-Encoding
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes,
        read_timeout: float,
    ) -> UpstreamResponse:
        aiohttp = self._aiohttp
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self._timeouts.connect,
            sock_read=read_timeout,
            connect=self._timeouts.connect + read_timeout,
        )
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        try:
            response = await self._client().request(
                method,
                self._yarl(url, encoded=True),  # as built: never re-quoted nor normalised
                headers=pairs,
                data=content or None,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
            )
        except aiohttp.ConnectionTimeoutError as exc:
            raise _ConnectFailedError(_timeout_error("connecting to", url, exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            error = _cannot_connect(url, exc, exc.os_error.errno)
            raise _ConnectFailedError(error) from exc
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise _timeout_error("waiting for", url, exc) from exc
        except aiohttp.ClientError as exc:
            raise _failed(url, exc) from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise _timeout_error("waiting for", url, exc) from exc
            except aiohttp.ClientError as exc:
                raise _failed(url, exc) from exc

        async def close() -> None:
            if response.content.at_eof():
                response.release()  # the connection goes back to the pool
            else:
                response.close()  # abandoned mid-body: the connection cannot be reused

        return UpstreamResponse(response.status, list(response.raw_headers), chunks(), close)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _HttpxBackend:
    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        timeouts: Timeouts,
        max_connections: int,
        keepalive: float,
    ) -> None:
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeouts.read, connect=timeouts.connect),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=keepalive,
            ),
            follow_redirects=False,
        )
        self._timeouts = timeouts

    async def open(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[bytes, bytes]],
        content: bytes,
        read_timeout: float,
    ) -> UpstreamResponse:
        timeout = httpx.Timeout(read_timeout, connect=self._timeouts.connect)
        request = self._client.build_request(
            method, url, headers=list(headers), content=content, timeout=timeout
        )
        try:
            response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _ConnectFailedError(_translate_httpx(exc, url)) from exc
        except httpx.HTTPError as exc:
            raise _translate_httpx(exc, url) from exc

        async def chunks() -> AsyncIterator[bytes]:
            if response.is_stream_consumed:  # transports that answer with a body already read
                yield response.content
                return
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            except httpx.HTTPError as exc:
                raise _translate_httpx(exc, url) from exc

        return UpstreamResponse(
            response.status_code, list(response.headers.raw), chunks(), response.aclose
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _translate_httpx(exc: httpx.HTTPError, url: str) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        phase = "connecting to" if isinstance(exc, httpx.ConnectTimeout) else "waiting for"
        return _timeout_error(phase, url, exc)
    if isinstance(exc, httpx.ConnectError):
        cause = exc.__context__
        return _cannot_connect(url, exc, getattr(cause, "errno", None))
    return _failed(url, exc)
