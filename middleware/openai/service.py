"""Compression in flight, without a web framework: request bodies in, request bodies out.

:class:`ChatService` decides, for one proxied request, whether anything is compressed and
rewrites the body; the proxy routes only move bytes. The fast path costs two substring
searches: a body with no ``ragpress`` field, no ``<context>`` marker and no document block is
forwarded as the very bytes the client sent, never parsed.

Two seams are left for compressors that do not produce text:

* :class:`PartCompressor` handlers, keyed by content-part type (``image_url``, ``image``),
  receive the non-text parts that sit past the protected prefix (visual token pruning plugs
  in here);
* a compression result that carries ``embeddings`` (soft prompts, e.g. CompLLM) cannot travel
  in a JSON chat request, so it is refused with a clear error until an upstream that accepts
  ``prompt_embeds`` is wired in :meth:`ChatService._apply`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ragpress.exceptions import CompressionError, RequestValidationError
from ragpress.middleware.openai.context import find_marked, has_markers
from ragpress.middleware.openai.messages import plan_compression
from ragpress.middleware.openai.protocol import RagpressOptions, parse_options

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ragpress.middleware.openai.messages import MessageGroup, PartRef
    from ragpress.middleware.openai.protocol import Flavor
    from ragpress.middleware.pipeline import Pipeline
    from ragpress.middleware.wiring import PipelineSet
    from ragpress.types import CompressionOptions, CompressionResult

__all__ = [
    "OPTIONS_HEADER",
    "ChatService",
    "Outcome",
    "PartCompressor",
    "Prepared",
    "Summary",
    "dumps",
]

logger = logging.getLogger("ragpress.proxy")

OPTIONS_HEADER = "x-ragpress"
"""Request header carrying the same JSON object as the ``ragpress`` body field."""

Outcome = Literal["compressed", "unmarked", "off", "failed-open"]


class PartCompressor(Protocol):
    """Compresses non-text content parts (e.g. images) in place; registered by part type."""

    async def compress_parts(
        self, parts: Sequence[PartRef], query: str | None, options: CompressionOptions
    ) -> Summary:
        """Rewrite ``parts`` in place and say what was done."""
        ...


@dataclass
class Summary:
    """Totals of the compression done for one request."""

    method: str = ""
    tokens_before: int = 0
    tokens_after: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    documents: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Tokens before / after (1.0 when nothing was compressed)."""
        if not self.tokens_after:
            return float(self.tokens_before) if self.tokens_before else 1.0
        return self.tokens_before / self.tokens_after

    def add(self, result: CompressionResult) -> None:
        """Count one pipeline result in."""
        self.method = result.method
        self.tokens_before += result.tokens_before
        self.tokens_after += result.tokens_after
        self.cache_hits += result.cache_hits
        self.cache_misses += result.cache_misses
        self.documents += len(result.passages)
        self.notes.extend(result.notes)


@dataclass
class Prepared:
    """The request to forward, and what was done to it."""

    body: bytes
    outcome: Outcome
    summary: Summary | None = None
    ms: float = 0.0
    error: str | None = None
    """Why compression failed, for ``failed-open``."""
    notes: list[str] = field(default_factory=list)

    def headers(self) -> list[tuple[str, str]]:
        """Response headers that report what happened (``x-ragpress-*``)."""
        out: list[tuple[str, str]] = [("x-ragpress-compression", self.outcome)]
        if self.summary is not None and self.outcome == "compressed":
            s = self.summary
            out += [
                ("x-ragpress-method", s.method),
                ("x-ragpress-tokens-before", str(s.tokens_before)),
                ("x-ragpress-tokens-after", str(s.tokens_after)),
                ("x-ragpress-ratio", f"{s.ratio:.2f}"),
                ("x-ragpress-documents", str(s.documents)),
                ("x-ragpress-cache-hits", str(s.cache_hits)),
                ("x-ragpress-cache-misses", str(s.cache_misses)),
            ]
        if self.outcome != "unmarked" or self.ms:
            out.append(("x-ragpress-ms", f"{self.ms:.1f}"))
        if self.error:
            out.append(("x-ragpress-error", _header_safe(self.error)))
        notes = self.notes + (self.summary.notes if self.summary else [])
        if notes:
            out.append(("x-ragpress-notes", _header_safe("; ".join(notes))))
        return out


