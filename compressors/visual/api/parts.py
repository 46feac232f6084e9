"""Policy for image parts of chat messages: what the proxy calls on each OpenAI/Anthropic image.

:class:`ImagePartCompressor` takes one content part in any of the three wire shapes:

* OpenAI Chat Completions: ``{"type": "image_url", "image_url": {"url": ..., "detail": ...}}``
* OpenAI Responses: ``{"type": "input_image", "image_url": ..., "detail": ...}``
* Anthropic Messages: ``{"type": "image", "source": {"type": "base64" | "url", ...}}``

and returns the part(s) to send instead, in the same shape, plus the numbers. Images arrive as
``data:`` URLs (or Anthropic base64 sources), which are compressed; ``https`` URLs are fetched
only when their host is on the allow-list, and then only through the injected ``fetcher`` —
nothing is ever fetched blindly. A URL that is not allowed is passed through untouched (the
provider fetches it) or refused, as configured.

Routes: ``"image"`` (a cheaper image), ``"ocr"`` (text was cheaper: the part becomes a text part,
and the caller should run it through the text compressors), ``"blank"`` (a blank image becomes
a short text marker), ``"unchanged"`` (nothing cheaper), ``"url_not_fetched"``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ragpress.compressors.visual.api.image import ImageCompressionResult, ImageCompressor
from ragpress.compressors.visual.api.layout import decode_image
from ragpress.compressors.visual.api.ocr import OcrDecision, ocr_is_cheaper, read_page
from ragpress.exceptions import ConfigurationError, RequestValidationError
from ragpress.tokens import get_token_counter

if TYPE_CHECKING:
    from ragpress.compressors.visual.api.costs import Detail
    from ragpress.compressors.visual.api.ocr import OcrEngine

__all__ = [
    "BLANK_IMAGE_TEXT",
    "DEFAULT_MAX_IMAGE_BYTES",
    "ImagePartCompressor",
    "ImagePartResult",
    "Route",
    "Shape",
    "compress_image_part",
    "decode_base64",
    "host_allowed",
    "text_part",
]

Route = Literal["image", "ocr", "blank", "unchanged", "url_not_fetched", "pdf"]
Shape = Literal["openai_chat", "openai_responses", "anthropic"]
"""The wire format of a content part: OpenAI Chat Completions, OpenAI Responses, Anthropic."""
_IMAGE_TYPE: dict[str, str] = {
    "openai_chat": "image_url",
    "openai_responses": "input_image",
    "anthropic": "image",
}
Fetcher = Callable[[str], bytes]
"""Fetches an allow-listed URL's bytes; the proxy injects one (with its own timeouts)."""

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
BLANK_IMAGE_TEXT = "[blank image removed]"
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*),", re.I)
# Anthropic counts tokens with its own tokenizer, which yields more tokens than OpenAI's
# o200k on English text; counting with cl100k and adding a fifth keeps the OCR rule conservative.
_NON_OPENAI_TEXT_MARGIN = 1.2


@dataclass(frozen=True, slots=True)
class ImagePartResult:
    """The replacement part(s) and what the policy did."""

    parts: tuple[dict[str, Any], ...]
    """Parts to send instead of the input part (one part; the input itself when unchanged)."""
    route: Route
    reason: str
    tokens_before: int | None
    """Image tokens of the input part (``None`` when its bytes were not available)."""
    tokens_after: int | None
    """Tokens of the replacement (text tokens on the OCR route)."""
    text: str | None = None
    """The OCR text on the ``"ocr"`` route, for the text compressors."""
    image: ImageCompressionResult | None = None
    ocr: OcrDecision | None = None


def host_allowed(host: str, allow_hosts: Collection[str]) -> bool:
    """Whether ``host`` matches the allow-list.

    ``"example.com"`` allows that host only; ``"*.example.com"`` or ``".example.com"`` allow its
    subdomains (not the bare domain). Matching is case-insensitive and exact otherwise.
    """
    host = host.lower().rstrip(".")
    for entry in allow_hosts:
        pattern = entry.lower().rstrip(".")
        if pattern.startswith(("*.", ".")):
            suffix = pattern[pattern.index(".") :]
            if host.endswith(suffix) and len(host) > len(suffix):
                return True
        elif host == pattern:
            return True
    return False


