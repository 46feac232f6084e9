"""Route handlers: the proxied LLM APIs, the compression APIs, health, readiness and metrics.

Proxied routes move bytes: the body goes to :class:`~ragpress.middleware.openai.service.ChatService`
(which returns the same bytes when nothing is marked) and then upstream; the upstream's status,
headers and body come back untouched, plus ``x-ragpress-*`` headers.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from litestar import Request, get, post, route
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from pydantic import BaseModel, ValidationError

from ragpress.exceptions import RequestValidationError, UpstreamError, UpstreamTimeoutError
from ragpress.middleware.anthropic.protocol import (
    AnthropicErrorResponse,
    MessagesRequest,
    MessagesResponse,
)
from ragpress.middleware.openai.compress_protocol import (
    CompressRequest,
    CompressResponse,
    GuardrailRequest,
    GuardrailResponse,
    HeadroomCompressRequest,
    HeadroomCompressResponse,
)
from ragpress.middleware.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    ModelList,
)
from ragpress.middleware.openai.service import OPTIONS_HEADER, dumps
from ragpress.middleware.proxy.headers import request_headers, response_headers
from ragpress.middleware.proxy.openapi import operation
from ragpress.middleware.proxy.sse import is_event_stream, relay

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from litestar.datastructures import State

    from ragpress.middleware.openai.compress_service import CompressService
    from ragpress.middleware.openai.protocol import Flavor
    from ragpress.middleware.openai.service import ChatService, Prepared
    from ragpress.middleware.proxy.auth import ClientKeys
    from ragpress.middleware.proxy.fetch import ImageFetcher
    from ragpress.middleware.proxy.observability import ProxyMetrics
    from ragpress.middleware.proxy.upstream import UpstreamClient

__all__ = ["DOCUMENTED_MODELS", "ROUTES", "STATE_KEY", "TIMEOUT_HEADER", "ProxyState"]

logger = logging.getLogger("ragpress.proxy")

STATE_KEY = "ragpress"
TIMEOUT_HEADER = "x-ragpress-timeout"
"""Request header lowering the upstream read timeout for one request, in seconds."""

M = TypeVar("M", bound=BaseModel)


@dataclass
class ProxyState:
    """Everything the handlers need, kept in ``app.state["ragpress"]``."""

    chat: ChatService
    compress: CompressService
    upstream: UpstreamClient
    keys: ClientKeys
    metrics: ProxyMetrics
    upstream_api_key: str | None = None
    anthropic_api_key: str | None = None
    access_log: bool = True
    max_body_bytes: int = 0
    ready: bool = False
    image_fetcher: ImageFetcher | None = None
    verify_soft: bool = True
    """Run the soft-prompt backends' start-up check (vLLM embedding parity)."""


def _state(request: Request[Any, Any, State]) -> ProxyState:
    state: ProxyState = request.app.state[STATE_KEY]
    return state


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


async def _forward(
    request: Request[Any, Any, State],
    *,
    flavor: Flavor,
    path: str,
    route_name: str,
    compress: bool,
) -> ASGIResponse:
    state = _state(request)
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
        if error is not None:
            state.metrics.upstream_errors.labels("stream").inc()
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
    if error is not None:
        extra["stream_error"] = type(error).__name__
    logger.info("%s %s %s", request.method, route_name, status, extra=extra)


_OPENAI_ERRORS = {
    400: ("Bad request (the message names the field)", ErrorResponse),
    401: ("Missing or invalid ragpress API key", ErrorResponse),
    413: ("Request body over RAGPRESS_PROXY__MAX_BODY_BYTES", ErrorResponse),
    502: ("The upstream could not be reached or broke off", ErrorResponse),
    504: ("The upstream did not answer in time", ErrorResponse),
}
_ANTHROPIC_ERRORS = {
    status: (text, AnthropicErrorResponse) for status, (text, _) in _OPENAI_ERRORS.items()
}


