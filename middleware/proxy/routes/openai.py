"""OpenAI-compatible routes: chat completions (compressed in flight), models, other ``/v1``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request, get, post, route
from litestar.datastructures import State
from litestar.response.base import ASGIResponse

from ragpress.middleware.proxy.forwarding import forward
from ragpress.middleware.proxy.openapi import OPENAI_ERRORS, operation
from ragpress.middleware.proxy.state import proxy_state
from ragpress.middleware.proxy.upstream import upstream_path
from ragpress.middleware.serving.protocols.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelList,
)

if TYPE_CHECKING:
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["chat_completions", "models", "passthrough"]


@post(
    "/v1/chat/completions",
    status_code=200,
    operation_class=operation(
        ChatCompletionRequest,
        {
            200: ("The upstream's completion, or its SSE stream", ChatCompletionResponse),
            **OPENAI_ERRORS,
        },
        streams=True,
    ),
    summary="Chat completion (OpenAI), compressing marked context in flight",
    tags=["proxy"],
)
async def chat_completions(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward an OpenAI chat completion; streaming and non-streaming pass through unchanged."""
    return await forward(
        request,
        flavor="openai",
        path="/chat/completions",
        route_name="chat_completions",
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
    return await forward(
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
    """Forward any other ``/v1`` path to the OpenAI-compatible upstream, untouched.

    The upstream path is rebuilt from checked segments (:func:`upstream_path`): a path that
    could climb out of ``/v1`` (``..``, encoded separators, double encoding) is a 400, so the
    upstream key is never sent anywhere else on the upstream host.
    """
    state = proxy_state(request)
    state.keys.check(request.headers)  # authenticate before saying anything about the path
    path = upstream_path(
        str(request.path_params.get("path", "")), raw_path=request.scope.get("raw_path")
    )
    return await forward(
        request, flavor="openai", path=path, route_name="passthrough", compress=False
    )
