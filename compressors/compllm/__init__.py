"""CompLLM soft compression: segments of context become cached concept embeddings.

Needs the ``compllm`` extra (torch, transformers, peft, safetensors). Modules:

* :mod:`~ragpress.compressors.compllm.compressor` — :class:`CompLLMCompressor`, the registry entry;
* :mod:`~ragpress.compressors.compllm.model` — :class:`ConceptEncoder`: LLM + LoRA + projection;
* :mod:`~ragpress.compressors.compllm.segments` — segmenting and the cache value format;
* :mod:`~ragpress.compressors.compllm.prompt` — the chat-templated frame around the context;
* :mod:`~ragpress.compressors.compllm.generation` — greedy/sampled decoding from embeddings;
* :mod:`~ragpress.compressors.compllm.training` — distillation (``ragpress train-soft``);
* :mod:`~ragpress.compressors.compllm.synthetic` — random-weight checkpoints for tests and benches.
"""

from __future__ import annotations

from ragpress.compressors.compllm.compressor import (
    CompLLMCompressor,
    CompLLMStats,
    PassageConcepts,
)
from ragpress.compressors.compllm.config import CompLLMConfig
from ragpress.compressors.compllm.model import ConceptEncoder

__all__ = [
    "CompLLMCompressor",
    "CompLLMConfig",
    "CompLLMStats",
    "ConceptEncoder",
    "PassageConcepts",
]
