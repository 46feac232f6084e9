"""Registry of built-in compressors: name -> ``"module:Class"``, imported only when asked for."""

from __future__ import annotations

__all__ = ["COMPRESSORS"]

COMPRESSORS: dict[str, str] = {
    "sentence_selection": "ragpress.compressors.sentence_selection:SentenceSelectionCompressor",
    "exit": "ragpress.compressors.exit:ExitCompressor",
    "compllm": "ragpress.compressors.compllm:CompLLMCompressor",
}
COMPRESSORS["llmlingua2"] = "ragpress.compressors.llmlingua2:LLMLingua2Compressor"
