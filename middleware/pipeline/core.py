"""The pipeline: optional retrieval, then a chain of compressors (coarse to fine), with caching.

Compute is synchronous and runs in worker threads; cache and retrieval I/O are awaited on the
event loop. Per passage, each compressor's query-independent analysis is looked up in the cache
first (one batched read), only the misses are analysed, and those are written back (one batched
write). A chain feeds each stage's output to the next and maps the provenance spans back to the
original passages.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.from_thread
import anyio.to_thread

from ragpress._defaults import DEFAULT_MAX_DOCUMENT_CHARS
from ragpress.cache.keys import make_key
from ragpress.exceptions import (
    ConfigurationError,
    MissingDependencyError,
    RequestValidationError,
)
from ragpress.provenance import compose_spans
from ragpress.types import CompressedPassage, CompressionOptions, CompressionResult, Passage

if TYPE_CHECKING:
    from collections.abc import Sequence
    from contextlib import AbstractContextManager

    from anyio.from_thread import BlockingPortal

    from ragpress.compressors.base import BaseCompressor
    from ragpress.middleware.pipeline.cache_policy import FailOpenCache
    from ragpress.types import Retriever, TokenCounter

__all__ = [
    "DEFAULT_MAX_DOCUMENT_CHARS",
    "Pipeline",
    "PipelineRequest",
    "Stage",
    "passthrough_result",
]

logger = logging.getLogger("ragpress.pipeline")


@dataclass(frozen=True, slots=True)
class Stage:
    """One compressor in the chain."""

    compressor: BaseCompressor
    options: CompressionOptions | None = None
    """This stage's own budget (coarse stages); ``None`` uses the request's budget."""


@dataclass(frozen=True, slots=True)
class PipelineRequest:
    """One independent compression call of :meth:`Pipeline.acompress_many`."""

    query: str | None
    passages: Sequence[Passage] = ()
    options: CompressionOptions | None = None


@dataclass
class _Trace:
    timings_ms: dict[str, float] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0
    notes: list[str] = field(default_factory=list)

    def add_time(self, name: str, started: float) -> None:
        self.timings_ms[name] = (
            self.timings_ms.get(name, 0.0) + (time.perf_counter() - started) * 1e3
        )


class Pipeline:
    """Retrieve (optionally), then compress through a chain of stages.

    Args:
        stages: Compressors, coarse to fine; at least one.
        cache: Where per-passage analyses are kept (``None``: no caching).
        defaults: Budget and ``keep`` strings for calls that do not give their own.
        token_counter: Counts tokens for passthrough results (when compression is skipped).
        retriever: Used when a call gives a query but no passages.
        top_k: Passages to retrieve.
        on_error: ``"fail"`` raises compressor errors; ``"passthrough"`` returns the passages
            uncompressed with a note saying why. Invalid requests always raise.
        max_document_chars: Longest passage accepted.

    Example:
        >>> pipeline = build_pipeline(RagpressSettings())            # doctest: +SKIP
        >>> result = pipeline.compress("who won?", [Passage("...")])  # doctest: +SKIP
        >>> result.ratio, result.context()                            # doctest: +SKIP
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        cache: FailOpenCache | None = None,
        defaults: CompressionOptions | None = None,
        token_counter: TokenCounter | None = None,
        retriever: Retriever | None = None,
        top_k: int = 8,
        on_error: Literal["fail", "passthrough"] = "fail",
        max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS,
    ) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        for stage in stages[:-1]:
            if stage.compressor.output_kind != "text":
                raise ConfigurationError(
                    f"{stage.compressor.name!r} emits {stage.compressor.output_kind}, not text, so "
                    "no stage can follow it; put it last in the chain (e.g. "
                    f"sentence_selection+{stage.compressor.name})"
                )
        self.stages = tuple(stages)
        self.cache = cache
        self.defaults = defaults or CompressionOptions()
        self.token_counter = token_counter
        self.retriever = retriever
        self.top_k = top_k
        self.on_error = on_error
        self.max_document_chars = max_document_chars
        self._portal: BlockingPortal | None = None
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal_lock = threading.Lock()

    @property
    def output_kind(self) -> Literal["text", "embeddings"]:
        """``"embeddings"`` when the last stage emits soft embeddings instead of text."""
        return self.stages[-1].compressor.output_kind

    @property
    def method(self) -> str:
        """Name of the chain, e.g. ``sentence_selection`` or ``exit+llmlingua2``."""
        return "+".join(s.compressor.name for s in self.stages)

    async def acompress(
        self,
        query: str | None,
        passages: Sequence[Passage] = (),
        options: CompressionOptions | None = None,
    ) -> CompressionResult:
        """Compress ``passages`` (or retrieved ones) for ``query``.

        Args:
            query: The question; ``None`` or blank for query-agnostic compression.
            passages: Documents in prompt order. Empty with a retriever configured: retrieve.
            options: Budget for this call; unset fields come from the pipeline's defaults.

        Returns:
            One compressed passage per input passage, in order, with statistics.

        Raises:
            RequestValidationError: Unusable input (the message names the field).
            BudgetError: The budget cannot hold the ``keep`` strings.
            CompressionError: A compressor failed and ``on_error`` is ``"fail"``.
        """
        (outcome,) = await self.acompress_many([PipelineRequest(query, passages, options)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage] = (),
        options: CompressionOptions | None = None,
    ) -> CompressionResult:
        """Blocking version of :meth:`acompress`, for scripts and sync frameworks.

        Runs on a private event loop thread that lives as long as the pipeline. Do not call it
        from a coroutine; await :meth:`acompress` there.
        """
        return self._blocking_portal().call(
            functools.partial(self.acompress, query, passages, options)
        )

    async def acompress_many(
        self, requests: Sequence[PipelineRequest]
    ) -> list[CompressionResult | Exception]:
        """Compress independent requests together, analysing all their passages at once.

        This is the pipeline's one path: :meth:`acompress` is a batch of one. Each stage's
        per-passage analysis (the model pass) runs over the passages of every
        request in one :meth:`~ragpress.compressors.base.BaseCompressor.analyze_units` call,
        after one batched cache read, so a model sees large batches even when each request has
        few passages. Selection then runs request by request. Each request gets its result, or
        the exception compressing it alone raises: one bad request never fails the others.

        Args:
            requests: The calls, in any number; results come back in the same order.

        Returns:
            One :class:`CompressionResult` or exception per request.
        """
        outcomes: list[Exception | None] = [None] * len(requests)  # a failed request's error
        traces = [_Trace() for _ in requests]
        originals: dict[int, list[Passage]] = {}
        resolved: dict[int, CompressionOptions] = {}
        for i, request in enumerate(requests):
            try:
                resolved[i] = (request.options or CompressionOptions()).resolve(self.defaults)
                originals[i] = await self._request_passages(
                    request.query, request.passages, traces[i]
                )
            except Exception as exc:  # noqa: BLE001 - returned to the caller, per request
                outcomes[i] = exc
        current = dict(originals)
        results: dict[int, list[CompressionResult]] = {i: [] for i in originals}
        for index, stage in enumerate(self.stages):
            alive = [i for i in originals if outcomes[i] is None]
            if not alive:
                break
            compressor = stage.compressor
            label = "" if len(self.stages) == 1 else f"{compressor.name}."
            try:
                analyses = await self._analyses(
                    compressor, [current[i] for i in alive], [traces[i] for i in alive], label
                )
            except Exception as exc:  # noqa: BLE001 - returned to the caller, per request
                if len(alive) == 1:
                    outcomes[alive[0]] = exc
                    continue
                # Each request then analyses its own passages and meets its own error.
                logger.warning(
                    "joint analysis of %d requests failed; analysing each alone", len(alive)
                )
                analyses = [None] * len(alive)
            last = index == len(self.stages) - 1
            jobs = [
                (
                    requests[i].query,
                    current[i],
                    self._stage_options(
                        compressor,
                        resolved[i]
                        if last or stage.options is None
                        else stage.options.resolve(CompressionOptions(keep=resolved[i].keep)),
                        traces[i],
                    ),
                    found,
                )
                for i, found in zip(alive, analyses, strict=True)
            ]
            started = time.perf_counter()
            stage_out = await anyio.to_thread.run_sync(_compress_each, compressor, jobs)
            for i, out in zip(alive, stage_out, strict=True):
                traces[i].add_time(f"{label}compress", started)
                if isinstance(out, Exception):
                    outcomes[i] = out
                    continue
                results[i].append(out)
                current[i] = [
                    Passage(cp.text, title=cp.title, id=cp.id, metadata=cp.metadata)
                    for cp in out.passages
                ]
        final: list[CompressionResult | Exception] = []
        for i in range(len(requests)):
            outcome = outcomes[i]
            if outcome is None:
                final.append(self._finish(_compose(originals[i], results[i]), traces[i]))
            elif (
                isinstance(outcome, RequestValidationError | MissingDependencyError)
                or i not in originals
                or self.on_error != "passthrough"
            ):
                final.append(outcome)
            else:
                logger.error(
                    "compression failed; passing the documents through uncompressed",
                    exc_info=outcome,
                )
                traces[i].notes.append(
                    f"compression failed ({type(outcome).__name__}: {outcome}); passed through"
                )
                passthrough = await anyio.to_thread.run_sync(self._passthrough, originals[i])
                final.append(self._finish(passthrough, traces[i]))
        return final

    async def aclose(self) -> None:
        """Close the cache and release the compressors."""
        if self.cache is not None:
            await self.cache.aclose()
        for stage in self.stages:
            stage.compressor.close()

    def close(self) -> None:
        """Blocking version of :meth:`aclose`; also stops the private event loop thread."""
        self._blocking_portal().call(self.aclose)
        with self._portal_lock:
            if self._portal_cm is not None:
                self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None

    # -- internals -----------------------------------------------------------------------------

    def _blocking_portal(self) -> BlockingPortal:
        with self._portal_lock:
            if self._portal is None:
                self._portal_cm = anyio.from_thread.start_blocking_portal()
                self._portal = self._portal_cm.__enter__()
            return self._portal

    async def _request_passages(
        self, query: str | None, passages: Sequence[Passage], trace: _Trace
    ) -> list[Passage]:
        """The passages of one request: given or retrieved, validated, empty ones noted."""
        _check_unicode(query, "query")
        if not passages and self.retriever is not None and query:
            started = time.perf_counter()
            hits = await anyio.to_thread.run_sync(self.retriever.search, query, self.top_k)
            trace.add_time("retrieve", started)
            passages = [hit.passage for hit in hits]
        validated = self._validated(passages)
        for i, passage in enumerate(validated):
            if not passage.text.strip():
                trace.notes.append(f"docs[{i}] is empty or whitespace; it is returned empty")
        return validated

    @staticmethod
    def _finish(result: CompressionResult, trace: _Trace) -> CompressionResult:
        return CompressionResult(
            passages=result.passages,
            method=result.method,
            tokens_before=result.tokens_before,
            tokens_after=result.tokens_after,
            timings_ms=trace.timings_ms,
            cache_hits=trace.hits,
            cache_misses=trace.misses,
            notes=(*trace.notes, *result.notes),
            embeddings=result.embeddings,
        )

    async def _analyses(
        self,
        compressor: BaseCompressor,
        groups: list[list[Passage]],
        traces: list[_Trace],
        label: str,
    ) -> list[list[Any] | None]:
        """Per request, its passages' analyses, or ``None``: the compressor caches nothing."""
        if compressor.analysis_artefact is None or not any(groups):
            return [None] * len(groups)
        return list(await self._analyses_many(compressor, groups, traces, label))

    @staticmethod
    def _stage_options(
        compressor: BaseCompressor, options: CompressionOptions, trace: _Trace
    ) -> CompressionOptions:
        """``options`` as ``compressor`` takes them: an auto budget it cannot size is fixed."""
        if not options.adaptive or compressor.adaptive_budget:
            return options
        fixed = options.fixed()
        trace.notes.append(
            f"{compressor.name} cannot size its budget to the evidence; target_ratio=auto "
            f"compressed at min_ratio={fixed.target_ratio:g}"
        )
        return fixed

    def _validated(self, passages: Sequence[Passage]) -> list[Passage]:
        out = list(passages)
        for i, passage in enumerate(out):
            if not isinstance(passage, Passage):
                raise RequestValidationError(
                    f"docs[{i}] must be a Passage, not {type(passage).__name__}",
                    param=f"docs[{i}]",
                )
            _check_unicode(passage.text, f"docs[{i}].text")
            _check_unicode(passage.title, f"docs[{i}].title")
            if len(passage.text) > self.max_document_chars:
                raise RequestValidationError(
                    f"docs[{i}].text has {len(passage.text):,} characters, more than the limit of "
                    f"{self.max_document_chars:,}; split the document into chunks, or raise the "
                    "limit (--max-document-chars, RAGPRESS_COMPRESSION__MAX_DOCUMENT_CHARS)",
                    param=f"docs[{i}].text",
                )
        return out

    async def _analyses_many(
        self,
        compressor: BaseCompressor,
        groups: list[list[Passage]],
        traces: list[_Trace],
        label: str,
    ) -> list[list[Any]]:
        """Per request, the analyses of its passages, from one cache read and one model pass.

        A unit is a passage, or a segment of one (:meth:`BaseCompressor.analysis_units`). Every
        unit of every request is read from the cache in one batch (when there is a cache), the
        misses are analysed together (each distinct unit once, one ``analyze_units`` call) and
        written back in one batch. A unit counts as a miss for the first request that needs it
        and is not cached, and as a hit for any later request, as if they ran one by one.
        """
        assert compressor.analysis_artefact is not None
        artefact, owner, fingerprint = (
            compressor.analysis_artefact,
            compressor.name,
            compressor.fingerprint(),
        )
        flat = [p for group in groups for p in group]
        units = await anyio.to_thread.run_sync(compressor.analysis_units, flat)
        keys = [[make_key(artefact, owner, fingerprint, u.key) for u in pu] for pu in units]
        items: dict[str, Any] = {}
        for passage_units, passage_keys in zip(units, keys, strict=True):
            for unit, key in zip(passage_units, passage_keys, strict=True):
                items.setdefault(key, unit.item)
        unique = list(items)
        found = await self._cache_read(compressor, items, traces, label)
        missing = [key for key in unique if key not in found]
        if self.cache is not None:
            seen = set(found)
            for group_keys, trace in zip(_split(keys, groups), traces, strict=True):
                mine = list(dict.fromkeys(k for passage_keys in group_keys for k in passage_keys))
                trace.hits += sum(key in seen for key in mine)
                trace.misses += sum(key not in seen for key in mine)
                seen.update(mine)
        if missing:
            started = time.perf_counter()
            fresh = await anyio.to_thread.run_sync(
                compressor.analyze_units, [items[key] for key in missing]
            )
            for trace in traces:
                trace.add_time(f"{label}analyze", started)
            found.update(zip(missing, fresh, strict=True))
            await self._cache_write(compressor, {key: found[key] for key in missing}, traces, label)
        joined = [
            compressor.join_analyses(passage, passage_units, [found[k] for k in passage_keys])
            for passage, passage_units, passage_keys in zip(flat, units, keys, strict=True)
        ]
        return _split(joined, groups)

    async def _cache_read(
        self,
        compressor: BaseCompressor,
        items: dict[str, Any],
        traces: list[_Trace],
        label: str,
    ) -> dict[str, Any]:
        """The usable analyses the cache holds for the units ``items`` (key to unit item).

        An entry that does not decode, or that the compressor's
        :meth:`~ragpress.compressors.base.BaseCompressor.check_analysis` refuses for its unit
        (wrong shapes, spans outside the text, impossible token counts, non-finite numbers), is
        a miss: logged, counted as rejected, and recomputed. It never reaches the output.
        """
        cache = self.cache
        keys = list(items)
        if cache is None or not keys:
            return {}
        started = time.perf_counter()
        blobs = dict(zip(keys, await cache.get_many(keys), strict=True))
        for trace in traces:
            trace.add_time(f"{label}cache_get", started)
        stored = {key: blob for key, blob in blobs.items() if blob is not None}
        if not stored:
            return {}

        def decode() -> tuple[dict[str, Any], list[tuple[str, str]]]:
            found: dict[str, Any] = {}
            refused: list[tuple[str, str]] = []
            for key, blob in stored.items():
                try:
                    analysis = compressor.decode_analysis(blob)
                    compressor.check_analysis(items[key], analysis)
                except Exception as exc:  # noqa: BLE001 - a bad entry is a miss, never a failure
                    refused.append((key, f"{type(exc).__name__}: {exc}"))
                else:
                    found[key] = analysis
            return found, refused

        found, refused = await anyio.to_thread.run_sync(decode)  # checks cost compute
        for key, reason in refused:
            cache.reject(key, reason)
        return found

    async def _cache_write(
        self,
        compressor: BaseCompressor,
        fresh: dict[str, Any],
        traces: list[_Trace],
        label: str,
    ) -> None:
        """Store freshly computed analyses (serialising off the event loop)."""
        if self.cache is None:
            return
        started = time.perf_counter()
        encoded = await anyio.to_thread.run_sync(  # serialising is compute (and GPU syncs)
            lambda: {key: compressor.encode_analysis(value) for key, value in fresh.items()}
        )
        await self.cache.set_many(encoded)
        for trace in traces:
            trace.add_time(f"{label}cache_set", started)

    def _passthrough(self, passages: list[Passage]) -> CompressionResult:
        counter = self.token_counter
        counts = counter.count_many([p.text for p in passages]) if counter else [0] * len(passages)
        return passthrough_result(passages, counts)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(text: str | None, param: str) -> None:
    """Refuse lone surrogates (JSON's ``"\\ud800"``): not text any tokenizer can encode."""
    if text is None or text.isascii():
        return
    found = _SURROGATE.search(text)
    if found is not None:
        raise RequestValidationError(
            f"{param} holds a lone surrogate (U+{ord(found.group()):04X} at character "
            f"{found.start()}), which is not Unicode text; fix the encoding that produced it",
            param=param,
        )


