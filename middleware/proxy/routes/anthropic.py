"""Anthropic-compatible routes: messages (compressed in flight) and token counting."""

from __future__ import annotations

from typing import Any

from litestar import Request, post
from litestar.datastructures import State
from litestar.response.base import ASGIResponse

from ragpress.middleware.proxy.forwarding import forward
from ragpress.middleware.proxy.openapi import ANTHROPIC_ERRORS, operation
from ragpress.middleware.serving.protocols.anthropic import MessagesRequest, MessagesResponse

__all__ = ["count_tokens", "messages"]


@post(
    "/v1/messages",
    status_code=200,
    operation_class=operation(
        MessagesRequest,
        {200: ("The upstream's message, or its SSE stream", MessagesResponse), **ANTHROPIC_ERRORS},
        streams=True,
    ),
    summary="Messages (Anthropic), compressing marked context in flight",
    tags=["proxy"],
)
async def messages(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward an Anthropic Messages request; errors come back in Anthropic's shape."""
    return await forward(
        request, flavor="anthropic", path="/messages", route_name="messages", compress=True
    )


@post(
    "/v1/messages/count_tokens",
    status_code=200,
    operation_class=operation(MessagesRequest, {200: ("Token count", None), **ANTHROPIC_ERRORS}),
    summary="Count tokens (Anthropic), after the same compression /v1/messages would apply",
    tags=["proxy"],
)
async def count_tokens(request: Request[Any, Any, State]) -> ASGIResponse:
    """Forward a token count of the request as it would be sent after compression."""
    return await forward(
        request,
        flavor="anthropic",
        path="/messages/count_tokens",
        route_name="count_tokens",
        compress=True,
    )
