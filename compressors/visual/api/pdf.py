"""PDF pages as images and text, with pypdfium2 (Google's PDFium; Apache-2.0 / BSD-3-Clause).

A page with a text layer needs no OCR: :func:`read_pdf` returns the layer's text beside the
rendered image, and the caller can send whichever is cheaper. Scanned pages have no text layer;
they go through the image compressor and, when text is cheaper, the OCR route.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError, RequestValidationError

try:
    import pypdfium2 as pdfium
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "pypdfium2", extra="visual") from exc

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["DEFAULT_DPI", "DEFAULT_MAX_PAGES", "PdfPage", "read_pdf"]

DEFAULT_DPI = 150
"""Rendering resolution: 11 pt body text comes out about 23 px tall, x-height ~11 px."""
DEFAULT_MAX_PAGES = 100
# PDFium is not thread-safe; pypdfium2 asks callers to serialise access to it.
_PDFIUM_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class PdfPage:
    """One rendered page."""

    index: int
    """0-based page number."""
    image: Image.Image
    """The page rendered at the requested DPI (RGB, white background)."""
    text: str
    """The page's text layer (``""`` for scans); lines separated by ``\\n``."""


def read_pdf(
    data: bytes,
    *,
    dpi: int = DEFAULT_DPI,
    pages: range | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
    password: str | None = None,
    param: str = "document",
) -> list[PdfPage]:
    """Render the pages of a PDF and extract their text layer.

    Args:
        data: The PDF file's bytes.
        dpi: Rendering resolution in dots per inch.
        pages: Which pages (0-based); all pages when ``None``.
        max_pages: Refuse documents that would render more pages than this.
        password: Password of an encrypted PDF.
        param: Field name used in error messages.

    Raises:
        RequestValidationError: Not a readable PDF, wrong password, pages out of range, or too
            many pages.
    """
    if not 18 <= dpi <= 600:
        raise RequestValidationError(f"dpi={dpi} must be between 18 and 600, e.g. 150", param="dpi")
    with _PDFIUM_LOCK:
        try:
            document = pdfium.PdfDocument(data, password=password)
        except pdfium.PdfiumError as exc:
            raise RequestValidationError(
                f"{param} could not be opened as a PDF ({exc}); send the PDF file's bytes "
                "(and its password if it is encrypted)",
                param=param,
            ) from exc
        try:
            count = len(document)
            wanted = range(count) if pages is None else pages
            if any(not 0 <= i < count for i in wanted):
                raise RequestValidationError(
                    f"pages={wanted} is outside the document's {count} pages (0-based)",
                    param="pages",
                )
            if len(wanted) > max_pages:
                raise RequestValidationError(
                    f"{param} has {len(wanted)} pages to render, above max_pages={max_pages}; "
                    "pass pages=range(...) or raise max_pages",
                    param=param,
                )
            return [_render(document, i, dpi) for i in wanted]
        finally:
            document.close()


def _render(document: pdfium.PdfDocument, index: int, dpi: int) -> PdfPage:
    page = document[index]
    try:
        image = page.render(scale=dpi / 72, fill_color=(255, 255, 255, 255)).to_pil()
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_bounded()
        finally:
            textpage.close()
    finally:
        page.close()
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n"))
    return PdfPage(index, image.convert("RGB"), text.strip())
