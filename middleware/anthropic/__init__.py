"""The Anthropic Messages wire models; compression shares the OpenAI side's service."""

from __future__ import annotations

from ragpress.middleware.anthropic.protocol import AnthropicErrorResponse, MessagesRequest

__all__ = ["AnthropicErrorResponse", "MessagesRequest"]
