"""A LangChain retriever over a ragpress vector index (extra ``langchain``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import ConfigDict, Field

from ragpress.exceptions import MissingDependencyError
from ragpress.middleware.langchain.compressor import DEFAULT_METADATA_KEY
from ragpress.types import Retriever  # noqa: TC001 - a pydantic field type

try:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "langchain_core", extra="langchain") from exc

if TYPE_CHECKING:
    from pathlib import Path

    from langchain_core.callbacks import (
        AsyncCallbackManagerForRetrieverRun,
        CallbackManagerForRetrieverRun,
    )

    from ragpress.types import Embedder, SearchHit

__all__ = ["RagpressRetriever"]


class RagpressRetriever(BaseRetriever):
    """Documents from a ragpress retriever (usually a FAISS index), best first.

    Each document has the passage's text, its id, its metadata plus ``title`` (when the passage
    has one and the metadata does not), and ``metadata["ragpress"]["retrieval_score"]`` (cosine
    similarity for the default index). A :class:`RagpressDocumentCompressor` downstream reads
    the title as context and adds its statistics beside the score.

    Example:
        >>> retriever = RagpressRetriever.from_index("my-index", k=5)        # doctest: +SKIP
        >>> retriever.invoke("how do refunds work?")                       # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, use_attribute_docstrings=True)

    retriever: Retriever
    """What searches: a :class:`~ragpress.retrieval.faiss.FaissRetriever` or any
    :class:`ragpress.types.Retriever`."""
    k: int = Field(4, gt=0)
    """Documents returned per query."""
    metadata_key: str = DEFAULT_METADATA_KEY
    """The metadata key the retrieval score goes under."""

    @classmethod
    def from_index(
        cls,
        directory: str | Path,
        embedder: Embedder | None = None,
        *,
        k: int = 4,
        device: str = "auto",
        **kwargs: Any,
    ) -> RagpressRetriever:
        """Open an index folder written by ``ragpress index build`` or ``FaissRetriever.save``.

        Args:
            directory: The index folder.
            embedder: The embedder it was built with; when ``None``, the model recorded in the
                index is loaded (the default all-MiniLM-L6-v2 loads offline).
            k: Documents per query.
            device: FAISS device (``auto``, ``cpu``, ``cuda:N``).
            **kwargs: Other fields of the retriever (``tags``, ``metadata``, ``metadata_key``).

        Raises:
            RetrievalError: The folder is not an index or was built with another embedder.
        """
        from ragpress.retrieval import load_embedder
        from ragpress.retrieval.faiss import FaissRetriever
        from ragpress.retrieval.index_format import read_index_config

        if embedder is None:
            embedder = load_embedder(read_index_config(directory)["embedder"].get("model"))
        index = FaissRetriever.load(directory, embedder, device=device)
        return cls(retriever=index, k=k, **kwargs)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [self._document(hit) for hit in self.retriever.search(query, self.k)]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = await anyio.to_thread.run_sync(self.retriever.search, query, self.k)
        return [self._document(hit) for hit in hits]

    def _document(self, hit: SearchHit) -> Document:
        passage = hit.passage
        metadata: dict[str, Any] = dict(passage.metadata)
        if passage.title is not None:
            metadata.setdefault("title", passage.title)
        entry = metadata.get(self.metadata_key)
        entry = dict(entry) if isinstance(entry, dict) else {}
        entry["retrieval_score"] = hit.score
        metadata[self.metadata_key] = entry
        return Document(page_content=passage.text, metadata=metadata, id=passage.id)
