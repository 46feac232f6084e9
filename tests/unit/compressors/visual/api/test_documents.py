"""PDF content parts: pages with a text layer go as text, others as compressed images."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from ragpress.compressors.visual.api.documents import compress_document_part
from ragpress.compressors.visual.api.parts import ImagePartCompressor
from ragpress.exceptions import RequestValidationError


def scanned_pdf(page: bytes) -> bytes:
    """A PDF whose only page is an image (no text layer), as a scanner writes it."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(page)).convert("RGB").save(buffer, format="PDF", resolution=150)
    return buffer.getvalue()


def test_text_layer_pages_go_as_text(pdf_bytes: bytes, ground_truth: dict[str, Any]) -> None:
    part = {
        "type": "document",
        "source": {
            "type": "base64",
            "media_type": "application/pdf",
            "data": base64.b64encode(pdf_bytes).decode(),
        },
    }
    result, pages = compress_document_part(part, ImagePartCompressor("claude-sonnet-4-5"))
    assert [p.route for p in pages] == ["text_layer", "text_layer"]
    assert result.parts == tuple({"type": "text", "text": t} for t in ground_truth["report.pdf"])
    assert result.tokens_after is not None and result.tokens_before is not None
    assert result.route == "pdf" and result.tokens_after < result.tokens_before


def test_ocr_runs_only_on_pages_whose_text_layer_does_not_win(pdf_bytes: bytes) -> None:
    class CountingEngine:
        name = "counting"
        calls = 0

        def recognize(self, image):
            CountingEngine.calls += 1
            return []

    part: dict[str, Any] = {"type": "file", "file": {"file_data": "data:application/pdf;base64,"}}
    part["file"]["file_data"] += base64.b64encode(pdf_bytes).decode()
    parts = ImagePartCompressor("gpt-4o", ocr_engine=CountingEngine())
    _, routes = compress_document_part(part, parts)
    assert [r.route for r in routes] == ["text_layer", "text_layer"]
    assert CountingEngine.calls == 0


def test_scanned_pages_go_as_compressed_images(pages: dict[str, bytes]) -> None:
    pdf = scanned_pdf(pages["letter_page.png"])
    data_url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    part = {"type": "file", "file": {"file_data": data_url}}
    result, routes = compress_document_part(part, ImagePartCompressor("gpt-4o"))
    assert [r.route for r in routes] == ["image"]
    (image,) = result.parts
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png")
    assert routes[0].tokens_after == 425 < routes[0].tokens_before


def test_scanned_pages_use_ocr_when_cheaper(pages: dict[str, bytes], ocr_engine) -> None:
    pdf = scanned_pdf(pages["slide.png"])
    data_url = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    part = {"type": "input_file", "file_data": data_url}
    result, routes = compress_document_part(
        part, ImagePartCompressor("claude-sonnet-4-5", ocr_engine=ocr_engine)
    )
    assert [r.route for r in routes] == ["ocr"]
    assert result.parts[0]["type"] == "input_text"
    assert "billing service" in result.parts[0]["text"]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "document", "source": {"type": "url", "url": "https://x"}}, "d.source"),
        ({"type": "file", "file": {"file_data": "data:image/png;base64,AA=="}},
         "d.file.file_data"),
        ({"type": "input_file", "file_data": "data:application/pdf;base64,@@"}, "d.file_data"),
        ({"type": "text", "text": "hi"}, "d.type"),
    ],
)  # fmt: skip
def test_bad_document_parts_name_the_field(part: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        compress_document_part(part, ImagePartCompressor("gpt-4o"), param="d")
    assert info.value.param == param
