"""The proxy's route handlers, one module per family.

* :mod:`~ragpress.middleware.proxy.routes.openai` — chat completions, models, other ``/v1``;
* :mod:`~ragpress.middleware.proxy.routes.anthropic` — messages and token counting;
* :mod:`~ragpress.middleware.proxy.routes.compression` — ``/v1/compress``, Headroom, LiteLLM;
* :mod:`~ragpress.middleware.proxy.routes.operations` — health, readiness, metrics.

Forwarding itself is :mod:`ragpress.middleware.proxy.forwarding`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragpress.middleware.proxy.routes.anthropic import count_tokens, messages
from ragpress.middleware.proxy.routes.compression import compress, guardrail, headroom_compress
from ragpress.middleware.proxy.routes.openai import chat_completions, models, passthrough
from ragpress.middleware.proxy.routes.operations import health, metrics, ready
from ragpress.middleware.serving.protocols.anthropic import (
    AnthropicErrorResponse,
    MessagesRequest,
    MessagesResponse,
)
from ragpress.middleware.serving.protocols.compress import (
    CompressRequest,
    CompressResponse,
    GuardrailRequest,
    GuardrailResponse,
    HeadroomCompressRequest,
    HeadroomCompressResponse,
)
from ragpress.middleware.serving.protocols.openai import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ErrorResponse,
    ModelList,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["DOCUMENTED_MODELS", "ROUTES"]

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
