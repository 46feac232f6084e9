"""LangChain integration (extra ``langchain``, needs only ``langchain-core``).

* :class:`RagpressDocumentCompressor` — a ``BaseDocumentCompressor`` for
  ``ContextualCompressionRetriever`` and ``DocumentCompressorPipeline``, with
  :meth:`~RagpressDocumentCompressor.as_runnable` for LCEL chains;
* :class:`RagpressRetriever` — a ``BaseRetriever`` over a ragpress FAISS index.

The agent middleware, which needs the ``langchain`` package itself, is in
:mod:`ragpress.middleware.langchain.agents` (extra ``langchain-agents``).
"""

from __future__ import annotations

from ragpress.middleware.langchain.compressor import (
    DEFAULT_METADATA_KEY,
    RagpressDocumentCompressor,
    compression_stats,
)
from ragpress.middleware.langchain.retriever import RagpressRetriever

__all__ = [
    "DEFAULT_METADATA_KEY",
    "RagpressDocumentCompressor",
    "RagpressRetriever",
    "compression_stats",
]
