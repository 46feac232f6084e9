"""``ragpress image`` run through click, on the shipped pages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.support.cli import main

pytest.importorskip("PIL")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "visual"


def test_image_reports_tokens_and_writes_the_image(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["image", str(FIXTURES / "letter_page.png"), "-m", "gpt-4o", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "765 -> 425 tokens for gpt-4o" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["letter_page-1.png"]


def test_pdf_pages_with_text_layer_become_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["image", str(FIXTURES / "report.pdf"), "-m", "gpt-4o", "--json", "-o", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["route"] == "pdf" and summary["tokens_after"] < summary["tokens_before"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report-1.txt", "report-2.txt"]


def test_bad_model_and_bad_file_are_clean_errors() -> None:
    runner = CliRunner()
    bad_model = runner.invoke(main, ["image", str(FIXTURES / "slide.png"), "-m", "llama-3"])
    assert bad_model.exit_code == 2 and "--model" in bad_model.output
    not_image = runner.invoke(main, ["image", str(FIXTURES / "ground_truth.json"), "-m", "o3"])
    assert not_image.exit_code == 1 and "could not be decoded as an image" in not_image.output
