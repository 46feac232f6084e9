"""Image and PDF parts of chat requests, compressed by the visual policy (extra ``visual``).

:class:`ImagePartHandler` is the :class:`~ragpress.middleware.serving.parts.PartCompressor` the
proxy registers for ``image_url`` (OpenAI), ``image`` (Anthropic), ``file`` (OpenAI PDF) and
``document`` (Anthropic PDF) parts. For each part past the protected prefix it runs
:class:`~ragpress.compressors.visual.api.parts.ImagePartCompressor` for the request's model,
in a worker thread: a cheaper image, the OCR text when that is cheaper (the service then
compresses that text with the text method), or the part unchanged. Remote URLs are fetched
only from allow-listed hosts, through the injected fetcher; a fetch that fails leaves the part
as it was.

Results for inline images are cached (in the pipeline's cache) by the part's content, the model
family and the policy's settings, so a conversation that sends the same image again pays
neither the compression nor the OCR twice, and gets the same bytes (the provider's prefix cache
keeps hitting).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import anyio.to_thread

from ragpress.cache.keys import content_hash, fingerprint_of, make_key
from ragpress.exceptions import (
    ImageFetchError,
    MissingDependencyError,
    RequestValidationError,
)
from ragpress.middleware.serving.parts import PartResult

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from ragpress.compressors.visual.api.ocr import OcrEngine
    from ragpress.compressors.visual.api.parts import ImagePartCompressor
    from ragpress.middleware.pipeline.cache_policy import FailOpenCache
    from ragpress.middleware.serving.messages import PartRef
    from ragpress.middleware.serving.parts import PartRequest
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["IMAGE_PART_TYPES", "ImageFetchError", "ImagePartHandler", "resolve_image_model"]

logger = logging.getLogger("ragpress.proxy")

IMAGE_PART_TYPES = ("image_url", "image", "file", "document")
"""Content-part types the handler is registered for."""
_CACHE_VERSION = "1"
_TEXT_TYPES = frozenset({"text", "input_text"})
_LEFT_ALONE = frozenset({"unchanged", "url_not_fetched", "fetch_failed", "skipped"})
"""Routes after which the part goes upstream exactly as it came."""


@dataclass
class _Outcome:
    """One part's compression, as cached: plain JSON values only."""

    parts: list[dict[str, Any]]
    route: str
    tokens_before: int = 0
    tokens_after: int = 0
    documents: list[int] = field(default_factory=list)
    """Indexes into :attr:`parts` of the text the text compressors may shrink."""
    note: str | None = None

    def encode(self) -> bytes:
        return json.dumps(self.__dict__, ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> _Outcome:
        return cls(**json.loads(data))


def resolve_image_model(
    model: object, flavor: Flavor, *, default_model: str | None = None
) -> tuple[str | None, str | None]:
    """The model family images are costed for, and a note when it was not the request's own.

    Args:
        model: The request's ``model`` field.
        flavor: The route; on ``/v1/messages`` an unknown model is costed as Claude.
        default_model: Family for unknown models (a known name such as ``gpt-4o``).

    Returns:
        ``(family, note)``: the longest known family prefix of the model name (``gpt-4o``,
        ``gpt-4.1-mini``, ``claude``...), or ``None`` when images must be left alone.
    """
    from ragpress.compressors.visual.api.costs import MODEL_FAMILIES

    def family(name: object) -> str | None:
        if not isinstance(name, str):
            return None
        base = name.strip().lower().rsplit("/", 1)[-1]
        matches = [prefix for prefix in MODEL_FAMILIES if base.startswith(prefix)]
        return max(matches, key=len) if matches else None

    own = family(model)
    if own is not None:
        return own, None
    fallback = family(default_model) or ("claude" if flavor == "anthropic" else None)
    if fallback is not None:
        return fallback, f"model {model!r} has no image cost model; images costed as {fallback}"
    return None, (
        f"images left unchanged: model {model!r} has no image cost model; set "
        "RAGPRESS_PROXY__IMAGES__DEFAULT_MODEL to the family to cost them as (e.g. gpt-4o)"
    )


class ImagePartHandler:
    """Compresses the image and PDF parts of chat requests for the request's model.

    Args:
        allow_hosts: Hosts whose https image URLs may be fetched.
        fetcher: Fetches an allowed URL's bytes (in a worker thread); raises
            :class:`ImageFetchError` when it cannot. ``None``: URLs are never fetched.
        on_disallowed_url: ``"pass"`` leaves other URLs untouched; ``"reject"`` answers 400.
        ocr: Use the OCR route (RapidOCR) when text is cheaper than the image.
        max_bytes: Largest image or PDF accepted.
        budget_tokens: Most tokens one image may cost (``None``: the cheapest legible version).
        default_model: Cost images as this model family when the request's model is unknown.
        cache: Where results for inline images are kept (``None``: no caching).
        workers: Parts compressed at the same time (each in a worker thread).
        ocr_engine: Use this engine instead of building RapidOCR (tests share one).

    Raises:
        MissingDependencyError: The ``visual`` extra (or RapidOCR, with ``ocr``) is missing.
    """

    def __init__(
        self,
        *,
        allow_hosts: Collection[str] = (),
        fetcher: Callable[[str], bytes] | None = None,
        on_disallowed_url: Literal["pass", "reject"] = "pass",
        ocr: bool = True,
        max_bytes: int = 20 * 1024 * 1024,
        budget_tokens: int | None = None,
        default_model: str | None = None,
        cache: FailOpenCache | None = None,
        workers: int | None = None,
        ocr_engine: OcrEngine | None = None,
    ) -> None:
        import ragpress.compressors.visual.api.parts  # noqa: F401 - fail at start-up without the extra

        if ocr and ocr_engine is None:
            import importlib.util

            if importlib.util.find_spec("rapidocr") is None:
                raise MissingDependencyError("rapidocr", extra="visual")
            from ragpress.compressors.visual.api.ocr import RapidOcrEngine

            ocr_engine = RapidOcrEngine()
        self.allow_hosts = tuple(allow_hosts)
        self.fetcher = fetcher
        self.on_disallowed_url = on_disallowed_url
        self.ocr_engine = ocr_engine if ocr else None
        self.max_bytes = max_bytes
        self.budget_tokens = budget_tokens
        self.default_model = default_model
        self.cache = cache
        self.workers = workers or min(4, os.cpu_count() or 1)
        self._limiter: anyio.CapacityLimiter | None = None
        self._policies: dict[str, ImagePartCompressor] = {}
        self._fingerprint = fingerprint_of(
            {
                "version": _CACHE_VERSION,
                "ocr": self.ocr_engine.name if self.ocr_engine is not None else None,
                "budget_tokens": budget_tokens,
                "max_bytes": max_bytes,
            }
        )

    def policy(self, family: str) -> ImagePartCompressor:
        """The part policy for one model family (built once, shared by threads)."""
        policy = self._policies.get(family)
        if policy is None:
            from ragpress.compressors.visual.api.parts import ImagePartCompressor

            policy = ImagePartCompressor(
                family,
                allow_hosts=self.allow_hosts,
                fetcher=self.fetcher,
                ocr_engine=self.ocr_engine,
                on_disallowed_url=self.on_disallowed_url,
                max_bytes=self.max_bytes,
            )
            self._policies[family] = policy
        return policy

    async def compress_parts(
        self, parts: Sequence[PartRef], request: PartRequest
    ) -> list[PartResult]:
        """Compress ``parts`` for ``request.model``, rewriting the request body in place.

        Raises:
            RequestValidationError: A malformed part, an image over the size limit, or a URL
                refused by ``on_disallowed_url="reject"``.
        """
        family, note = resolve_image_model(
            request.model, request.flavor, default_model=self.default_model
        )
        if family is None:
            return [PartResult(ref, "unknown_model", note=note, changed=False) for ref in parts]
        policy = self.policy(family)
        keys = [self._key(family, ref.part) for ref in parts]
        cached = await self._cached(keys)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.workers)
        limiter = self._limiter

        async def run(ref: PartRef) -> _Outcome:
            return await anyio.to_thread.run_sync(
                _compress_part, policy, ref.part, ref.param, self.budget_tokens, limiter=limiter
            )

        todo = [i for i, outcome in enumerate(cached) if outcome is None]
        done = await asyncio.gather(*(run(parts[i]) for i in todo), return_exceptions=True)
        errors = [d for d in done if isinstance(d, BaseException)]
        if errors:
            raise next((e for e in errors if isinstance(e, RequestValidationError)), errors[0])
        outcomes = list(cached)
        fresh: dict[str, bytes] = {}
        for i, outcome in zip(todo, done, strict=True):
            assert isinstance(outcome, _Outcome)
            outcomes[i] = outcome
            key = keys[i]
            if key is not None and outcome.route not in ("url_not_fetched", "fetch_failed"):
                fresh[key] = outcome.encode()
        if fresh and self.cache is not None:
            await self.cache.set_many(fresh)
        results = []
        for ref, maybe in zip(parts, outcomes, strict=True):
            assert maybe is not None
            results.append(self._apply(ref, maybe, policy, note))
        return results

    def _apply(
        self, ref: PartRef, outcome: _Outcome, policy: ImagePartCompressor, note: str | None
    ) -> PartResult:
        changed = outcome.route not in _LEFT_ALONE
        if changed:
            ref.replace(outcome.parts)
        return PartResult(
            ref,
            outcome.route,
            outcome.tokens_before,
            outcome.tokens_after,
            documents=[outcome.parts[i] for i in outcome.documents],
            count_tokens=policy.text_tokens,
            note=outcome.note or note,
            changed=changed,
        )

    def _key(self, family: str, part: dict[str, Any]) -> str | None:
        """Cache key of an inline part (``None`` for URLs: their content can change)."""
        if self.cache is None or not _inline(part):
            return None
        digest = content_hash(json.dumps(part, sort_keys=True, separators=(",", ":")))
        return make_key("image-part", family, self._fingerprint, digest)

    async def _cached(self, keys: list[str | None]) -> list[_Outcome | None]:
        wanted = [k for k in keys if k is not None]
        if not wanted or self.cache is None:
            return [None] * len(keys)
        found = dict(zip(wanted, await self.cache.get_many(wanted), strict=True))
        out: list[_Outcome | None] = []
        for key in keys:
            blob = found.get(key) if key is not None else None
            try:
                out.append(_Outcome.decode(blob) if blob is not None else None)
            except (ValueError, TypeError):
                logger.warning("unreadable image cache entry %s; recomputing", key)
                out.append(None)
        return out


