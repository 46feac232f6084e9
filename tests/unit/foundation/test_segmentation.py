from __future__ import annotations

import time
from typing import Any

import pytest

from ragpress.segmentation import split_sentences


def sentences(text: str, **kwargs: Any) -> list[str]:
    spans = split_sentences(text, **kwargs)
    for start, end in spans:
        piece = text[start:end]
        assert piece == piece.strip() and piece
    assert spans == sorted(spans)
    return [text[s:e] for s, e in spans]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith went to Washington D.C. on Jan. 5th. He met the U.S. president.",
            ["Dr. Smith went to Washington D.C. on Jan. 5th.", "He met the U.S. president."],
        ),
        (
            "See https://example.com/a.b.html for details. Mail john.doe@mail.com! Done?",
            ["See https://example.com/a.b.html for details.", "Mail john.doe@mail.com!", "Done?"],
        ),
        (
            "Steps:\n1. Install it.\n2. Run the tests.\n- one\n- two\n\nNext paragraph.",
            ["Steps:", "1. Install it.", "2. Run the tests.", "- one", "- two", "Next paragraph."],
        ),
        (
            "Intro.\n```python\nx = a.b(1.5)\n\nprint(x)\n```\nAfter.",
            ["Intro.", "```python\nx = a.b(1.5)\n\nprint(x)\n```", "After."],
        ),
        (
            "今天天气很好。我们去公园吧！你觉得怎么样？",
            ["今天天气很好。", "我们去公园吧！", "你觉得怎么样？"],
        ),
        ("# Title\nBody text. More.\n| a | b |", ["# Title", "Body text.", "More.", "| a | b |"]),
        ("A line that is hard\nwrapped. Next one.", ["A line that is hard\nwrapped.", "Next one."]),
    ],
)
def test_real_text_layouts(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t"])
def test_blank_text_has_no_sentences(text: str) -> None:
    assert split_sentences(text) == []


def test_long_runs_are_capped_at_whitespace() -> None:
    text = "word " * 1000
    pieces = sentences(text, max_chars=100)
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces).split() == text.split()


def test_text_without_spaces_is_capped_hard() -> None:
    pieces = sentences("x" * 250, max_chars=100)
    assert [len(p) for p in pieces] == [100, 100, 50]


def test_offsets_survive_astral_characters() -> None:
    text = "Emoji 😀 first. Then 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 second."
    assert sentences(text) == ["Emoji 😀 first.", "Then 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 second."]


def test_five_megabytes_split_quickly() -> None:
    text = ("A sentence about things. Another one follows here!\n" * 100_000)[:5_000_000]
    started = time.perf_counter()
    spans = split_sentences(text)
    assert time.perf_counter() - started < 30
    assert len(spans) > 150_000
