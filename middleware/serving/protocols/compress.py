"""Wire models of the compression APIs: ragpress's own, and the two contracts LiteLLM speaks.

* ``POST /v1/compress``: documents and a question in, compressed documents with provenance
  (kept character spans) and statistics out.
* ``POST /headroom/v1/compress``: the Headroom-style message contract LiteLLM's ``headroom``
  guardrail calls at ``{api_base}/v1/compress`` (so ``api_base`` is ``http://HOST/headroom``).
* ``POST /beta/litellm_basic_guardrail_api``: LiteLLM's Generic Guardrail API.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragpress.middleware.serving.protocols.openai import CompressionKnobs

__all__ = [
    "CompressRequest",
    "CompressResponse",
    "CompressedDocument",
    "CompressionStats",
    "DocumentIn",
    "GuardrailRequest",
    "GuardrailResponse",
    "HeadroomCompressRequest",
    "HeadroomCompressResponse",
]


class DocumentIn(BaseModel):
    """A document to compress; title, id and metadata come back unchanged."""

    model_config = ConfigDict(extra="forbid")

    text: str
    title: str | None = None
    id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CompressRequest(CompressionKnobs):
    """``POST /v1/compress``."""

    query: str | None = Field(
        None, description="The question; empty or absent compresses query-agnostically."
    )
    documents: list[DocumentIn] = Field(min_length=1, description="In prompt order.")


class CompressedDocument(BaseModel):
    """One document after compression, in input order."""

    text: str
    title: str | None = None
    id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    spans: list[tuple[int, int]] | None = Field(
        None,
        description="Character ranges [start, end) of the original text that were kept; "
        "null for compressors that rewrite instead of extract.",
    )
    tokens_before: int
    tokens_after: int


class CompressionStats(BaseModel):
    """What compression did."""

    tokens_before: int
    tokens_after: int
    ratio: float | None = Field(description="tokens_before / tokens_after; null when all dropped.")
    method: str
    cache_hits: int
    cache_misses: int
    ms: float
    notes: list[str] = Field(default_factory=list)


class CompressResponse(BaseModel):
    """Answer of ``POST /v1/compress``."""

    documents: list[CompressedDocument]
    context: str = Field(description="The non-empty compressed documents joined by blank lines.")
    stats: CompressionStats


class HeadroomCompressRequest(BaseModel):
    """The Headroom-style contract: chat messages in, the same number of messages out."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(description="OpenAI-format chat messages.")
    model: str | None = None
    config: dict[str, Any] | None = Field(
        None,
        description="Headroom's options (ignored), or a `ragpress` key with RagpressOptions.",
    )


class HeadroomCompressResponse(BaseModel):
    """The messages with their marked context compressed, and the counts LiteLLM logs."""

    messages: list[dict[str, Any]]
    tokens_before: int
    tokens_after: int
    tokens_saved: int
    compression_ratio: float = Field(
        description="tokens_after / tokens_before, Headroom's convention (0.3 keeps 30%)."
    )
    transforms_applied: list[str]

    @classmethod
    def unchanged(cls, messages: list[dict[str, Any]]) -> HeadroomCompressResponse:
        """The answer when nothing was compressed (bypass, nothing marked, failed open)."""
        return cls(
            messages=messages,
            tokens_before=0,
            tokens_after=0,
            tokens_saved=0,
            compression_ratio=1.0,
            transforms_applied=[],
        )


class GuardrailRequest(BaseModel):
    """LiteLLM's Generic Guardrail API request."""

    model_config = ConfigDict(extra="allow")

    input_type: Literal["request", "response"] = "request"
    texts: list[str] = Field(default_factory=list)
    structured_messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    model: str | None = None
    request_data: dict[str, Any] | None = None
    request_headers: dict[str, Any] | None = None
    litellm_call_id: str | None = None
    litellm_trace_id: str | None = None
    additional_provider_specific_params: dict[str, Any] | None = Field(
        None, description="May carry a `ragpress` key with RagpressOptions."
    )

    def ragpress_options(self) -> Any:
        """The raw ``ragpress`` options given in the provider-specific parameters, if any."""
        return (self.additional_provider_specific_params or {}).get("ragpress")


class GuardrailResponse(BaseModel):
    """``GUARDRAIL_INTERVENED`` with the compressed ``texts``, or ``NONE`` when nothing changed."""

    action: Literal["NONE", "BLOCKED", "GUARDRAIL_INTERVENED"]
    texts: list[str] | None = None
    blocked_reason: str | None = None