def _inline(part: dict[str, Any]) -> bool:
    """Whether the part carries its data (a data URL or a base64 source), not a remote URL."""
    kind = part.get("type")
    if kind == "image_url":
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        return isinstance(url, str) and url[:5].lower() == "data:"
    source = part.get("source")
    if kind in ("image", "document"):
        return isinstance(source, dict) and source.get("type") == "base64"
    return kind == "file"


def _compress_part(
    policy: ImagePartCompressor, part: dict[str, Any], param: str, budget: int | None
) -> _Outcome:
    """Compress one part (runs in a worker thread)."""
    if part.get("type") in ("file", "document"):
        return _compress_document(policy, part, param, budget)
    source = part.get("source")
    if part.get("type") == "image" and isinstance(source, dict) and source.get("type") == "file":
        return _Outcome([part], "skipped")  # Anthropic Files API: nothing here to compress
    try:
        result = policy.compress(part, budget_tokens=budget, param=param)
    except ImageFetchError as exc:
        return _Outcome([part], "fetch_failed", note=f"{param}: {exc}; sent as is")
    documents = [0] if result.route == "ocr" else []
    note = f"{param}: {result.reason}" if result.route == "url_not_fetched" else None
    return _Outcome(
        list(result.parts),
        result.route,
        result.tokens_before or 0,
        result.tokens_after or 0,
        documents,
        note,
    )


