"""Wire models (pydantic) for each API: OpenAI, Anthropic, and ragpress's own endpoints."""

from __future__ import annotations

__all__: list[str] = []
