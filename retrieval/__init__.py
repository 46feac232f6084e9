"""Retrieval: embedders, document loading and chunking, and (extra ``faiss``) vector indexes.

Heavy classes live in their own modules: ``ragpress.retrieval.embedders``
(``SentenceTransformerEmbedder``) and ``ragpress.retrieval.faiss`` (``FaissRetriever``). The
pure-Python parts are ``ragpress.retrieval.chunking``, ``ragpress.retrieval.documents`` and
``ragpress.retrieval.index_format``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragpress.types import Embedder

__all__ = ["load_embedder"]


def load_embedder(model: str | None = None, /, **options: Any) -> Embedder:
    """Load a sentence-transformers embedder (extra ``embedders``).

    Args:
        model: Hub id or local folder; ``None`` is all-MiniLM-L6-v2, which loads offline.
        **options: Passed to :class:`~ragpress.retrieval.embedders.SentenceTransformerEmbedder`.
    """
    from ragpress.retrieval.embedders import DEFAULT_EMBEDDING_MODEL, SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(model or DEFAULT_EMBEDDING_MODEL, **options)
