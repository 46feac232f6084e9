"""Compression in flight, without a web framework: request bodies in, request bodies out.

:class:`ChatService` decides, for one proxied request, whether anything is compressed and
rewrites the body; the proxy routes only move bytes. The fast path costs two substring
searches: a body with no ``ragpress`` field, no ``<context>`` marker, no document block and no
part a handler is registered for is forwarded as the very bytes the client sent, never parsed.

Beyond marked text:

* :class:`~ragpress.middleware.serving.parts.PartCompressor` handlers, keyed by content-part type
  (``image_url``, ``image``, ``file``, ``document``), receive the non-text parts past the
  protected prefix with their message's question (the visual compressors plug in here:
  :mod:`ragpress.middleware.serving.images`); text they produce (OCR) is then compressed like
  marked text;
* a method whose result is soft embeddings (CompLLM) cannot travel in a JSON chat request: when a
  soft-prompt backend is configured the request is answered by it
  (:mod:`ragpress.middleware.serving.soft`), otherwise it is refused with a 400 saying what to set.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ragpress.compressors.registry import SOFT_METHODS
from ragpress.exceptions import CompressionError, RequestValidationError
from ragpress.middleware.serving.context import find_marked, has_markers
from ragpress.middleware.serving.errors import HeaderTooLargeError
from ragpress.middleware.serving.messages import MessageGroup, Target, plan_compression
from ragpress.middleware.serving.parts import PartCompressor, PartRequest
from ragpress.middleware.serving.protocols.openai import RagpressOptions, parse_options

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping, Sequence

    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.middleware.pipeline.factory import PipelineSet
    from ragpress.middleware.serving.messages import PartRef
    from ragpress.middleware.serving.parts import PartResult
    from ragpress.middleware.serving.protocols.openai import Flavor
    from ragpress.middleware.serving.soft import SoftChat, SoftQuestion
    from ragpress.types import CompressionOptions, CompressionResult

__all__ = [
    "OPTIONS_HEADER",
    "ChatService",
    "NotRewritableError",
    "Outcome",
    "PartCompressor",
    "Prepared",
    "Summary",
    "dumps",
    "fail_open_or_raise",
    "loads",
    "rewrite",
    "within",
]

logger = logging.getLogger("ragpress.proxy")

OPTIONS_HEADER = "x-ragpress"
"""Request header carrying the same JSON object as the ``ragpress`` body field."""

T = TypeVar("T")

Outcome = Literal["compressed", "unmarked", "off", "failed-open", "soft"]
"""``soft``: the request is answered from a soft prompt (:attr:`Prepared.soft`), not forwarded."""


@dataclass
class Summary:
    """Totals of the compression done for one request.

    ``tokens_before``/``tokens_after`` count everything compressed: marked text (in the
    pipeline's tokenizer) plus image and PDF parts (in the target model's image tokens); the
    ``image_*`` fields hold the parts' share.
    """

    method: str = ""
    tokens_before: int = 0
    tokens_after: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    documents: int = 0
    notes: list[str] = field(default_factory=list)
    images: int = 0
    """Image and PDF parts handled (whatever their route)."""
    image_tokens_before: int = 0
    image_tokens_after: int = 0
    image_routes: dict[str, int] = field(default_factory=dict)
    """Parts per route: ``image``, ``ocr``, ``pdf``, ``unchanged``, ``url_not_fetched``..."""
    images_changed: int = 0
    """Parts that were replaced (the others go upstream as they came)."""

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

    def add_part(self, result: PartResult, tokens_after: int) -> None:
        """Count one handled part in (``tokens_after`` after its text was compressed)."""
        self.images += 1
        self.images_changed += result.changed
        self.image_routes[result.route] = self.image_routes.get(result.route, 0) + 1
        self.image_tokens_before += result.tokens_before
        self.image_tokens_after += tokens_after
        self.tokens_before += result.tokens_before
        self.tokens_after += tokens_after
        if result.note and result.note not in self.notes:
            self.notes.append(result.note)


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
    soft: SoftQuestion | None = None
    """For ``soft``: the question and documents to answer from a soft prompt."""

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
        if self.summary is not None and self.summary.images:
            s = self.summary
            routes = ",".join(f"{k}={v}" for k, v in sorted(s.image_routes.items()))
            out += [
                ("x-ragpress-images", str(s.images)),
                ("x-ragpress-image-routes", routes),
                ("x-ragpress-image-tokens-before", str(s.image_tokens_before)),
                ("x-ragpress-image-tokens-after", str(s.image_tokens_after)),
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
    """Compact JSON, non-ASCII kept as is (what the upstream receives after a rewrite).

    Always valid UTF-8: text holding a lone surrogate (JSON allows ``"\\ud800"``; UTF-8 cannot
    carry it) is written with every non-ASCII character escaped instead, which decodes to the
    very same strings.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        return json.dumps(data, separators=(",", ":")).encode()


