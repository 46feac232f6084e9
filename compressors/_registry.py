"""Registry of built-in compressors: name -> ``"module:Class"``, imported only when asked for."""

from __future__ import annotations

__all__ = ["COMPRESSORS", "SOFT_METHODS"]

COMPRESSORS: dict[str, str] = {
    "sentence_selection": "ragpress.compressors.sentence_selection:SentenceSelectionCompressor",
    "exit": "ragpress.compressors.exit:ExitCompressor",
    "compllm": "ragpress.compressors.compllm:CompLLMCompressor",
}
COMPRESSORS["llmlingua2"] = "ragpress.compressors.llmlingua2:LLMLingua2Compressor"

SOFT_METHODS: frozenset[str] = frozenset({"compllm"})
"""Registry names whose compressors emit soft embeddings (``output_kind == "embeddings"``),
known without importing them (a test keeps this in step with the classes)."""