class ImagePartCompressor:
    """Compresses image content parts for one target model (build once, call per part).

    Args:
        model: Target API model, e.g. ``"gpt-4o"`` or ``"claude-sonnet-4-5"``.
        allow_hosts: Hosts whose ``https`` image URLs may be fetched (see :func:`host_allowed`).
        fetcher: Fetches an allowed URL; without one, URLs are never fetched.
        ocr_engine: Enables the OCR route (e.g. :class:`~.ocr.RapidOcrEngine`).
        compressor: The image compressor; by default ``ImageCompressor(model)``.
        on_disallowed_url: ``"pass"`` sends a URL that may not be fetched on untouched;
            ``"reject"`` raises :class:`~ragpress.exceptions.RequestValidationError`.
        max_bytes: Largest image accepted, encoded.

    Example:
        >>> parts = ImagePartCompressor("gpt-4o")  # doctest: +SKIP
        >>> parts.compress(message["content"][1], param="messages[0].content[1]")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        *,
        allow_hosts: Collection[str] = (),
        fetcher: Fetcher | None = None,
        ocr_engine: OcrEngine | None = None,
        compressor: ImageCompressor | None = None,
        on_disallowed_url: Literal["pass", "reject"] = "pass",
        max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    ) -> None:
        if isinstance(allow_hosts, str):
            raise ConfigurationError(
                f"allow_hosts must be a list of host names, not the string {allow_hosts!r}; "
                f"write allow_hosts=[{allow_hosts!r}]"
            )
        if on_disallowed_url not in ("pass", "reject"):
            raise ConfigurationError(f"on_disallowed_url={on_disallowed_url!r}: 'pass' or 'reject'")
        self.model = model
        self.compressor = compressor or ImageCompressor(model)
        self.allow_hosts = frozenset(allow_hosts)
        self.fetcher = fetcher
        self.ocr_engine = ocr_engine
        self.on_disallowed_url = on_disallowed_url
        self.max_bytes = max_bytes
        self._openai = self.compressor.cost_model.provider == "openai"

    def compress(
        self,
        part: Mapping[str, Any],
        *,
        budget_tokens: int | None = None,
        param: str = "image",
    ) -> ImagePartResult:
        """Compress one image content part.

        Args:
            part: The content part as received (a JSON object).
            budget_tokens: Most tokens the image may cost; ``None`` for the cheapest legible.
            param: Path of the part in the request, used in error messages
                (e.g. ``"messages[0].content[1]"``).

        Raises:
            RequestValidationError: The part is malformed, its data is not a supported image,
                or its URL is refused.
        """
        shape, url, detail, data = _read_part(part, param)
        if data is None:
            assert url is not None
            data = self._fetch(url, param)
            if data is None:
                host = urlsplit(url).hostname or "?"
                return ImagePartResult(
                    (dict(part),),
                    "url_not_fetched",
                    f"host {host!r} is not in allow_hosts; sent as is",
                    None,
                    None,
                )
        return self.compress_bytes(
            data, shape=shape, part=part, detail=detail, budget_tokens=budget_tokens, param=param
        )

    def compress_bytes(
        self,
        data: bytes,
        *,
        shape: Shape,
        part: Mapping[str, Any] | None = None,
        detail: Detail = "auto",
        budget_tokens: int | None = None,
        param: str = "image",
        allow_ocr: bool = True,
    ) -> ImagePartResult:
        """Compress encoded image bytes into a part of the given wire ``shape``.

        Args:
            data: The encoded image.
            shape: ``"openai_chat"``, ``"openai_responses"`` or ``"anthropic"``.
            part: The original part, when there is one: returned as is when nothing is cheaper,
                and its extra keys (``cache_control``) are kept. Without it (a rendered PDF
                page) an image part is always built.
            detail: The ``detail`` the caller asked for.
            budget_tokens: Most tokens the image may cost.
            param: Field name used in error messages.
            allow_ocr: Allow the OCR route (when an engine is configured).
        """
        if len(data) > self.max_bytes:
            raise RequestValidationError(
                f"{param} is {len(data)} bytes, above the {self.max_bytes}-byte limit; "
                "send a smaller image",
                param=param,
            )
        result = self.compressor.compress(
            data, budget_tokens=budget_tokens, detail=detail, param=param
        )
        if result.blank:
            blank_part = text_part(shape, BLANK_IMAGE_TEXT, part)
            return ImagePartResult(
                (blank_part,),
                "blank",
                "the image is blank",
                result.tokens_before,
                self.text_tokens(BLANK_IMAGE_TEXT),
                image=result,
            )
        decision = self._ocr(data, result, param) if allow_ocr else None
        if decision is not None and decision[0].use_text:
            ocr, text = decision
            return ImagePartResult(
                (text_part(shape, text, part),),
                "ocr",
                ocr.reason,
                result.tokens_before,
                ocr.text_tokens,
                text=text,
                image=result,
                ocr=ocr,
            )
        checked = decision[0] if decision else None
        if not result.changed and part is not None:
            return ImagePartResult(
                (dict(part),),
                "unchanged",
                "no cheaper legible version",
                result.tokens_before,
                result.tokens_after,
                image=result,
                ocr=checked,
            )
        new_part = _image_part(shape, part or {"type": _IMAGE_TYPE[shape]}, result)
        reason = ", ".join(result.steps) or "re-encoded"
        return ImagePartResult(
            (new_part,),
            "image",
            reason,
            result.tokens_before,
            result.tokens_after,
            image=result,
            ocr=checked,
        )

    def _fetch(self, url: str, param: str) -> bytes | None:
        """Bytes of an allowed URL; ``None`` when it is not to be fetched and may pass."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http"):
            raise RequestValidationError(
                f"{param} has a URL with scheme {parts.scheme!r}; send a data: URL or an https URL",
                param=param,
            )
        allowed = (
            parts.scheme == "https"
            and parts.hostname is not None
            and parts.username is None
            and host_allowed(parts.hostname, self.allow_hosts)
        )
        if allowed and self.fetcher is not None:
            return self.fetcher(url)
        if self.on_disallowed_url == "reject":
            raise RequestValidationError(
                f"{param} points to {parts.hostname!r}, which is not an allowed https image "
                f"host (allowed: {sorted(self.allow_hosts)}); inline the image as a data: URL",
                param=param,
            )
        return None

    def _ocr(
        self, data: bytes, result: ImageCompressionResult, param: str
    ) -> tuple[OcrDecision, str] | None:
        """Run the OCR route on text-like images; ``None`` when it does not apply."""
        if self.ocr_engine is None or result.x_height_px is None:
            return None
        page = read_page(decode_image(data, param=param), self.ocr_engine)
        text_tokens = self.text_tokens(page.text)
        decision = ocr_is_cheaper(page, text_tokens=text_tokens, image_tokens=result.tokens_after)
        return decision, page.text

    def text_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the target model (o200k for OpenAI, cl100k + 20% otherwise)."""
        if self._openai:
            try:
                return get_token_counter(self.model).count(text)
            except ConfigurationError:
                return get_token_counter("o200k_base").count(text)
        return math.ceil(get_token_counter("cl100k_base").count(text) * _NON_OPENAI_TEXT_MARGIN)


def compress_image_part(
    part: Mapping[str, Any],
    *,
    model: str,
    budget_tokens: int | None = None,
    allow_hosts: Collection[str] = (),
    fetcher: Fetcher | None = None,
    ocr_engine: OcrEngine | None = None,
    param: str = "image",
) -> ImagePartResult:
    """One-shot :meth:`ImagePartCompressor.compress`; build the class to reuse it across parts."""
    compressor = ImagePartCompressor(
        model, allow_hosts=allow_hosts, fetcher=fetcher, ocr_engine=ocr_engine
    )
    return compressor.compress(part, budget_tokens=budget_tokens, param=param)


def _read_part(
    part: Mapping[str, Any], param: str
) -> tuple[Shape, str | None, Detail, bytes | None]:
    """``(shape, url, detail, data)``: ``data`` is ``None`` for remote URLs.

    The declared media type is checked to be an image type; the bytes decide the rest.
    """
    if not isinstance(part, Mapping):
        raise RequestValidationError(f"{param} must be a JSON object", param=param)
    kind = part.get("type")
    if kind == "image_url":
        inner = part.get("image_url")
        inner = {"url": inner} if isinstance(inner, str) else inner
        if not isinstance(inner, Mapping) or not isinstance(inner.get("url"), str):
            raise RequestValidationError(
                f'{param}.image_url must be {{"url": "data:image/png;base64,..."}}',
                param=f"{param}.image_url",
            )
        detail = _detail(inner.get("detail"), f"{param}.image_url.detail")
        url, data = _from_url(inner["url"], f"{param}.image_url.url")
        return "openai_chat", url, detail, data
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise RequestValidationError(
                f"{param}.image_url must be a URL string (file_id images are not supported)",
                param=f"{param}.image_url",
            )
        detail = _detail(part.get("detail"), f"{param}.detail")
        remote, data = _from_url(url, f"{param}.image_url")
        return "openai_responses", remote, detail, data
    if kind == "image":
        source = part.get("source")
        if isinstance(source, Mapping) and source.get("type") == "base64":
            media_type = source.get("media_type")
            data = decode_base64(source.get("data"), f"{param}.source.data")
            _check_type(media_type, f"{param}.source.media_type")
            return "anthropic", None, "auto", data
        if isinstance(source, Mapping) and source.get("type") == "url":
            url = source.get("url")
            if not isinstance(url, str):
                raise RequestValidationError(
                    f"{param}.source.url must be a string", param=f"{param}.source.url"
                )
            return "anthropic", url, "auto", None
        raise RequestValidationError(
            f'{param}.source must be {{"type": "base64", "media_type": ..., "data": ...}} or '
            '{"type": "url", "url": ...}',
            param=f"{param}.source",
        )
    raise RequestValidationError(
        f"{param} has type={kind!r}; image parts have type 'image_url' (OpenAI chat), "
        "'input_image' (OpenAI responses) or 'image' (Anthropic)",
        param=f"{param}.type",
    )


def _from_url(url: str, param: str) -> tuple[str | None, bytes | None]:
    """``(url, data)``: data URLs are decoded, other URLs are returned for fetching."""
    match = _DATA_URL.match(url)
    if not match:
        if url.lower().startswith("data:"):
            raise RequestValidationError(
                f"{param} is a malformed data: URL; write data:image/png;base64,<data>",
                param=param,
            )
        return url, None
    media_type = (match.group("type") or "").lower()
    if ";base64" not in match.group("params").lower():
        raise RequestValidationError(
            f"{param} must be base64-encoded (data:{media_type};base64,...)", param=param
        )
    _check_type(media_type, param)
    return None, decode_base64(url[match.end() :], param)


def _check_type(media_type: object, param: str) -> None:
    if media_type not in _IMAGE_TYPES:
        raise RequestValidationError(
            f"{param} has media type {media_type!r}; supported: {sorted(_IMAGE_TYPES)}",
            param=param,
        )


def decode_base64(value: object, param: str) -> bytes:
    """Strict base64 decoding; errors name ``param``."""
    if not isinstance(value, str):
        raise RequestValidationError(f"{param} must be a base64 string", param=param)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestValidationError(f"{param} is not valid base64 ({exc})", param=param) from exc


def _detail(value: object, param: str) -> Detail:
    if value is None or value == "auto":
        return "auto"
    if value == "low":
        return "low"
    if value == "high":
        return "high"
    raise RequestValidationError(f"{param}={value!r} must be 'low', 'high' or 'auto'", param=param)


def _extra(part: Mapping[str, Any], *known: str) -> dict[str, Any]:
    """Keys of ``part`` the policy does not interpret (e.g. Anthropic ``cache_control``)."""
    return {k: v for k, v in part.items() if k not in known}


def _image_part(
    shape: Shape, part: Mapping[str, Any], result: ImageCompressionResult
) -> dict[str, Any]:
    encoded = base64.b64encode(result.data).decode("ascii")
    data_url = f"data:{result.media_type};base64,{encoded}"
    if shape == "openai_chat":
        return {
            **_extra(part, "image_url"),
            "image_url": {"url": data_url, "detail": result.detail},
        }
    if shape == "openai_responses":
        return {
            **_extra(part, "image_url", "detail"),
            "image_url": data_url,
            "detail": result.detail,
        }
    source = {"type": "base64", "media_type": result.media_type, "data": encoded}
    return {**_extra(part, "source"), "source": source}


def text_part(shape: Shape, text: str, part: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A text content part in ``shape``'s format (keeping Anthropic ``cache_control``)."""
    if shape == "openai_responses":
        return {"type": "input_text", "text": text}
    out: dict[str, Any] = {"type": "text", "text": text}
    if shape == "anthropic" and part is not None and "cache_control" in part:
        out["cache_control"] = part["cache_control"]
    return out
