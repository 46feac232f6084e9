"""Compress documents into a soft prompt and generate from it: the call the proxy makes.

:class:`SoftPromptService` ties a pipeline whose last stage emits concept embeddings (CompLLM) to
an :class:`~ragpress.middleware.generation.base.EmbeddingBackend`. For each request it runs the
pipeline (per-segment cache lookups, only new segments compressed), frames the embeddings with
the chat template and the question, and streams the model's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import anyio.to_thread

from ragpress.exceptions import CompressionError, ConfigurationError, RequestValidationError
from ragpress.middleware.generation.base import (
    GenerationChunk,
    GenerationParams,
    SoftPromptBuilder,
    require_embedding_target,
)
from ragpress.middleware.pipeline.core import passthrough_result

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    import httpx2

    from ragpress.middleware.generation.base import EmbeddingBackend, FinishReason
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import ArrayLike, CompressionOptions, CompressionResult, Passage

__all__ = ["SoftGeneration", "SoftPrompt", "SoftPromptService", "build_embedding_backend"]


@dataclass(frozen=True, slots=True)
class SoftPrompt:
    """A prompt ready for an embedding backend, with the compression that made it."""

    embeddings: ArrayLike
    """``(positions, width)``: instruction tokens, concept embeddings, question tokens."""
    compression: CompressionResult
    """Token counts, cache hits and timings of the compression."""

    @property
    def positions(self) -> int:
        """Sequence positions the prompt occupies (what the model is billed for)."""
        return int(self.embeddings.shape[0])


@dataclass(frozen=True, slots=True)
class SoftGeneration:
    """A whole (non-streamed) answer."""

    text: str
    finish_reason: FinishReason
    prompt: SoftPrompt


class SoftPromptService:
    """Answer questions over documents through soft compression.

    Args:
        pipeline: Its last stage must emit embeddings (``method="compllm"``).
        backend: Where generation runs (``LocalBackend`` or ``VLLMBackend``).

    Raises:
        ConfigurationError: The pipeline emits text, or its compressor cannot frame prompts.

    Example:
        >>> pipeline = build_pipeline(settings)                        # method=compllm
        >>> service = SoftPromptService(pipeline, build_embedding_backend(
        ...     "vllm", compressor=pipeline.stages[-1].compressor,
        ...     url="http://127.0.0.1:8000/v1"))                        # doctest: +SKIP
        >>> prompt = await service.aprepare("Who won?", passages)      # doctest: +SKIP
        >>> async for chunk in service.astream(prompt):                # doctest: +SKIP
        ...     print(chunk.text, end="")
    """

    def __init__(self, pipeline: Pipeline, backend: EmbeddingBackend) -> None:
        if pipeline.output_kind != "embeddings":
            raise ConfigurationError(
                f"SoftPromptService needs a pipeline that ends in a soft compressor such as "
                f"compllm; {pipeline.method!r} emits text, so send its context to the model as "
                "text instead"
            )
        compressor = pipeline.stages[-1].compressor
        if not isinstance(compressor, SoftPromptBuilder):
            raise ConfigurationError(
                f"compressor {compressor.name!r} emits embeddings but cannot frame them into a "
                "prompt (it lacks prompt_embeddings())"
            )
        require_embedding_target(backend.name, method=compressor.name)
        self.pipeline = pipeline
        self.backend = backend
        self.builder: SoftPromptBuilder = compressor

    async def averify(self) -> None:
        """Start-up check that the backend reads our embeddings as it reads token ids.

        For vLLM this compares greedy output from a short prompt's token ids with output from
        its embeddings (model mismatch, embedding scale); the local backend is the compressor's
        own model and needs no check. Call it once before serving.

        Raises:
            ConfigurationError: The backend reads the embeddings differently.
            UpstreamError: The backend cannot be reached.
        """
        check = getattr(self.backend, "acheck_embedding_parity", None)
        if check is None:
            return
        ids, embeddings = await anyio.to_thread.run_sync(self.builder.probe_prompt)
        await check(ids, embeddings)

    async def aprepare(
        self,
        question: str,
        passages: Sequence[Passage],
        *,
        system: str | None = None,
        options: CompressionOptions | None = None,
    ) -> SoftPrompt:
        """Compress ``passages`` and frame them with ``question`` (and ``system``).

        Raises:
            RequestValidationError: Unusable input (the message names the field).
            CompressionError: The pipeline returned no embeddings (e.g. it passed the documents
                through after an error).
        """
        if not isinstance(question, str) or not question.strip():
            raise RequestValidationError(
                f"question={question!r} is empty; soft prompts answer a question about the "
                "documents, so give the user's question",
                param="question",
            )
        result = await self.pipeline.acompress(question, passages, options)
        concepts = result.embeddings
        if concepts is None:
            raise CompressionError(
                f"soft compression returned no embeddings ({'; '.join(result.notes)}); "
                "see the server log"
            )
        embeddings = await anyio.to_thread.run_sync(
            lambda: self.builder.prompt_embeddings(question, concepts, system=system)
        )
        return SoftPrompt(embeddings, result)

    async def aprepare_uncompressed(
        self, question: str, passages: Sequence[Passage], *, system: str | None = None
    ) -> SoftPrompt:
        """The same prompt with the documents as plain tokens, for when compression fails.

        The answer then costs the whole context, but it comes from the same model and template.
        """
        builder = self.builder

        def build() -> SoftPrompt:
            embeddings = builder.full_prompt_embeddings(question, passages, system=system)
            counts = [builder.count_tokens(p.text) for p in passages]
            return SoftPrompt(embeddings, passthrough_result(passages, counts))

        return await anyio.to_thread.run_sync(build)

    async def astream(
        self, prompt: SoftPrompt, params: GenerationParams | None = None
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the answer to a prepared prompt; the last chunk has the finish reason."""
        async for chunk in self.backend.astream(prompt.embeddings, params or GenerationParams()):
            yield chunk

    async def agenerate(
        self,
        question: str,
        passages: Sequence[Passage],
        params: GenerationParams | None = None,
        *,
        system: str | None = None,
    ) -> SoftGeneration:
        """Prepare, generate and collect the whole answer."""
        prompt = await self.aprepare(question, passages, system=system)
        parts: list[str] = []
        finish: FinishReason = "stop"
        async for chunk in self.astream(prompt, params):
            parts.append(chunk.text)
            finish = chunk.finish_reason or finish
        return SoftGeneration("".join(parts), finish, prompt)

    async def aclose(self) -> None:
        """Close the backend (the pipeline belongs to the caller)."""
        await self.backend.aclose()