class NotRewritableError(RequestValidationError):
    """A valid JSON body that Python cannot decode and encode again without changing it."""

    def __init__(self, what: str) -> None:
        self.what = what
        super().__init__(
            f"the request body holds {what}, which ragpress cannot rewrite without changing it; "
            "send it without the ragpress field (options can go in the x-ragpress header) or "
            "send a value Python's JSON can represent"
        )


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotRewritableError(f"the number {text[:40]} (beyond the range of a double)")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:  # more digits than sys.get_int_max_str_digits()
        raise NotRewritableError(
            f"the number {text[:20]}... ({len(text):,} digits, more than Python converts)"
        ) from None


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python's extension; the upstream answers it


def loads(body: bytes) -> Any:
    """Decode a request body for rewriting: strict JSON whose every value :func:`dumps` keeps.

    Raises:
        NotRewritableError: Valid JSON that would change when written again: a number beyond a
            double's range (``1e400`` would become ``Infinity``, which is not JSON), an integer
            too long for Python, or nesting deeper than the interpreter's recursion limit.
        ValueError: Not JSON (``NaN`` and ``Infinity`` included).
        UnicodeDecodeError: Not UTF-8.
    """
    try:
        return json.loads(body, parse_float=_float, parse_int=_int, parse_constant=_constant)
    except RecursionError:
        raise NotRewritableError("JSON nested too deeply to decode") from None