def _compress_document(
    policy: ImagePartCompressor, part: dict[str, Any], param: str, budget: int | None
) -> _Outcome:
    """A base64 PDF becomes one cheap part per page; other files are left alone."""
    from ragpress.compressors.visual.api.documents import compress_document_part
    from ragpress.compressors.visual.api.parts import BLANK_IMAGE_TEXT, text_part

    if not _is_pdf(part):
        return _Outcome([part], "skipped")
    citations = part.get("citations")
    if isinstance(citations, dict) and citations.get("enabled"):
        return _Outcome([part], "skipped", note=f"{param}: a PDF with citations is sent as is")
    result, _ = compress_document_part(part, policy, budget_tokens_per_page=budget, param=param)
    out = list(result.parts)
    label = _document_label(part)
    if label:  # the title/filename would be lost with the document block: keep it as text
        anthropic = part.get("type") == "document"
        out.insert(0, text_part("anthropic" if anthropic else "openai_chat", label))
    documents = [
        i
        for i, p in enumerate(out)
        if p.get("type") in _TEXT_TYPES and p.get("text") not in (label, BLANK_IMAGE_TEXT)
    ]
    return _Outcome(out, "pdf", result.tokens_before or 0, result.tokens_after or 0, documents)


def _is_pdf(part: dict[str, Any]) -> bool:
    if part.get("type") == "document":
        source = part.get("source")
        return (
            isinstance(source, dict)
            and source.get("type") == "base64"
            and source.get("media_type") == "application/pdf"
        )
    file = part.get("file")
    data = file.get("file_data") if isinstance(file, dict) else None
    return isinstance(data, str) and data.startswith("data:application/pdf;base64,")


def _document_label(part: dict[str, Any]) -> str:
    if part.get("type") == "document":
        fields = [part.get("title"), part.get("context")]
    else:
        file = part.get("file")
        fields = [file.get("filename") if isinstance(file, dict) else None]
    return "\n".join(f for f in fields if isinstance(f, str) and f.strip())
