"""Forwarding to the upstream LLM API: credentials, timeouts, compression, streams, metrics.

Proxied routes move bytes: the body goes to :class:`~ragpress.middleware.serving.chat.ChatService`
(which returns the same bytes when nothing is marked) and then upstream; the upstream's status,
headers and body come back untouched, plus ``x-ragpress-*`` headers.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse

from ragpress.exceptions import RequestValidationError, UpstreamError, UpstreamTimeoutError
from ragpress.middleware.proxy.headers import request_headers, response_headers
from ragpress.middleware.proxy.sse import is_event_stream, relay
from ragpress.middleware.proxy.state import ProxyState, proxy_state
from ragpress.middleware.serving.chat import OPTIONS_HEADER

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from litestar import Request
    from litestar.datastructures import State

    from ragpress.middleware.serving.chat import Prepared
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["TIMEOUT_HEADER", "forward"]

logger = logging.getLogger("ragpress.proxy")

TIMEOUT_HEADER = "x-ragpress-timeout"
"""Request header lowering the upstream read timeout for one request, in seconds."""


def _credentials(
    state: ProxyState, flavor: Flavor, consumed: str | None
) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """Client credential headers to drop, and configured upstream credentials to set."""
    drop = {consumed.encode()} if consumed else set()
    if flavor == "anthropic" and state.anthropic_api_key:
        return drop | {b"authorization"}, [(b"x-api-key", state.anthropic_api_key.encode())]
    if flavor == "openai" and state.upstream_api_key:
        key = state.upstream_api_key.encode()
        return drop | {b"x-api-key", b"api-key"}, [(b"authorization", b"Bearer " + key)]
    return drop, []


def _timeout(request: Request[Any, Any, State]) -> float | None:
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e6:
        raise RequestValidationError(
            f"{TIMEOUT_HEADER}={raw!r} must be a number of seconds > 0, e.g. 30",
            param=TIMEOUT_HEADER,
        )
    return value


async def forward(
    request: Request[Any, Any, State],
    *,
    flavor: Flavor,
    path: str,
    route_name: str,
    compress: bool,
) -> ASGIResponse:
    """Send ``request`` upstream (compressing its body when ``compress``) and relay the answer."""
    state = proxy_state(request)
    started = time.perf_counter()
    consumed = state.keys.check(request.headers)
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
    read_timeout = _timeout(request)
    body = await request.body() if request.method in ("POST", "PUT", "PATCH") else b""
    prepared: Prepared | None = None
    if compress and body:
        prepared = await state.chat.prepare(
            body, flavor=flavor, header=request.headers.get(OPTIONS_HEADER)
        )
        if prepared.soft is not None:
            return await _answer_soft(request, state, prepared, route_name, request_id, started)
        body = prepared.body
    drop, replace = _credentials(state, flavor, consumed)
    forwarded = request_headers(request.scope["headers"], drop=drop, replace=replace)
    try:
        response = await state.upstream.send(
            request.method,
            flavor,
            path,
            headers=forwarded,
            content=body,
            query=request.scope["query_string"].decode("latin-1"),
            read_timeout_seconds=read_timeout,
        )
    except UpstreamError as exc:
        kind = "timeout" if isinstance(exc, UpstreamTimeoutError) else "unreachable"
        state.metrics.upstream_errors.labels(kind).inc()
        raise
    headers = response_headers(response.headers)
    if prepared is not None:
        headers += prepared.headers()
    headers.append(("x-ragpress-request-id", request_id))
    status = response.status_code
    if status >= 500:
        state.metrics.upstream_errors.labels("status").inc()

    def finish(error: BaseException | None, sent: int) -> None:
        seconds = time.perf_counter() - started
        state.metrics.observe(route_name, status, prepared, seconds)
        _count_stream_error(state, route_name, error)
        if state.access_log:
            _log_request(request, request_id, route_name, status, seconds, prepared, sent, error)

    if is_event_stream(response.header("content-type")):
        state.metrics.streams.inc()

        def stream_done(error: BaseException | None, sent: int) -> None:
            state.metrics.streams.dec()
            finish(error, sent)

        iterator = relay(
            response.iter_raw(),
            flavor=flavor,
            encoded=bool(response.header("content-encoding")),
            on_done=stream_done,
        )
        return ASGIStreamingResponse(
            iterator=iterator,
            status_code=status,
            headers=headers,  # type: ignore[arg-type]  # a list keeps repeated headers
        )
    content = await response.read_raw()
    finish(None, len(content))
    return ASGIResponse(body=content, status_code=status, headers=headers)


async def _answer_soft(
    request: Request[Any, Any, State],
    state: ProxyState,
    prepared: Prepared,
    route_name: str,
    request_id: str,
    started: float,
) -> ASGIResponse:
    """Answer from a soft prompt (CompLLM) instead of forwarding; same headers, metrics, log."""
    assert prepared.soft is not None and state.chat.soft is not None
    answer = await state.chat.soft.answer(prepared.soft)
    headers = [*answer.headers, ("x-ragpress-request-id", request_id)]

    def finish(error: BaseException | None, sent: int) -> None:
        seconds = time.perf_counter() - started
        state.metrics.observe(route_name, 200, answer.prepared, seconds)
        _count_stream_error(state, route_name, error)
        if state.access_log:
            _log_request(
                request, request_id, route_name, 200, seconds, answer.prepared, sent, error
            )

    if answer.stream is None:
        assert answer.body is not None
        finish(None, len(answer.body))
        return ASGIResponse(
            body=answer.body, status_code=200, headers=headers, media_type="application/json"
        )
    stream = answer.stream
    state.metrics.streams.inc()

    async def events() -> AsyncIterator[bytes]:
        sent, error = 0, None
        try:
            async for frame in stream:
                sent += len(frame)
                yield frame
        except BaseException as exc:  # the client went away: record it, then let it unwind
            error = exc
            raise
        finally:
            state.metrics.streams.dec()
            finish(error, sent)

    headers.append(("cache-control", "no-cache"))
    return ASGIStreamingResponse(
        iterator=events(),
        status_code=200,
        headers=headers,  # type: ignore[arg-type]  # a list keeps repeated headers
        media_type="text/event-stream",
    )


def _count_stream_error(state: ProxyState, route_name: str, error: BaseException | None) -> None:
    """An upstream that broke off is an upstream error; anything else, the client leaving.

    (A client that hangs up mid-stream cancels the relay: ``CancelledError``, ``GeneratorExit``
    or the server's own disconnect error, depending on the server.)
    """
    if error is None:
        return
    if isinstance(error, UpstreamError):
        state.metrics.upstream_errors.labels("stream").inc()
    else:
        state.metrics.client_disconnects.labels(route_name).inc()


def _log_request(
    request: Request[Any, Any, State],
    request_id: str,
    route_name: str,
    status: int,
    seconds: float,
    prepared: Prepared | None,
    sent: int,
    error: BaseException | None,
) -> None:
    extra: dict[str, Any] = {
        "event": "request",
        "request_id": request_id,
        "method": request.method,
        "route": route_name,
        "status": status,
        "ms": round(seconds * 1e3, 2),
        "bytes_out": sent,
    }
    if prepared is not None:
        extra["compression"] = prepared.outcome
        if prepared.summary is not None and prepared.outcome == "compressed":
            extra.update(
                tokens_before=prepared.summary.tokens_before,
                tokens_after=prepared.summary.tokens_after,
                cache_hits=prepared.summary.cache_hits,
                compression_ms=round(prepared.ms, 2),
            )
        if prepared.error:
            extra["compression_error"] = prepared.error.split(":", 1)[0]
    if isinstance(error, UpstreamError):
        extra["stream_error"] = type(error).__name__
    elif error is not None:
        extra["client_disconnected"] = True
    logger.info("%s %s %s", request.method, route_name, status, extra=extra)