def rewrite(data: Any) -> bytes:
    """:func:`dumps` for a body :func:`loads` decoded.

    Raises:
        NotRewritableError: The body nests too deeply to encode again.
    """
    try:
        return dumps(data)
    except RecursionError:
        raise NotRewritableError("JSON nested too deeply to encode again") from None


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
        soft: Answers requests whose method emits soft embeddings (``None``: such requests are
            refused with a 400).
        max_options_header_bytes: Longest ``x-ragpress`` header accepted (longer: 431).
    """

    def __init__(
        self,
        pipelines: PipelineSet,
        *,
        compress_by_default: bool = True,
        fail_open: bool = True,
        timeout_seconds: float = 30.0,
        part_compressors: Mapping[str, PartCompressor] | None = None,
        soft: SoftChat | None = None,
        max_options_header_bytes: int = 8 * 1024,
    ) -> None:
        self.pipelines = pipelines
        self.max_options_header_bytes = max_options_header_bytes
        self.compress_by_default = compress_by_default
        self.fail_open = fail_open
        self.timeout_seconds = timeout_seconds
        self.part_compressors = dict(part_compressors or {})
        self.soft = soft
        self._part_needles = [f'"{kind}"'.encode() for kind in self.part_compressors]
        self._background: set[asyncio.Task[Any]] = set()

    async def prepare(self, body: bytes, *, flavor: Flavor, header: str | None = None) -> Prepared:
        """Decide what to compress in ``body`` and return the bytes to forward.

        Args:
            body: The request body as the client sent it.
            flavor: Which API the body speaks.
            header: The ``x-ragpress`` header, if the client sent one.

        Returns:
            What to forward, or, with outcome ``soft``, the question to answer from a soft
            prompt instead of forwarding.

        Raises:
            RequestValidationError: Bad ``ragpress`` options, an unknown method, a budget the
                ``keep`` strings exceed, or a body with a ``ragpress`` field that cannot be
                rewritten unchanged (:class:`NotRewritableError`) (HTTP 400, whatever the
                fail-open policy).
            HeaderTooLargeError: The ``x-ragpress`` header is over its limit (HTTP 431).
            CompressionError: Compression failed and ``fail_open`` is off.
        """
        if header is not None and len(header) > self.max_options_header_bytes:
            raise HeaderTooLargeError(
                f"the {OPTIONS_HEADER} header is {len(header):,} bytes, above the "
                f"{self.max_options_header_bytes:,}-byte limit; send the options in the body's "
                "ragpress field, or ask the operator to raise "
                "RAGPRESS_PROXY__MAX_OPTIONS_HEADER_BYTES",
                param=OPTIONS_HEADER,
            )
        header_options = parse_options(header, source=OPTIONS_HEADER) if header else None
        maybe_marked = (
            has_markers(body)
            or (flavor == "anthropic" and b'"document"' in body)
            or any(needle in body for needle in self._part_needles)
        )
        has_field = b'"ragpress"' in body
        if header_options is None and not maybe_marked and not has_field:
            return Prepared(body, "unmarked")
        try:
            data = loads(body)
        except NotRewritableError as exc:
            # Valid JSON that cannot be decoded and encoded again unchanged. Without a ragpress
            # field to remove, it goes upstream as it came (failing open); with one, it cannot.
            if has_field:
                raise
            return Prepared(body, "unmarked", notes=[f"body left as sent: {exc.what}"])
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
        unchanged = rewrite(data) if rewritten else body
        knobs = options or RagpressOptions()
        compress = self.compress_by_default if knobs.compress is None else knobs.compress
        images = self._images_wanted(knobs, compress)
        if not compress and not images:
            return Prepared(unchanged, "off")
        pipeline = self._pipeline(knobs.method)
        if compress and pipeline.output_kind == "embeddings":
            return self._soft(data, unchanged, flavor, knobs, pipeline.method)
        compression_options = knobs.to_compression_options(param_prefix="ragpress.")
        plan = plan_compression(data, flavor, query=knobs.query)
        groups = plan.groups if compress and pipeline.output_kind == "text" else []
        parts = (
            [p for p in plan.other_parts if str(p.part.get("type")) in self.part_compressors]
            if images
            else []
        )
        if not groups and not parts:
            return Prepared(unchanged, "unmarked", notes=plan.notes)
        request = PartRequest(data.get("model"), flavor, compression_options)
        started = time.perf_counter()
        try:
            summary = await self._with_timeout(
                self._apply(pipeline, groups, parts, compression_options, request)
            )
        except RequestValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the fail-open boundary; closed, it re-raises
            ms = (time.perf_counter() - started) * 1e3
            error = fail_open_or_raise(
                exc, fail_open=self.fail_open, then="forwarding uncompressed"
            )
            return Prepared(unchanged, "failed-open", ms=ms, error=error, notes=plan.notes)
        ms = (time.perf_counter() - started) * 1e3
        if summary.method == "passthrough":
            return Prepared(unchanged, "failed-open", summary=summary, ms=ms, notes=plan.notes)
        if not groups and not summary.images_changed:  # e.g. image URLs that were not fetched
            return Prepared(unchanged, "unmarked", summary=summary, ms=ms, notes=plan.notes)
        try:
            compressed = rewrite(data)
        except NotRewritableError as exc:  # too deep to encode again: send what came, if we may
            if rewritten:
                raise
            return Prepared(body, "failed-open", ms=ms, error=str(exc), notes=plan.notes)
        return Prepared(compressed, "compressed", summary=summary, ms=ms, notes=plan.notes)

    def _images_wanted(self, knobs: RagpressOptions, compress: bool) -> bool:
        """Whether image parts are compressed: ``ragpress.images``, else the text switch."""
        if knobs.images is None:
            return compress and bool(self.part_compressors)
        if knobs.images and not self.part_compressors:
            raise RequestValidationError(
                "ragpress.images=true, but this server does not compress images; drop the "
                "field, or ask the operator to set RAGPRESS_PROXY__IMAGES__ENABLED=true",
                param="ragpress.images",
            )
        return knobs.images

    def _pipeline(self, method: str | None) -> Pipeline:
        """The pipeline for ``ragpress.method``; a soft method without a backend says why."""
        try:
            return self.pipelines.get(method, param="ragpress.method")
        except RequestValidationError:
            if method in SOFT_METHODS and self.soft is None:
                raise RequestValidationError(
                    f"ragpress.method={method!r} produces soft embeddings, which only a model "
                    "that reads input embeddings can use, and this server forwards to an API "
                    f"that takes text; choose a text method ({self.pipelines.methods}), or ask "
                    "the operator to serve soft prompts (RAGPRESS_PROXY__SOFT__BACKEND=local or "
                    f"vllm, and {method} in RAGPRESS_PROXY__METHODS)",
                    param="ragpress.method",
                ) from None
            raise

    def _soft(
        self,
        data: dict[str, Any],
        unchanged: bytes,
        flavor: Flavor,
        knobs: RagpressOptions,
        method: str,
    ) -> Prepared:
        """Route a soft-method request to the soft-prompt service (or refuse it)."""
        if flavor == "openai" and self.soft is not None:
            question = self.soft.read(data, knobs, method=method)
            if question is None:
                return Prepared(unchanged, "unmarked")
            return Prepared(unchanged, "soft", soft=question)
        if not plan_compression(data, flavor).groups:
            return Prepared(unchanged, "unmarked")  # nothing to compress: forward as usual
        if self.soft is None:
            raise RequestValidationError(
                f"method {method!r} produces soft embeddings, which an OpenAI/Anthropic chat "
                "request cannot carry; choose a text method, or ask the operator to serve soft "
                "prompts (RAGPRESS_PROXY__SOFT__BACKEND=local or vllm)",
                param="ragpress.method",
            )
        raise RequestValidationError(
            f"method {method!r} answers from soft prompts on /v1/chat/completions only; "
            "send this request there, or choose a text method with ragpress.method",
            param="ragpress.method",
        )

    async def compress_groups(
        self, pipeline: Pipeline, groups: Sequence[MessageGroup], options: CompressionOptions
    ) -> Summary:
        """Compress each message group and write the results into the body (all or nothing)."""
        return await self._with_timeout(self._apply(pipeline, groups, [], options, None))

    async def _apply(
        self,
        pipeline: Pipeline,
        groups: Sequence[MessageGroup],
        parts: Sequence[PartRef],
        options: CompressionOptions,
        request: PartRequest | None,
    ) -> Summary:
        summary = Summary(method=pipeline.method if groups else "")
        handled = await self._compress_parts(parts, request) if request is not None else []
        # Text that parts turned into (OCR, PDF text layers) is compressed like marked text
        # (by a text method: soft embeddings cannot go into a chat request).
        produced = [
            MessageGroup(r.ref.message, [Target(doc, "text", None)], r.ref.query)
            for r in handled
            for doc in r.documents
            if pipeline.output_kind == "text"
        ]
        before_text = {id(doc): doc["text"] for r in handled for doc in r.documents}
        everything = [*groups, *produced]
        results = [
            await pipeline.acompress(group.query, group.passages(), options) for group in everything
        ]
        for result in results:
            if result.embeddings is not None:
                raise RequestValidationError(
                    f"method {result.method!r} produces soft embeddings, which an "
                    "OpenAI/Anthropic chat request cannot carry; choose a text method",
                    param="ragpress.method",
                )
        for group, result in zip(everything, results, strict=True):
            group.write([p.text for p in result.passages])
        for result in results[: len(groups)]:
            summary.add(result)
        if produced:
            summary.method = summary.method or pipeline.method
            summary.documents += len(produced)
            summary.cache_hits += sum(r.cache_hits for r in results[len(groups) :])
            summary.cache_misses += sum(r.cache_misses for r in results[len(groups) :])
        for r in handled:
            after = r.tokens_after
            if r.count_tokens is not None:
                for doc in r.documents:
                    after += r.count_tokens(doc["text"]) - r.count_tokens(before_text[id(doc)])
            summary.add_part(r, max(after, 0))
        if handled and not summary.method:
            summary.method = "image"
        return summary

    async def _compress_parts(
        self, parts: Sequence[PartRef], request: PartRequest
    ) -> list[PartResult]:
        """Hand each part to its handler (one call per handler, in request order)."""
        by_handler: dict[int, tuple[PartCompressor, list[PartRef]]] = {}
        for part in parts:
            handler = self.part_compressors[str(part.part.get("type"))]
            by_handler.setdefault(id(handler), (handler, []))[1].append(part)
        handled: list[PartResult] = []
        for handler, refs in by_handler.values():
            handled.extend(await handler.compress_parts(refs, request))
        return handled

    async def _with_timeout(self, work: Awaitable[Summary]) -> Summary:
        return await within(work, self.timeout_seconds, self._background)


def fail_open_or_raise(exc: Exception, *, fail_open: bool, then: str) -> str:
    """Apply the fail-open policy to a compression failure.

    Returns:
        The reason to report (``x-ragpress-error``), after logging it, when ``fail_open``.

    Raises:
        CompressionError: ``exc`` (or a wrapper saying what it was) when not ``fail_open``.
    """
    if not fail_open:
        if isinstance(exc, CompressionError):
            raise exc
        raise CompressionError(f"compression failed: {type(exc).__name__}: {exc}") from exc
    logger.warning(
        "compression failed; %s (fail_open)",
        then,
        exc_info=not isinstance(exc, TimeoutError),
        extra={"event": "compression_failed", "error": type(exc).__name__},
    )
    return f"{type(exc).__name__}: {exc}"


async def within(
    work: Awaitable[T], seconds: float, background: set[asyncio.Task[Any]], *, what: str = ""
) -> T:
    """``work``'s result, or :class:`TimeoutError` after ``seconds``.

    Work that overruns is not cancelled: it finishes in the background (kept in ``background``),
    filling the cache for the next request.
    """
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    background.add(task)
    task.add_done_callback(functools.partial(_finished_late, background))
    raise TimeoutError(
        f"{what or 'compression'} took longer than {seconds:g} s "
        "(RAGPRESS_PROXY__COMPRESSION_TIMEOUT_SECONDS)"
    )


def _finished_late(background: set[asyncio.Task[Any]], task: asyncio.Task[Any]) -> None:
    background.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.warning("late compression failed: %r", task.exception())


def question_of(text: str) -> str | None:
    """The text outside the ``<context>`` blocks of ``text``, or ``None`` when blank."""
    return find_marked(text).outside or None