def dumps(data: Any) -> bytes:
    """Compact JSON, non-ASCII kept as is (what the upstream receives after a rewrite)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _header_safe(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ChatService:
    """Prepares chat requests (OpenAI and Anthropic) for the upstream.

    Args:
        pipelines: The compression methods the server offers.
        compress_by_default: Compress marked context when the request does not say.
        fail_open: On a compressor error or timeout, forward uncompressed instead of failing.
        timeout_seconds: Longest time compression may take; the work goes on in the
            background (warming the cache) while the request is forwarded uncompressed.
        part_compressors: Handlers for non-text content parts, by part type.
    """

    def __init__(
        self,
        pipelines: PipelineSet,
        *,
        compress_by_default: bool = True,
        fail_open: bool = True,
        timeout_seconds: float = 30.0,
        part_compressors: Mapping[str, PartCompressor] | None = None,
    ) -> None:
        self.pipelines = pipelines
        self.compress_by_default = compress_by_default
        self.fail_open = fail_open
        self.timeout_seconds = timeout_seconds
        self.part_compressors = dict(part_compressors or {})
        self._part_needles = [f'"{kind}"'.encode() for kind in self.part_compressors]
        self._background: set[asyncio.Task[Any]] = set()

    async def prepare(self, body: bytes, *, flavor: Flavor, header: str | None = None) -> Prepared:
        """Decide what to compress in ``body`` and return the bytes to forward.

        Args:
            body: The request body as the client sent it.
            flavor: Which API the body speaks.
            header: The ``x-ragpress`` header, if the client sent one.

        Raises:
            RequestValidationError: Bad ``ragpress`` options, an unknown method, or a budget
                the ``keep`` strings exceed (HTTP 400, whatever the fail-open policy).
            CompressionError: Compression failed and ``fail_open`` is off.
        """
        header_options = parse_options(header, source=OPTIONS_HEADER) if header else None
        maybe_marked = (
            has_markers(body)
            or (flavor == "anthropic" and b'"document"' in body)
            or any(needle in body for needle in self._part_needles)
        )
        if header_options is None and not maybe_marked and b'"ragpress"' not in body:
            return Prepared(body, "unmarked")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return Prepared(body, "unmarked")  # the upstream answers malformed JSON itself
        if not isinstance(data, dict):
            return Prepared(body, "unmarked")
        options = header_options
        rewritten = False
        if "ragpress" in data:
            raw = data.pop("ragpress")
            rewritten = True
            if raw is not None:
                options = parse_options(raw, source="ragpress").merged_over(header_options)
        unchanged = dumps(data) if rewritten else body
        compress = self.compress_by_default
        if options is not None and options.compress is not None:
            compress = options.compress
        if not compress:
            return Prepared(unchanged, "off")
        pipeline = self.pipelines.get(options.method if options else None, param="ragpress.method")
        knobs = options or RagpressOptions()
        compression_options = knobs.to_compression_options(param_prefix="ragpress.")
        plan = plan_compression(data, flavor, query=knobs.query)
        parts = [p for p in plan.other_parts if str(p.part.get("type")) in self.part_compressors]
        if not plan.groups and not parts:
            return Prepared(unchanged, "unmarked", notes=plan.notes)
        started = time.perf_counter()
        try:
            summary = await self._with_timeout(
                self._apply(pipeline, plan.groups, parts, compression_options)
            )
        except RequestValidationError:
            raise
        except Exception as exc:
            ms = (time.perf_counter() - started) * 1e3
            if not self.fail_open:
                if isinstance(exc, CompressionError):
                    raise
                raise CompressionError(f"compression failed: {type(exc).__name__}: {exc}") from exc
            logger.warning(
                "compression failed; forwarding uncompressed (fail_open)",
                exc_info=not isinstance(exc, TimeoutError),
                extra={"event": "compression_failed", "error": type(exc).__name__},
            )
            return Prepared(
                unchanged,
                "failed-open",
                ms=ms,
                error=f"{type(exc).__name__}: {exc}",
                notes=plan.notes,
            )
        ms = (time.perf_counter() - started) * 1e3
        if summary.method == "passthrough":
            return Prepared(unchanged, "failed-open", summary=summary, ms=ms, notes=plan.notes)
        return Prepared(dumps(data), "compressed", summary=summary, ms=ms, notes=plan.notes)

    async def compress_groups(
        self, pipeline: Pipeline, groups: Sequence[MessageGroup], options: CompressionOptions
    ) -> Summary:
        """Compress each message group and write the results into the body (all or nothing)."""
        return await self._with_timeout(self._apply(pipeline, groups, [], options))

    async def _apply(
        self,
        pipeline: Pipeline,
        groups: Sequence[MessageGroup],
        parts: Sequence[PartRef],
        options: CompressionOptions,
    ) -> Summary:
        summary = Summary(method=pipeline.method)
        results = [
            await pipeline.acompress(group.query, group.passages(), options) for group in groups
        ]
        for result in results:
            if result.embeddings is not None:
                # A soft prompt cannot travel in a chat request's JSON; a prompt_embeds-capable
                # upstream (vLLM /v1/completions) is where such methods would be forwarded.
                raise RequestValidationError(
                    f"method {result.method!r} produces soft embeddings, which an "
                    "OpenAI/Anthropic chat request cannot carry; choose a text compressor",
                    param="ragpress.method",
                )
            summary.add(result)
        for group, result in zip(groups, results, strict=True):
            group.write([p.text for p in result.passages])
        by_type: dict[str, list[PartRef]] = {}
        for part in parts:
            by_type.setdefault(str(part.part.get("type")), []).append(part)
        for kind, refs in by_type.items():
            done = await self.part_compressors[kind].compress_parts(refs, None, options)
            summary.tokens_before += done.tokens_before
            summary.tokens_after += done.tokens_after
            summary.notes.extend(done.notes)
        return summary

    async def _with_timeout(self, work: Any) -> Summary:
        task: asyncio.Task[Summary] = asyncio.ensure_future(work)
        done, _ = await asyncio.wait({task}, timeout=self.timeout_seconds)
        if task in done:
            return task.result()
        # Let it finish in the background: it fills the cache for the next request.
        self._background.add(task)
        task.add_done_callback(self._finished_late)
        raise TimeoutError(
            f"compression took longer than {self.timeout_seconds:g} s "
            "(RAGPRESS_PROXY__COMPRESSION_TIMEOUT_SECONDS)"
        )

    def _finished_late(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("late compression failed: %r", task.exception())


def question_of(text: str) -> str | None:
    """The text outside the ``<context>`` blocks of ``text``, or ``None`` when blank."""
    return find_marked(text).outside or None
