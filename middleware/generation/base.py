"""What every soft-prompt generation backend shares: parameters, chunks, the protocol.

A soft prompt is a sequence of input embeddings (``[instruction tokens | concept embeddings |
question tokens]``), not text, so only models that accept ``inputs_embeds`` can read it: the
in-process Hugging Face model, or a vLLM server started with ``--enable-prompt-embeds``. Hosted
APIs (OpenAI, Anthropic, ...) take text only; :func:`require_embedding_target` says so early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from ragpress.exceptions import ConfigurationError, RequestValidationError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ragpress.types import ArrayLike, Passage

__all__ = [
    "EMBEDDING_TARGETS",
    "EmbeddingBackend",
    "FinishReason",
    "GenerationChunk",
    "GenerationParams",
    "SoftPromptBuilder",
    "require_embedding_target",
]

FinishReason = Literal["stop", "length"]
EMBEDDING_TARGETS = ("local", "vllm")
"""Generation targets that can read prompt embeddings."""


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling parameters, with OpenAI's names and meanings."""

    max_tokens: int = 256
    temperature: float = 0.0
    """0 decodes greedily."""
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    """Strings that end generation (not included in the output)."""
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_tokens, bool) or not (
            isinstance(self.max_tokens, int) and self.max_tokens >= 1
        ):
            raise RequestValidationError(
                f"max_tokens={self.max_tokens!r} must be a whole number >= 1", param="max_tokens"
            )
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= 2):
            raise RequestValidationError(
                f"temperature={self.temperature} must be in [0, 2] (0 is greedy)",
                param="temperature",
            )
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise RequestValidationError(f"top_p={self.top_p} must be in (0, 1]", param="top_p")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        stop = tuple(self.stop)
        if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise RequestValidationError(
                f"stop={self.stop!r} must be up to 4 non-empty strings", param="stop"
            )
        object.__setattr__(self, "stop", stop)


@dataclass(frozen=True, slots=True)
class GenerationChunk:
    """A piece of streamed text; the last chunk of a stream carries the finish reason."""

    text: str
    finish_reason: FinishReason | None = None


@runtime_checkable
class EmbeddingBackend(Protocol):
    """A model that generates text from a prompt given as embeddings."""

    name: str
    """``local`` or ``vllm``."""

    def astream(
        self, prompt_embeds: ArrayLike, params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the completion of ``prompt_embeds`` (``(positions, width)``)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class SoftPromptBuilder(Protocol):
    """A compressor that frames its concept embeddings into a whole prompt (CompLLM)."""

    name: str

    def prompt_embeddings(
        self, question: str, concepts: ArrayLike, *, system: str | None = None
    ) -> ArrayLike:
        """``[instruction | concepts | question]`` as input embeddings, template applied."""
        ...

    def probe_prompt(self, question: str = ...) -> tuple[list[int], ArrayLike]:
        """A short templated prompt as token ids and as embeddings (backend checks)."""
        ...

    def full_prompt_embeddings(
        self, question: str, passages: Sequence[Passage], *, system: str | None = None
    ) -> ArrayLike:
        """The same prompt with the documents as plain tokens (no compression)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's tokenizer."""
        ...


def require_embedding_target(target: str, *, method: str = "compllm") -> None:
    """Fail early when a soft-prompt method is pointed at a model that takes text only.

    Args:
        target: Where generation would go: ``local``, ``vllm``, or an API kind such as
            ``openai`` or ``anthropic``.
        method: The compression method, for the message.

    Raises:
        ConfigurationError: ``target`` cannot read prompt embeddings.
    """
    if target in EMBEDDING_TARGETS:
        return
    raise ConfigurationError(
        f"method={method!r} produces soft embeddings, which only a model that accepts "
        f"input embeddings can read; the target {target!r} is an API model that takes text. "
        "Generate with the local Hugging Face backend ('local') or a vLLM server started with "
        "--enable-prompt-embeds ('vllm'), or pick a text compressor such as sentence_selection"
    )
