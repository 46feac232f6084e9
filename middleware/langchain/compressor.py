"""A LangChain document compressor that runs a ragpress pipeline (extra ``langchain``).

Unlike compressors that rebuild documents from a compressed prompt (LangChain community's
``LLMLinguaCompressor`` splits the compressed text on blank lines and recovers documents from
reference tags, so a document whose tag was compressed away comes back with empty metadata, and
documents can be dropped or reordered), this one maps each input document to exactly one output
document, in order: ``id``, every ``metadata`` key and the document's own class are kept, and the
compression statistics are added under one key (``metadata["ragpress"]``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from pydantic import ConfigDict, PrivateAttr, model_validator

from ragpress.config import RagpressSettings
from ragpress.exceptions import MissingDependencyError, RequestValidationError
from ragpress.middleware.pipeline.core import Pipeline  # noqa: TC001 - a pydantic field type
from ragpress.middleware.pipeline.factory import build_pipeline
from ragpress.types import CompressionOptions, Passage

try:
    from langchain_core.callbacks import AsyncCallbackManager, CallbackManager
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.runnables import RunnableLambda
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "langchain_core", extra="langchain") from exc

if TYPE_CHECKING:
    from langchain_core.callbacks import Callbacks
    from langchain_core.runnables import Runnable, RunnableConfig

    from ragpress.types import CompressedPassage, CompressionResult

__all__ = ["DEFAULT_METADATA_KEY", "RagpressDocumentCompressor", "compression_stats"]

DEFAULT_METADATA_KEY = "ragpress"
_COMPRESSION_KEYS = ("method", "tokens_before", "tokens_after", "ratio", "spans", "relevance")


class RagpressDocumentCompressor(BaseDocumentCompressor):
    """Compress LangChain documents for a query with any ragpress method or chain.

    Each output document is the input document with ``page_content`` replaced by the
    compressed text and ``metadata[metadata_key]`` set to: ``method``, ``tokens_before``,
    ``tokens_after``, ``ratio`` (before/after; ``None`` when nothing was kept), ``spans``
    (``[start, end)`` character ranges of the input text that were kept, or ``None`` for
    compressors that rewrite) and ``relevance`` (the compressor's score, when it has one). Keys
    already under ``metadata_key`` (such as the retriever's ``retrieval_score``) are kept; the
    statistics of an earlier ragpress compression move to ``previous``.

    Example:
        >>> from langchain_classic.retrievers import ContextualCompressionRetriever
        >>> compressor = RagpressDocumentCompressor(target_ratio=3)            # doctest: +SKIP
        >>> retriever = ContextualCompressionRetriever(                          # doctest: +SKIP
        ...     base_compressor=compressor, base_retriever=my_retriever)
        >>> docs = retriever.invoke("who won the first nobel prize in physics")  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, use_attribute_docstrings=True)

    pipeline: Pipeline | None = None
    """The pipeline to run; when empty, one is built on first use from ``settings``."""
    settings: RagpressSettings | None = None
    """Settings for the pipeline built on first use (``RagpressSettings()`` when empty)."""
    method: str | None = None
    """Compressor or chain to build (``sentence_selection``, ``a+b``); overrides ``settings``."""
    target_ratio: float | Literal["auto"] | None = None
    """Budget as original/compressed tokens, or ``"auto"`` (as much as the evidence needs);
    unset budgets come from the pipeline's defaults."""
    min_ratio: float | None = None
    """With ``target_ratio="auto"``: the least compression (default 2)."""
    max_ratio: float | None = None
    """With ``target_ratio="auto"``: the most compression (default 20)."""
    rate: float | None = None
    """Budget as the fraction of tokens to keep."""
    target_tokens: int | None = None
    """Budget as a token count for all documents of a call together."""
    keep: tuple[str, ...] = ()
    """Strings that must survive compression."""
    drop_empty: bool = False
    """Leave out documents of which nothing was kept (by default they come back empty)."""
    metadata_key: str = DEFAULT_METADATA_KEY
    """The metadata key the statistics go under."""
    title_key: str | None = "title"
    """Metadata key holding a document's title, which compressors use as context."""
    include_spans: bool = True
    """Record the kept character spans (provenance) in the metadata."""

    _built: Pipeline | None = PrivateAttr(default=None)
    _build_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _options: CompressionOptions = PrivateAttr(default_factory=CompressionOptions)

    @model_validator(mode="after")
    def _check_budget(self) -> RagpressDocumentCompressor:
        self._options = CompressionOptions(
            target_ratio=self.target_ratio,
            rate=self.rate,
            target_tokens=self.target_tokens,
            keep=tuple(self.keep),
            min_ratio=self.min_ratio,
            max_ratio=self.max_ratio,
        )
        return self

    @property
    def options(self) -> CompressionOptions:
        """The budget this compressor asks for (unset fields use the pipeline's defaults)."""
        return self._options

    def get_pipeline(self) -> Pipeline:
        """The pipeline in use, building it from the settings on first call."""
        if self.pipeline is not None:
            return self.pipeline
        with self._build_lock:
            if self._built is None:
                settings = self.settings or RagpressSettings()
                if self.method:
                    compression = settings.compression.model_copy(
                        update={"method": self.method, "stages": [], "params": {}}
                    )
                    settings = settings.model_copy(update={"compression": compression})
                self._built = build_pipeline(settings)
            return self._built

    def close(self) -> None:
        """Close the pipeline this compressor built; one passed in is the caller's to close.

        A pipeline used from sync code keeps an event-loop thread until it is closed.
        """
        with self._build_lock:
            built, self._built = self._built, None
        if built is not None:
            built.close()

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Compress ``documents`` for ``query``: one output per input, in order.

        Raises:
            RequestValidationError: A document is not a ``Document`` or ``query`` is not text.
            CompressionError: The compressor failed (unless the pipeline passes through).
        """
        passages = self._passages(documents, query)
        if not passages:  # never let the pipeline's retriever fill an empty call
            return []
        manager = CallbackManager.configure(inheritable_callbacks=callbacks)
        run = manager.on_chain_start(
            None, {"query": query, "documents": list(documents)}, name=type(self).__name__
        )
        try:
            result = self.get_pipeline().compress(query or None, passages, self.options)
            output = self._documents(documents, result)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end({"documents": output, **_totals(result)})
        return output

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Async :meth:`compress_documents`; compute runs in a worker thread."""
        passages = self._passages(documents, query)
        if not passages:
            return []
        manager = AsyncCallbackManager.configure(inheritable_callbacks=callbacks)
        run = await manager.on_chain_start(
            None, {"query": query, "documents": list(documents)}, name=type(self).__name__
        )
        try:
            pipeline = self.pipeline
            if pipeline is None:  # building loads models: keep that off the event loop
                pipeline = await anyio.to_thread.run_sync(self.get_pipeline)
            result = await pipeline.acompress(query or None, passages, self.options)
            output = self._documents(documents, result)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end({"documents": output, **_totals(result)})
        return output

    def as_runnable(
        self,
        *,
        docs_key: str = "docs",
        question_key: str = "question",
        context_key: str = "context",
        stats_key: str = "compression",
        separator: str = "\n\n",
    ) -> Runnable[Mapping[str, Any], dict[str, Any]]:
        """A Runnable for LCEL chains: ``{"docs": retriever, "question": ...} | runnable``.

        It takes a mapping with the documents under ``docs_key`` and the question under
        ``question_key``, and returns the same mapping with the documents compressed, plus
        ``context_key`` (the non-empty compressed texts joined by ``separator``, ready for a
        prompt) and ``stats_key`` (``method``, ``tokens_before``, ``tokens_after``,
        ``tokens_saved``, ``ratio`` for the whole call). Callbacks and config flow through.

        Example:
            >>> chain = (                                                       # doctest: +SKIP
            ...     {"docs": retriever, "question": RunnablePassthrough()}
            ...     | compressor.as_runnable()
            ...     | RunnablePassthrough.assign(answer=prompt | llm | StrOutputParser())
            ... )
        """

        def unpack(inputs: Mapping[str, Any]) -> tuple[Sequence[Document], str]:
            if not isinstance(inputs, Mapping):
                raise RequestValidationError(
                    f"the compression step takes a mapping with {docs_key!r} and "
                    f"{question_key!r}, not {type(inputs).__name__}; put "
                    f'{{"{docs_key}": retriever, "{question_key}": RunnablePassthrough()}} '
                    "before it",
                    param=docs_key,
                )
            for key in (docs_key, question_key):
                if key not in inputs:
                    raise RequestValidationError(
                        f"the compression step's input has no {key!r} key (it has "
                        f"{sorted(map(str, inputs))}); pass the documents as {docs_key!r} and the "
                        f"question as {question_key!r}, or set docs_key=/question_key=",
                        param=key,
                    )
            question = inputs[question_key]
            if not isinstance(question, str):
                raise RequestValidationError(
                    f"inputs[{question_key!r}] must be a string, not {type(question).__name__}; "
                    "invoke the chain with the question itself, or select it with "
                    "operator.itemgetter",
                    param=question_key,
                )
            docs = inputs[docs_key]
            if not isinstance(docs, Sequence) or isinstance(docs, str):
                raise RequestValidationError(
                    f"inputs[{docs_key!r}] must be a list of Documents, not {type(docs).__name__}",
                    param=docs_key,
                )
            return docs, question

        def pack(inputs: Mapping[str, Any], compressed: Sequence[Document]) -> dict[str, Any]:
            key = self.metadata_key
            stats = [d.metadata.get(key, {}) for d in compressed]
            before = sum(int(s.get("tokens_before", 0)) for s in stats)
            after = sum(int(s.get("tokens_after", 0)) for s in stats)
            return {
                **inputs,
                docs_key: list(compressed),
                context_key: separator.join(d.page_content for d in compressed if d.page_content),
                stats_key: {
                    "method": stats[0].get("method") if stats else None,
                    "tokens_before": before,
                    "tokens_after": after,
                    "tokens_saved": before - after,
                    "ratio": _ratio(before, after),
                },
            }

        def compress(inputs: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
            docs, question = unpack(inputs)
            compressed = self.compress_documents(docs, question, callbacks=config.get("callbacks"))
            return pack(inputs, compressed)

        async def acompress(inputs: Mapping[str, Any], config: RunnableConfig) -> dict[str, Any]:
            docs, question = unpack(inputs)
            compressed = await self.acompress_documents(
                docs, question, callbacks=config.get("callbacks")
            )
            return pack(inputs, compressed)

        return RunnableLambda(compress, afunc=acompress, name="ragpress_compress")

    # -- conversion ------------------------------------------------------------------------

    def _passages(self, documents: Sequence[Document], query: str) -> list[Passage]:
        if query is not None and not isinstance(query, str):
            raise RequestValidationError(
                f"query must be a string, not {type(query).__name__}", param="query"
            )
        passages = []
        for i, doc in enumerate(documents):
            if not isinstance(doc, Document):
                raise RequestValidationError(
                    f"documents[{i}] must be a langchain_core Document, not {type(doc).__name__}",
                    param=f"documents[{i}]",
                )
            title = doc.metadata.get(self.title_key) if self.title_key else None
            passages.append(
                Passage(doc.page_content, title=title if isinstance(title, str) else None)
            )
        return passages

    def _documents(
        self, documents: Sequence[Document], result: CompressionResult
    ) -> list[Document]:
        out = []
        for doc, compressed in zip(documents, result.passages, strict=True):
            if self.drop_empty and not compressed.text:
                continue
            metadata = dict(doc.metadata)
            metadata[self.metadata_key] = compression_stats(
                compressed,
                result.method,
                previous=doc.metadata.get(self.metadata_key),
                include_spans=self.include_spans,
            )
            out.append(
                doc.model_copy(update={"page_content": compressed.text, "metadata": metadata})
            )
        return out


def compression_stats(
    compressed: CompressedPassage,
    method: str,
    *,
    previous: Any = None,
    include_spans: bool = True,
) -> dict[str, Any]:
    """The metadata entry for one compressed document (JSON-serialisable).

    Args:
        compressed: The pipeline's result for the document.
        method: The method or chain that ran.
        previous: What the document already had under the metadata key; its non-compression
            keys are kept, and an earlier compression's statistics move to ``previous``.
        include_spans: Record the kept character spans.
    """
    entry: dict[str, Any] = dict(previous) if isinstance(previous, Mapping) else {}
    if "method" in entry:
        earlier = {k: entry.pop(k) for k in (*_COMPRESSION_KEYS, "previous") if k in entry}
        entry["previous"] = earlier
    entry.update(
        method=method,
        tokens_before=compressed.tokens_before,
        tokens_after=compressed.tokens_after,
        ratio=_ratio(compressed.tokens_before, compressed.tokens_after),
    )
    if include_spans:
        spans = compressed.spans
        entry["spans"] = None if spans is None else [[start, end] for start, end in spans]
    if compressed.score is not None and math.isfinite(compressed.score):
        entry["relevance"] = compressed.score
    return entry


def _ratio(before: int, after: int) -> float | None:
    if after == 0:
        return None if before else 1.0
    return before / after


def _totals(result: CompressionResult) -> dict[str, Any]:
    return {
        "method": result.method,
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
    }
