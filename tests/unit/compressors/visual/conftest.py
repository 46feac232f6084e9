"""Fixtures of the visual tests: the shipped rendered pages and a shared OCR engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "visual"


@pytest.fixture(scope="session")
def pages() -> dict[str, bytes]:
    """The rendered pages shipped in tests/fixtures/visual, by file name."""
    return {p.name: p.read_bytes() for p in FIXTURES.glob("*.png")}


@pytest.fixture(scope="session")
def ground_truth() -> dict[str, Any]:
    truth: dict[str, Any] = json.loads((FIXTURES / "ground_truth.json").read_text())
    return truth


@pytest.fixture(scope="session")
def pdf_bytes() -> bytes:
    return (FIXTURES / "report.pdf").read_bytes()


@pytest.fixture(scope="session")
def ocr_engine():
    pytest.importorskip("rapidocr")
    from ragpress.compressors.visual.api.ocr import RapidOcrEngine

    return RapidOcrEngine(threads=2)
