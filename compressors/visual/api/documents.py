"""PDF content parts: each page becomes the cheapest of its text layer, its OCR text or its image.

Providers bill a PDF page as its extracted text *plus* an image of the page. When the page has a
text layer that costs less than ``0.8 x`` the page's compressed image (the OCR route's margin),
the text alone goes out; otherwise the rendered page goes through :class:`ImagePartCompressor`
(margins cropped, resized, OCR when cheaper for scans). Accepted parts:

* Anthropic: ``{"type": "document", "source": {"type": "base64", "media_type":
  "application/pdf", "data": ...}}``
* OpenAI Chat Completions: ``{"type": "file", "file": {"file_data": <data URL>}}``
* OpenAI Responses: ``{"type": "input_file", "file_data": <data URL>}``

with ``<data URL>`` = ``data:application/pdf;base64,...``.

The result replaces one document part with one part per page (text or image), in page order.
Anthropic citations on the document are not carried over: leave such parts alone.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragpress.compressors.visual.api.ocr import DEFAULT_MAX_TEXT_RATIO
from ragpress.compressors.visual.api.parts import ImagePartResult, decode_base64, text_part
from ragpress.compressors.visual.api.pdf import DEFAULT_DPI, DEFAULT_MAX_PAGES, read_pdf
from ragpress.exceptions import RequestValidationError

if TYPE_CHECKING:
    from ragpress.compressors.visual.api.parts import ImagePartCompressor, Shape

__all__ = ["PdfPageRoute", "compress_document_part", "compress_pdf"]

_PDF_PREFIX = "data:application/pdf;base64,"


@dataclass(frozen=True, slots=True)
class PdfPageRoute:
    """What was sent for one page."""

    index: int
    route: str
    """``"text_layer"``, or an :data:`~.parts.Route` of the page image."""
    tokens_before: int
    """The page's text-layer tokens plus its image tokens at the rendered size."""
    tokens_after: int


def compress_pdf(
    data: bytes,
    parts: ImagePartCompressor,
    *,
    shape: Shape,
    budget_tokens_per_page: int | None = None,
    dpi: int = DEFAULT_DPI,
    max_pages: int = DEFAULT_MAX_PAGES,
    param: str = "document",
) -> tuple[ImagePartResult, tuple[PdfPageRoute, ...]]:
    """Replace a PDF by one cheap part per page.

    Args:
        data: The PDF file's bytes.
        parts: The image-part policy (model, OCR engine) used for page images.
        shape: Wire format of the parts to build.
        budget_tokens_per_page: Most tokens a page image may cost.
        dpi: Rendering resolution.
        max_pages: Refuse longer documents.
        param: Field name used in error messages.

    Returns:
        The combined result (route ``"pdf"``) and what each page became.
    """
    pages = read_pdf(data, dpi=dpi, max_pages=max_pages, param=param)
    out: list[dict[str, Any]] = []
    routes: list[PdfPageRoute] = []
    texts: list[str] = []
    for page in pages:
        buffer = io.BytesIO()
        page.image.save(buffer, format="PNG")
        page_param = f"{param}.pages[{page.index}]"
        rendered = buffer.getvalue()
        # The image alone decides whether the text layer wins; OCR runs only when it does not.
        image = parts.compress_bytes(
            rendered,
            shape=shape,
            budget_tokens=budget_tokens_per_page,
            param=page_param,
            allow_ocr=False,
        )
        layer_tokens = parts.text_tokens(page.text) if page.text else 0
        image_before = image.tokens_before or 0
        image_after = image.tokens_after or 0
        before = layer_tokens + image_before
        if page.text and layer_tokens < DEFAULT_MAX_TEXT_RATIO * image_after:
            out.append(text_part(shape, page.text))
            texts.append(page.text)
            routes.append(PdfPageRoute(page.index, "text_layer", before, layer_tokens))
            continue
        if parts.ocr_engine is not None and image.route != "blank":
            image = parts.compress_bytes(
                rendered, shape=shape, budget_tokens=budget_tokens_per_page, param=page_param
            )
            image_after = image.tokens_after or 0
        out.extend(image.parts)
        if image.text:
            texts.append(image.text)
        routes.append(PdfPageRoute(page.index, image.route, before, image_after))
    summary = ", ".join(f"p{r.index + 1}: {r.route}" for r in routes)
    result = ImagePartResult(
        tuple(out),
        "pdf",
        summary,
        sum(r.tokens_before for r in routes),
        sum(r.tokens_after for r in routes),
        text="\n\n".join(texts) or None,
    )
    return result, tuple(routes)


def compress_document_part(
    part: Mapping[str, Any],
    parts: ImagePartCompressor,
    *,
    budget_tokens_per_page: int | None = None,
    param: str = "document",
) -> tuple[ImagePartResult, tuple[PdfPageRoute, ...]]:
    """:func:`compress_pdf` on a PDF content part (Anthropic ``document``, OpenAI ``file``).

    Raises:
        RequestValidationError: Not a PDF part, or its data is not base64 PDF bytes.
    """
    shape, data = _read_document(part, param)
    return compress_pdf(
        data, parts, shape=shape, budget_tokens_per_page=budget_tokens_per_page, param=param
    )


def _read_document(part: Mapping[str, Any], param: str) -> tuple[Shape, bytes]:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind == "document":
        source = part.get("source")
        if (
            isinstance(source, Mapping)
            and source.get("type") == "base64"
            and source.get("media_type") == "application/pdf"
        ):
            return "anthropic", decode_base64(source.get("data"), f"{param}.source.data")
        raise RequestValidationError(
            f'{param}.source must be {{"type": "base64", "media_type": "application/pdf", '
            '"data": ...}',
            param=f"{param}.source",
        )
    if kind == "file":
        file = part.get("file")
        url = file.get("file_data") if isinstance(file, Mapping) else None
        return "openai_chat", _from_data_url(url, f"{param}.file.file_data")
    if kind == "input_file":
        return "openai_responses", _from_data_url(part.get("file_data"), f"{param}.file_data")
    raise RequestValidationError(
        f"{param} has type={kind!r}; PDF parts have type 'document' (Anthropic), 'file' "
        "(OpenAI chat) or 'input_file' (OpenAI responses)",
        param=f"{param}.type",
    )


def _from_data_url(value: object, param: str) -> bytes:
    if not isinstance(value, str) or not value.startswith(_PDF_PREFIX):
        raise RequestValidationError(
            f"{param} must be a data URL starting with {_PDF_PREFIX!r}", param=param
        )
    return decode_base64(value[len(_PDF_PREFIX) :], param)
