"""ragpress's own compression APIs: ``/v1/compress`` and the Headroom and LiteLLM contracts."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from litestar import Request, post
from litestar.datastructures import State
from litestar.response.base import ASGIResponse
from pydantic import BaseModel, ValidationError

from ragpress.exceptions import RequestValidationError
from ragpress.middleware.proxy.openapi import OPENAI_ERRORS, operation
from ragpress.middleware.proxy.state import ProxyState, proxy_state
from ragpress.middleware.serving.chat import dumps
from ragpress.middleware.serving.protocols.compress import (
    CompressRequest,
    CompressResponse,
    GuardrailRequest,
    GuardrailResponse,
    HeadroomCompressRequest,
    HeadroomCompressResponse,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


__all__ = ["compress", "guardrail", "headroom_compress"]

M = TypeVar("M", bound=BaseModel)


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
    state = proxy_state(request)
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
        model, {200: (description, answer), 400: OPENAI_ERRORS[400], 401: OPENAI_ERRORS[401]}
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
