"""Generation from soft prompts (CompLLM concept embeddings).

Light to import; the backends load their heavy dependencies (torch, transformers, httpx2) from
their own modules: :mod:`ragpress.middleware.generation.local` (in-process Hugging Face model)
and :mod:`ragpress.middleware.generation.vllm` (vLLM ``prompt_embeds``).
"""

from __future__ import annotations

from ragpress.middleware.generation.base import (
    EMBEDDING_TARGETS,
    EmbeddingBackend,
    GenerationChunk,
    GenerationParams,
    SoftPromptBuilder,
    require_embedding_target,
)
from ragpress.middleware.generation.service import (
    SoftGeneration,
    SoftPrompt,
    SoftPromptService,
    build_embedding_backend,
)

__all__ = [
    "EMBEDDING_TARGETS",
    "EmbeddingBackend",
    "GenerationChunk",
    "GenerationParams",
    "SoftGeneration",
    "SoftPrompt",
    "SoftPromptBuilder",
    "SoftPromptService",
    "build_embedding_backend",
    "require_embedding_target",
]
