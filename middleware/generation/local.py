"""The in-process backend: the compressor's own frozen LLM reads the soft prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread

from ragpress.middleware.generation.base import GenerationChunk, GenerationParams

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ragpress.compressors.compllm.compressor import CompLLMCompressor
    from ragpress.compressors.compllm.generation import EmbeddingGenerator
    from ragpress.types import ArrayLike

__all__ = ["LocalBackend"]


class LocalBackend:
    """Generates with a Hugging Face causal LM from ``inputs_embeds``, streaming tokens.

    Decoding runs in worker threads one step at a time, so the event loop stays free and
    compression requests can use the model between steps.

    Args:
        generator: Decoder bound to the CompLLM encoder's frozen LLM.
    """

    name = "local"

    def __init__(self, generator: EmbeddingGenerator) -> None:
        self.generator = generator

    @classmethod
    def from_compressor(cls, compressor: CompLLMCompressor) -> LocalBackend:
        """The backend that reads with ``compressor``'s own base model (adapter off)."""
        from ragpress.compressors.compllm.generation import EmbeddingGenerator

        return cls(EmbeddingGenerator(compressor.encoder))

    async def astream(
        self, prompt_embeds: ArrayLike, params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the completion of ``prompt_embeds``."""
        deltas = self.generator.stream(
            prompt_embeds,  # type: ignore[arg-type]
            max_new_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop,
            seed=params.seed,
        )
        try:
            while (delta := await anyio.to_thread.run_sync(next, deltas, None)) is not None:
                yield GenerationChunk(delta.text, delta.finish_reason)
        finally:
            deltas.close()  # frees the KV cache when the consumer stops early

    async def aclose(self) -> None:
        """Nothing to release; the model belongs to the compressor."""
