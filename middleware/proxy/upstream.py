"""The connection to the LLM APIs: one pooled ``httpx.AsyncClient``, retries on connect errors only.

A request is retried only when the connection could not be made, because only then is it
certain the upstream never saw it (a POST that reached the upstream must not be sent twice: it
would be billed twice). httpx errors become :class:`~ragpress.exceptions.UpstreamError` (502)
or :class:`~ragpress.exceptions.UpstreamTimeoutError` (504) here and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import anyio

from ragpress.exceptions import MissingDependencyError, UpstreamError, UpstreamTimeoutError

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("httpx", extra="proxy") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from ragpress.config import UpstreamSettings
    from ragpress.middleware.openai.protocol import Flavor

__all__ = ["RetryPolicy", "UpstreamClient", "redact_url"]

logger = logging.getLogger("ragpress.upstream")

RawHeaders = "Sequence[tuple[bytes, bytes]]"


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


def redact_url(url: str) -> str:
    """``url`` without user information (credentials never reach logs or error messages)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class UpstreamClient:
    """Sends requests to the OpenAI- and Anthropic-compatible APIs behind the proxy.

    Args:
        client: The pooled HTTP client (its transport decides where requests go).
        base_url: OpenAI-compatible base URL, ending in the version (``.../v1``).
        anthropic_base_url: Anthropic-compatible base URL (``.../v1``).
        retry: What to do when a connection cannot be made.

    Example:
        >>> upstream = UpstreamClient.from_settings(settings.upstream)      # doctest: +SKIP
        >>> response = await upstream.send("POST", "openai", "/chat/completions",
        ...                                headers=[], content=b"{}")         # doctest: +SKIP
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        anthropic_base_url: str,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._client = client
        self._bases = {
            "openai": base_url.rstrip("/"),
            "anthropic": anthropic_base_url.rstrip("/"),
        }
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_settings(
        cls,
        settings: UpstreamSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> UpstreamClient:
        """Build the client the settings describe.

        Args:
            settings: Base URLs, timeouts, pool size and retries.
            transport: Replaces the network (tests pass ``httpx.MockTransport``).
            retry: Replaces the retry policy built from ``settings.connect_retries``.
        """
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.timeout_seconds,
            write=settings.timeout_seconds,
            pool=settings.connect_timeout_seconds,
        )
        limits = httpx.Limits(
            max_connections=settings.max_connections,
            max_keepalive_connections=settings.max_connections,
            keepalive_expiry=settings.keepalive_seconds,
        )
        client = httpx.AsyncClient(
            timeout=timeout, limits=limits, transport=transport, follow_redirects=False
        )
        return cls(
            client,
            base_url=settings.base_url,
            anthropic_base_url=settings.anthropic_base_url,
            retry=retry or RetryPolicy(retries=settings.connect_retries),
        )

    def url(self, flavor: Flavor, path: str, query: str = "") -> str:
        """The upstream URL for ``path`` (relative to the version prefix, e.g. ``/models``)."""
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
    ) -> httpx.Response:
        """Send one request and return the response with its body still unread.

        The caller reads it with :meth:`iter_raw` or :meth:`read_raw`, which also close it.

        Raises:
            UpstreamError: The upstream could not be reached (after the connect retries) or
                broke the protocol.
            UpstreamTimeoutError: A connect, write or read timeout expired.
        """
        url = self.url(flavor, path, query)
        extensions = None
        if read_timeout_seconds is not None:
            timeout = self._client.timeout
            extensions = {
                "timeout": httpx.Timeout(
                    connect=timeout.connect,
                    read=min(read_timeout_seconds, timeout.read or read_timeout_seconds),
                    write=timeout.write,
                    pool=timeout.pool,
                ).as_dict()
            }
        request = self._client.build_request(
            method, url, headers=list(headers), content=content, extensions=extensions
        )
        delays = self.retry.delays()
        for attempt in range(len(delays) + 1):
            try:
                return await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt == len(delays):
                    raise _translate(exc, url) from exc
                logger.info(
                    "upstream connect failed, retrying",
                    extra={"event": "upstream_retry", "attempt": attempt + 1},
                )
                await self.retry.sleep(delays[attempt])
            except httpx.HTTPError as exc:
                raise _translate(exc, url) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def iter_raw(self, response: httpx.Response) -> AsyncIterator[bytes]:
        """The response body as it arrives, bytes untouched (still compressed if it was).

        Raises:
            UpstreamError: The upstream broke off mid-body.
            UpstreamTimeoutError: The next bytes did not come in time.
        """
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _translate(exc, str(response.request.url)) from exc
        finally:
            await response.aclose()

    async def read_raw(self, response: httpx.Response) -> bytes:
        """The whole response body, bytes untouched."""
        return b"".join([chunk async for chunk in self.iter_raw(response)])

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._client.aclose()


def _translate(exc: httpx.HTTPError, url: str) -> UpstreamError:
    where = redact_url(url)
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting to",
            httpx.ReadTimeout: "waiting for",
            httpx.WriteTimeout: "sending to",
            httpx.PoolTimeout: "waiting for a free connection to",
        }.get(type(exc), "talking to")
        return UpstreamTimeoutError(
            f"timed out {phase} the upstream {where}; raise RAGPRESS_UPSTREAM__TIMEOUT_SECONDS "
            "or check the upstream"
        )
    if isinstance(exc, httpx.ConnectError):
        return UpstreamError(f"cannot connect to the upstream {where}: {exc}")
    return UpstreamError(f"the upstream {where} failed: {type(exc).__name__}: {exc}")