@post(
    "/v1/chat/completions",
    status_code=200,
    operation_class=operation(
        ChatCompletionRequest,
        {
            200: ("The upstream's completion, or its SSE stream", ChatCompletionResponse),
            **_OPENAI_ERRORS,
        },
        streams=True,
    ),
    summary="Chat completion (OpenAI), compressing marked context in flight",
    tags=["proxy"],
)
async def chat_completions(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward an OpenAI chat completion; streaming and non-streaming pass through unchanged."""
    return await _forward(
        request,
        flavor="openai",
        path="/chat/completions",
        route_name="chat_completions",
        compress=True,
    )


@post(
    "/v1/messages",
    status_code=200,
    operation_class=operation(
        MessagesRequest,
        {200: ("The upstream's message, or its SSE stream", MessagesResponse), **_ANTHROPIC_ERRORS},
        streams=True,
    ),
    summary="Messages (Anthropic), compressing marked context in flight",
    tags=["proxy"],
)
async def messages(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward an Anthropic Messages request; errors come back in Anthropic's shape."""
    return await _forward(
        request, flavor="anthropic", path="/messages", route_name="messages", compress=True
    )


@post(
    "/v1/messages/count_tokens",
    status_code=200,
    operation_class=operation(MessagesRequest, {200: ("Token count", None), **_ANTHROPIC_ERRORS}),
    summary="Count tokens (Anthropic), after the same compression /v1/messages would apply",
    tags=["proxy"],
)
async def count_tokens(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward a token count of the request as it would be sent after compression."""
    return await _forward(
        request,
        flavor="anthropic",
        path="/messages/count_tokens",
        route_name="count_tokens",
        compress=True,
    )


@get(
    "/v1/models",
    operation_class=operation(None, {200: ("The upstream's models", ModelList)}),
    summary="List models (passed through)",
    tags=["proxy"],
)
async def models(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward ``GET /v1/models`` (to the Anthropic upstream when ``anthropic-version`` is set)."""
    flavor: Flavor = "anthropic" if "anthropic-version" in request.headers else "openai"
    return await _forward(
        request, flavor=flavor, path="/models", route_name="models", compress=False
    )


@route(
    "/v1/{path:path}",
    http_method=["GET", "POST", "DELETE"],
    status_code=200,
    operation_class=operation(None, {200: ("The upstream's answer", None)}),
    summary="Any other OpenAI endpoint (embeddings, responses...), passed through uncompressed",
    tags=["proxy"],
)
async def passthrough(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward any other ``/v1`` path to the OpenAI-compatible upstream, untouched."""
    path = str(request.path_params.get("path", ""))
    return await _forward(
        request,
        flavor="openai",
        path=path if path.startswith("/") else "/" + path,
        route_name="passthrough",
        compress=False,
    )


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise RequestValidationError(f"{where}: {error['msg']}", param=where) from None


async def _answer(
    request: Request[Any, Any, State],
    model: type[M],
    call: Callable[[ProxyState, M], Awaitable[BaseModel]],
) -> ASGIResponse:
    """Authenticate, parse the body as ``model``, run ``call``, answer its result as JSON."""
    state = _state(request)
    started = time.perf_counter()
    state.keys.check(request.headers)
    result = await call(state, _parse(model, await request.body()))
    name = getattr(request.scope.get("route_handler"), "handler_name", "api")
    state.metrics.observe(name, 200, None, time.perf_counter() - started)
    return ASGIResponse(
        body=dumps(result.model_dump(mode="json")), status_code=200, media_type="application/json"
    )


def _api_operation(model: type[BaseModel], description: str, answer: type[BaseModel]) -> Any:
    return operation(
        model, {200: (description, answer), 400: _OPENAI_ERRORS[400], 401: _OPENAI_ERRORS[401]}
    )


@post(
    "/v1/compress",
    status_code=200,
    operation_class=_api_operation(
        CompressRequest, "Compressed documents with kept spans and stats", CompressResponse
    ),
    summary="Compress documents for a question (ragpress API)",
    tags=["compression"],
)
async def compress(request: Request[Any, Any, State]) -> ASGIResponse:
    """Documents and a question in; compressed documents, provenance and statistics out."""
    return await _answer(request, CompressRequest, lambda s, r: s.compress.compress(r))


@post(
    "/headroom/v1/compress",
    status_code=200,
    operation_class=_api_operation(
        HeadroomCompressRequest,
        "Same number of messages, marked context compressed",
        HeadroomCompressResponse,
    ),
    summary="Headroom-style message contract (LiteLLM headroom guardrail, api_base=/headroom)",
    tags=["compression"],
)
async def headroom_compress(request: Request[Any, Any, State]) -> ASGIResponse:
    """Compress the marked context of chat messages, Headroom's way (for LiteLLM)."""
    bypass = request.headers.get("x-headroom-bypass", "").lower() == "true"
    return await _answer(
        request, HeadroomCompressRequest, lambda s, r: s.compress.headroom(r, bypass=bypass)
    )


@post(
    "/beta/litellm_basic_guardrail_api",
    status_code=200,
    operation_class=_api_operation(
        GuardrailRequest,
        "NONE, or GUARDRAIL_INTERVENED with the compressed texts",
        GuardrailResponse,
    ),
    summary="LiteLLM Generic Guardrail API (compresses marked context in texts)",
    tags=["compression"],
)
async def guardrail(request: Request[Any, Any, State]) -> ASGIResponse:
    """LiteLLM's ``generic_guardrail_api`` hook: answer with compressed texts."""
    return await _answer(request, GuardrailRequest, lambda s, r: s.compress.guardrail(r))


@get("/health", summary="Liveness: the process serves requests", tags=["operations"])
async def health() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process runs."""
    return {"status": "ok"}


@get("/ready", summary="Readiness: models loaded and the cache usable", tags=["operations"])
async def ready(request: Request[Any, Any, State]) -> ASGIResponse:
    """200 when compressors are loaded and the cache is usable (or allowed to fail open)."""
    state = _state(request)
    caches = [p.cache for p in state.chat.pipelines.pipelines.values() if p.cache is not None]
    cache_ok = all(c.available or c.fail_open for c in caches)
    ok = state.ready and cache_ok
    payload = {
        "status": "ready" if ok else "not ready",
        "methods": state.chat.pipelines.methods,
        "cache": "ok" if all(c.available for c in caches) else "degraded",
    }
    return ASGIResponse(
        body=dumps(payload), status_code=200 if ok else 503, media_type="application/json"
    )


@get("/metrics", summary="Prometheus metrics", tags=["operations"], media_type="text/plain")
async def metrics(request: Request[Any, Any, State]) -> ASGIResponse:
    """The Prometheus text format."""
    body = _state(request).metrics.render()
    return ASGIResponse(body=body, media_type="text/plain; version=0.0.4; charset=utf-8")


ROUTES = [
    chat_completions,
    messages,
    count_tokens,
    models,
    passthrough,
    compress,
    headroom_compress,
    guardrail,
    health,
    ready,
    metrics,
]
"""Every route handler, for :func:`create_app` and :class:`RagpressPlugin`."""

DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    ChatCompletionResponse,
    MessagesRequest,
    MessagesResponse,
    ModelList,
    CompressRequest,
    CompressResponse,
    HeadroomCompressRequest,
    HeadroomCompressResponse,
    GuardrailRequest,
    GuardrailResponse,
    ErrorResponse,
    AnthropicErrorResponse,
)
"""The wire models the routes reference in the OpenAPI document."""
