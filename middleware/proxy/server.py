"""What ``ragpress serve`` tells the ASGI server: limits on request heads, time and connections.

Before anything reaches the application, the server reads a request's head (request line and
headers). Without limits a client that has no key can make it buffer gigabytes of header
(several 50 MB headers raised the RSS by 400 MB), hold connections with headers sent a byte at
a time, or keep idle connections open for minutes (issue 21). The settings
``RAGPRESS_PROXY__MAX_HEADER_BYTES``, ``__HEADER_TIMEOUT_SECONDS``, ``__KEEPALIVE_TIMEOUT_SECONDS``
and ``__MAX_CONCURRENCY`` become, for each server:

* **uvicorn** with httptools (the default): :class:`LimitedHttpToolsProtocol`, which counts
  head bytes as they arrive and answers 431 as soon as the limit is passed (httptools itself
  has no limit: it keeps growing one buffer), and closes a connection whose head is not
  complete within the header timeout (uvicorn only times out idle kept-alive connections);
  plus ``timeout_keep_alive``, ``limit_concurrency`` and ``h11_max_incomplete_event_size`` (the
  same head limit, for ``--http h11``);
* **granian**: ``HTTP1Settings(max_buffer_size, header_read_timeout)``, the HTTP/2
  ``max_headers_size`` and ``backpressure``. Hyper answers an oversized head with 431 and closes a
  connection that sends no complete head within ``header_read_timeout``, idle kept-alive
  connections included (granian has no separate keep-alive timeout).

The ``x-ragpress`` header has its own, smaller limit, checked by the application (431).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ragpress.middleware.serving.errors import error_body

if TYPE_CHECKING:
    import asyncio

    from ragpress.config import ProxySettings

__all__ = ["HeadLimits", "LimitedHttpToolsProtocol", "granian_options", "uvicorn_options"]

_DRAIN_SECONDS = 1.0
"""After refusing a head, how long what the client still sends is read and dropped before the
connection is closed (closing with unread data would reset it and lose the 431)."""


@dataclass(frozen=True)
class HeadLimits:
    """How much of a request head, and how slowly, a client may send."""

    max_head_bytes: int
    """Request line and headers together."""
    header_timeout_seconds: float
    """From connecting, or from the first byte of a later request, to the end of its head."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a bounded request head and a header timeout.

    Built by :func:`uvicorn_options` as ``functools.partial(LimitedHttpToolsProtocol,
    limits=...)``, which pickles, so ``--workers`` processes get the same limits.
    """

    def __init__(self, *args: Any, limits: HeadLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        self._header_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the header timer: a new connection must send a head in time."""
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the header timer."""
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count head bytes before httptools buffers them; 431 past the limit."""
        if self._refused:
            return  # draining before the close
        if self._in_head:
            if self._header_timer is None:
                self._arm()  # the first byte of a request on a kept-alive connection
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:]
            if self._head_bytes > self.limits.max_head_bytes:
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is complete: stop counting and timing it."""
        self._in_head = False
        self._head_bytes = 0
        self._tail = b""
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The body is complete: what comes next is the head of the next request."""
        super().on_message_complete()
        self._in_head = True

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._header_timeout
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._head_bytes:  # a request was under way: say why it ends
            self._send(408, "Request Timeout", "the request headers took too long to arrive")
        self.transport.close()

    def _refuse(self) -> None:
        self._refused = True
        self._disarm()
        self._send(
            431,
            "Request Header Fields Too Large",
            f"the request headers are larger than {self.limits.max_head_bytes:,} bytes "
            "(RAGPRESS_PROXY__MAX_HEADER_BYTES)",
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(_DRAIN_SECONDS, self.transport.close)

    def _send(self, status: int, reason: str, message: str) -> None:
        body = error_body(status, message)
        head = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)


def uvicorn_options(proxy: ProxySettings) -> dict[str, Any]:
    """``uvicorn.run``/``uvicorn.Config`` arguments that apply ``proxy``'s limits.

    Example:
        >>> options = uvicorn_options(RagpressSettings().proxy)  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8080, **options)  # doctest: +SKIP
    """
    limits = HeadLimits(proxy.max_header_bytes, proxy.header_timeout_seconds)
    return {
        "http": functools.partial(LimitedHttpToolsProtocol, limits=limits),
        "h11_max_incomplete_event_size": proxy.max_header_bytes,
        "timeout_keep_alive": proxy.keepalive_timeout_seconds,
        "limit_concurrency": proxy.max_concurrency,
    }


def granian_options(proxy: ProxySettings) -> dict[str, Any]:
    """``granian.Granian`` arguments that apply ``proxy``'s limits.

    Hyper needs a read buffer of at least 8 KiB, which is also the smallest
    ``RAGPRESS_PROXY__MAX_HEADER_BYTES`` accepted.
    """
    from granian.http import HTTP1Settings, HTTP2Settings

    return {
        "http1_settings": HTTP1Settings(
            header_read_timeout=round(proxy.header_timeout_seconds * 1000),
            keep_alive=True,
            max_buffer_size=max(proxy.max_header_bytes, 8192),
        ),
        "http2_settings": HTTP2Settings(max_headers_size=proxy.max_header_bytes),
        "backpressure": proxy.max_concurrency,
    }