def passthrough_result(passages: Sequence[Passage], counts: Sequence[int]) -> CompressionResult:
    """``passages`` as they are (method ``passthrough``), with their token ``counts``."""
    return CompressionResult(
        passages=tuple(
            CompressedPassage(p, p.text, ((0, len(p.text)),) if p.text else (), n, n)
            for p, n in zip(passages, counts, strict=True)
        ),
        method="passthrough",
        tokens_before=sum(counts),
        tokens_after=sum(counts),
    )


def _split(flat: list[Any], groups: list[list[Passage]]) -> list[list[Any]]:
    """Cut a flat per-passage list back into one list per request."""
    out: list[list[Any]] = []
    offset = 0
    for group in groups:
        out.append(flat[offset : offset + len(group)])
        offset += len(group)
    return out


def _compress_each(
    compressor: BaseCompressor,
    jobs: list[tuple[str | None, list[Passage], CompressionOptions, list[Any] | None]],
) -> list[CompressionResult | Exception]:
    """Run one stage's selection for each request; an exception is that request's result."""
    out: list[CompressionResult | Exception] = []
    for query, passages, options, analyses in jobs:
        try:
            out.append(compressor.compress(query, passages, options, analyses=analyses))
        except Exception as exc:  # noqa: BLE001 - per-request boundary, returned to the caller
            out.append(exc)
    return out


def _compose(originals: list[Passage], results: list[CompressionResult]) -> CompressionResult:
    """Fold a chain's results into one over the original passages."""
    if len(results) == 1:
        return results[0]
    first, last = results[0], results[-1]
    passages = []
    for i, original in enumerate(originals):
        spans = first.passages[i].spans
        for result in results[1:]:
            inner = result.passages[i].spans
            spans = (
                None
                if spans is None or inner is None
                else compose_spans(original.text, spans, inner)
            )
        final = last.passages[i]
        passages.append(
            CompressedPassage(
                source=original,
                text=final.text,
                spans=spans,
                tokens_before=first.passages[i].tokens_before,
                tokens_after=final.tokens_after,
                score=final.score,
            )
        )
    return CompressionResult(
        passages=tuple(passages),
        method="+".join(r.method for r in results),
        tokens_before=first.tokens_before,
        tokens_after=last.tokens_after,
        notes=tuple(n for r in results for n in r.notes),
        embeddings=last.embeddings,
    )
