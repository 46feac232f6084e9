"""Anthropic Messages wire models (for the OpenAPI schema and the error shape).

As on the OpenAI side, the proxy forwards bodies as written; these models document the format
and accept unknown fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ragpress.middleware.serving.protocols.openai import RagpressOptions

__all__ = [
    "AnthropicError",
    "AnthropicErrorResponse",
    "AnthropicMessage",
    "MessagesRequest",
    "MessagesResponse",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class AnthropicMessage(_Wire):
    """One turn; ``content`` is a string or content blocks (text, image, document, tool_result)."""

    role: str = Field(description="user or assistant.")
    content: str | list[dict[str, Any]] = Field(
        description="Text or blocks. Text inside <context>...</context> and plain-text document "
        "blocks ({type: document, source: {type: text, data}}) are compressed; blocks marked "
        "cache_control, and everything before them, never are."
    )


class MessagesRequest(_Wire):
    """``POST /v1/messages``: Anthropic's request, forwarded with unknown fields intact."""

    model: str
    messages: list[AnthropicMessage]
    max_tokens: int
    system: str | list[dict[str, Any]] | None = Field(
        None, description="Never rewritten by ragpress."
    )
    metadata: dict[str, Any] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: float | None = None
    tool_choice: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_k: int | None = None
    top_p: float | None = None
    # not in the Anthropic spec: ragpress's extension field, removed before forwarding
    ragpress: RagpressOptions | None = Field(
        None, description="ragpress extension, removed before forwarding; or the x-ragpress header."
    )


class MessagesResponse(_Wire):
    """The upstream's answer, unchanged."""

    id: str
    type: str = "message"
    role: str = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: dict[str, Any]


class AnthropicError(BaseModel):
    """The inner object of an Anthropic error."""

    type: str
    message: str


class AnthropicErrorResponse(BaseModel):
    """``{"type": "error", "error": {...}}``: every error the proxy sends on /v1/messages."""

    type: str = "error"
    error: AnthropicError