def build_embedding_backend(
    target: Literal["local", "vllm"] | str,
    *,
    compressor: object,
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout_seconds: float = 120.0,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> EmbeddingBackend:
    """The backend for ``target``; what the proxy's wiring calls with its upstream settings.

    Args:
        target: ``local`` (in-process, the compressor's own model), ``vllm``, or anything else
            (``openai``, ``anthropic``...), which is refused.
        compressor: The pipeline's CompLLM compressor.
        url: vLLM's OpenAI base URL (``http://host:8000/v1``).
        model: vLLM's served model name; defaults to the compressor's base model id.
        api_key: vLLM API key, if it has one.
        timeout_seconds: vLLM request timeout.
        transport: ``httpx2`` transport for tests.

    Raises:
        ConfigurationError: An API target, or vLLM without a URL.
    """
    require_embedding_target(target)
    from ragpress.compressors.compllm.compressor import CompLLMCompressor

    if not isinstance(compressor, CompLLMCompressor):
        raise ConfigurationError(
            f"an embedding backend needs the compllm compressor, not {type(compressor).__name__}"
        )
    if target == "local":
        from ragpress.middleware.generation.local import LocalBackend

        return LocalBackend.from_compressor(compressor)
    if not url:
        raise ConfigurationError("the vllm target needs the server's URL, e.g. http://host:8000/v1")
    from ragpress.middleware.generation.vllm import VLLMBackend

    return VLLMBackend(
        url,
        model or compressor.model,
        api_key=api_key,
        timeout_seconds=timeout_seconds,
        transport=transport,
    )
