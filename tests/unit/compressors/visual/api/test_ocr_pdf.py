"""OCR with the wheel-bundled RapidOCR models, the OCR decision rule, and PDF rendering."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest
from PIL import Image

from ragpress.compressors.visual.api.ocr import (
    OcrLine,
    OcrResult,
    character_error_rate,
    ocr_is_cheaper,
    read_page,
)
from ragpress.compressors.visual.api.pdf import read_pdf
from ragpress.exceptions import RequestValidationError


def test_rapidocr_models_ship_inside_the_wheel() -> None:
    rapidocr = pytest.importorskip("rapidocr")
    from importlib.resources import files

    models = {p.name for p in (files(rapidocr) / "models").iterdir()}
    assert {"PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx"} <= models


def test_slide_is_read_exactly_without_network(
    pages: dict[str, bytes], ground_truth: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("rapidocr")
    from ragpress.compressors.visual.api.ocr import RapidOcrEngine

    def no_network(*args, **kwargs):
        raise AssertionError("the OCR engine tried to open a network connection")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    engine = RapidOcrEngine(threads=2)  # a fresh engine: its models load under the block too
    result = read_page(Image.open(io.BytesIO(pages["slide.png"])), engine)
    assert character_error_rate(ground_truth["slide.png"], result.text) < 0.02
    assert result.mean_confidence > 0.9 and result.ink_coverage > 0.95
    passage = result.to_passage(title="slide")
    assert passage.text == result.text and passage.metadata["source"] == "ocr"


def test_chart_ink_is_mostly_outside_text(pages: dict[str, bytes], ocr_engine) -> None:
    result = read_page(Image.open(io.BytesIO(pages["chart_page.png"])), ocr_engine)
    assert "Units shipped" in result.text
    assert result.ink_coverage < 0.5


def _result(text: str, confidence: float = 0.99, coverage: float = 1.0) -> OcrResult:
    return OcrResult((OcrLine(text, confidence, (0, 0, 10, 10)),), text, confidence, coverage, "x")


@pytest.mark.parametrize(
    ("result", "text_tokens", "use", "why"),
    [
        (_result("hello"), 10, True, "<"),
        (_result("hello"), 80, False, ">="),
        (_result("hello", confidence=0.5), 10, False, "confidence"),
        (_result("hello", coverage=0.4), 10, False, "outside text"),
        (_result(" "), 1, False, "no text"),
    ],
)
def test_ocr_rule(result: OcrResult, text_tokens: int, use: bool, why: str) -> None:
    decision = ocr_is_cheaper(result, text_tokens=text_tokens, image_tokens=100)
    assert decision.use_text is use and why in decision.reason


def test_character_error_rate_reference_values() -> None:
    assert character_error_rate("abc", "abc") == 0
    assert character_error_rate("kitten", "sitting") == pytest.approx(3 / 6)
    assert character_error_rate("a  b\nc", "a b c") == 0
    assert character_error_rate("", "") == 0 and character_error_rate("", "x") == 1


def test_pdf_pages_render_with_their_text_layer(
    pdf_bytes: bytes, ground_truth: dict[str, Any]
) -> None:
    pages = read_pdf(pdf_bytes, dpi=100)
    assert [p.index for p in pages] == [0, 1]
    assert pages[0].image.size == (850, 1100) and pages[0].image.mode == "RGB"
    assert [p.text for p in pages] == ground_truth["report.pdf"]
    assert [p.index for p in read_pdf(pdf_bytes, pages=range(1, 2), dpi=72)] == [1]


def test_bad_pdfs_are_refused_with_the_field(pdf_bytes: bytes) -> None:
    with pytest.raises(RequestValidationError, match="could not be opened as a PDF") as info:
        read_pdf(b"%PDF-1.4 broken", param="messages[0].content[1]")
    assert info.value.param == "messages[0].content[1]"
    with pytest.raises(RequestValidationError, match="outside the document's 2 pages"):
        read_pdf(pdf_bytes, pages=range(5))
    with pytest.raises(RequestValidationError, match="max_pages=1"):
        read_pdf(pdf_bytes, max_pages=1)
    with pytest.raises(RequestValidationError, match="dpi"):
        read_pdf(pdf_bytes, dpi=5000)
