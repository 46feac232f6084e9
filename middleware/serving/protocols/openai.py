"""OpenAI wire models, plus ragpress's one extension field.

The proxy forwards request bodies as the client wrote them; these models document the wire
format (OpenAPI), validate the ``ragpress`` extension strictly, and type the error body. They
accept unknown fields (``extra="allow"``) so a field OpenAI adds tomorrow passes through today.
Request fields are listed in the order of OpenAI's API reference.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragpress.exceptions import RequestValidationError
from ragpress.types import CompressionOptions

__all__ = [
    "ChatCompletionRequest",
    "ChatCompletionResponse",
    "ChatMessage",
    "CompressionKnobs",
    "ErrorInfo",
    "ErrorResponse",
    "Flavor",
    "Model",
    "ModelList",
    "OpenAIModel",
    "RagpressOptions",
    "Usage",
    "parse_options",
]

Flavor = Literal["openai", "anthropic"]
"""Which API a route speaks: decides the error shape and what may be rewritten."""


class OpenAIModel(BaseModel):
    """Base of the wire models: unknown fields are kept, never rejected."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class CompressionKnobs(BaseModel):
    """The budget and method of one compression call; unset fields use the server's defaults."""

    model_config = ConfigDict(extra="forbid")

    method: str | None = Field(
        None,
        description="Compressor registry name; must be one the server offers "
        "(RAGPRESS_COMPRESSION__METHOD or RAGPRESS_PROXY__METHODS).",
        examples=["sentence_selection"],
    )
    target_ratio: float | Literal["auto"] | None = Field(
        None,
        description='Original/compressed tokens, >= 1 (3 keeps about a third), or "auto": '
        "as much as the evidence needs, between min_ratio and max_ratio.",
        examples=[3, "auto"],
    )
    min_ratio: float | None = Field(
        None, description='With target_ratio "auto": the least compression (default 2).'
    )
    max_ratio: float | None = Field(
        None, description='With target_ratio "auto": the most compression (default 20).'
    )
    rate: float | None = Field(None, description="Fraction of tokens to keep, in (0, 1].")
    target_tokens: int | None = Field(None, description="Token budget for the whole call.")
    keep: list[str] = Field(
        default_factory=list, description="Strings that must survive compression verbatim."
    )

    def to_compression_options(self, *, param_prefix: str = "") -> CompressionOptions:
        """The per-call options (validated; errors name the field with ``param_prefix``).

        Raises:
            RequestValidationError: Two budgets, or a budget out of range.
        """
        try:
            return CompressionOptions(
                target_ratio=self.target_ratio,
                rate=self.rate,
                target_tokens=self.target_tokens,
                keep=tuple(self.keep),
                min_ratio=self.min_ratio,
                max_ratio=self.max_ratio,
            )
        except RequestValidationError as exc:
            raise RequestValidationError(
                str(exc), param=f"{param_prefix}{exc.param}" if exc.param else param_prefix or None
            ) from None


class RagpressOptions(CompressionKnobs):
    """Per-request control of in-flight compression: the ``ragpress`` body field or header."""

    compress: bool | None = Field(
        None,
        description="Compress the marked context (true), leave it alone (false), or follow the "
        "server's default (unset).",
    )
    query: str | None = Field(
        None,
        description="The question the context should answer; by default the user's text "
        "outside the <context> markers.",
    )
    images: bool | None = Field(
        None,
        description="Compress image and PDF parts (true) or leave them alone (false); unset "
        "follows `compress` on servers that compress images (RAGPRESS_PROXY__IMAGES__ENABLED).",
    )

    def merged_over(self, base: RagpressOptions | None) -> RagpressOptions:
        """These options, with fields left unset taken from ``base``."""
        if base is None:
            return self
        return base.model_copy(update=self.model_dump(exclude_unset=True))


def parse_options(raw: Any, *, source: str) -> RagpressOptions:
    """Validate a ``ragpress`` options object from the body field or the header.

    Args:
        raw: The decoded JSON value (or the raw header text).
        source: ``"ragpress"`` for the body field, the header name for the header.

    Raises:
        RequestValidationError: Not an object, an unknown key, or a wrong type; ``param`` names it.
    """
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            raise RequestValidationError(
                f"the {source} header must be a JSON object such as "
                '{"target_ratio": 3} or {"compress": false}; got ' + repr(raw[:80]),
                param=source,
            ) from None
    if not isinstance(raw, dict):
        raise RequestValidationError(
            f'{source} must be a JSON object such as {{"target_ratio": 3}}, '
            f"not {type(raw).__name__}",
            param=source,
        )
    try:
        return RagpressOptions.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        allowed = ", ".join(RagpressOptions.model_fields)
        hint = f"; known fields: {allowed}" if error["type"] == "extra_forbidden" else ""
        raise RequestValidationError(
            f"{source}.{where}: {error['msg']}{hint}", param=f"{source}.{where}"
        ) from None


class ChatMessage(OpenAIModel):
    """One message; ``content`` is a string or a list of content parts."""

    role: str = Field(description="system, developer, user, assistant or tool.")
    content: str | list[dict[str, Any]] | None = Field(
        None,
        description="Text, or parts such as {type: text, text} and {type: image_url, image_url}. "
        "Context to compress is wrapped in <context>...</context>; <document title=...> "
        "elements inside it are compressed as separate documents.",
    )
    name: str | None = None


class ChatCompletionRequest(OpenAIModel):
    """``POST /v1/chat/completions``: OpenAI's request, forwarded with unknown fields intact."""

    messages: list[ChatMessage]
    model: str
    frequency_penalty: float | None = None
    logit_bias: dict[str, int] | None = None
    logprobs: bool | None = None
    max_completion_tokens: int | None = None
    max_tokens: int | None = None
    metadata: dict[str, str] | None = None
    n: int | None = None
    parallel_tool_calls: bool | None = None
    presence_penalty: float | None = None
    prompt_cache_key: str | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    temperature: float | None = None
    tool_choice: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    top_logprobs: int | None = None
    top_p: float | None = None
    user: str | None = None
    # not in the OpenAI spec: ragpress's single extension field, removed before forwarding
    ragpress: RagpressOptions | None = Field(
        None,
        description="ragpress extension (removed before the request is forwarded): whether and "
        "how to compress the marked context. Clients that cannot add body fields send the same "
        "JSON object in the x-ragpress header.",
    )


class Usage(OpenAIModel):
    """Token usage, passed through from the upstream byte for byte."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, Any] | None = None
    completion_tokens_details: dict[str, Any] | None = None


class ChatCompletionResponse(OpenAIModel):
    """The upstream's answer, unchanged (documented for the OpenAPI schema)."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: Usage | None = None
    service_tier: str | None = None
    system_fingerprint: str | None = None


class Model(OpenAIModel):
    """One entry of ``GET /v1/models``."""

    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None


class ModelList(OpenAIModel):
    """``GET /v1/models``, passed through from the upstream."""

    object: str = "list"
    data: list[Model]


class ErrorInfo(BaseModel):
    """The inner object of an OpenAI error."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """``{"error": {...}}``: the shape of every error the proxy sends on OpenAI routes."""

    error: ErrorInfo
