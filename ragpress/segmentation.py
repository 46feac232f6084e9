"""Sentence segmentation that keeps character offsets into the original text.

Sentence boundaries come from `sentencex <https://github.com/wikimedia/sentencex>`_ (Wikimedia;
rules for ~300 languages, abbreviations, URLs, CJK full stops; a Rust core). Around it, a small
layout pass treats what a sentence splitter cannot know about: blank lines, list items,
headings, table rows and fenced code blocks each start a new unit, hard-wrapped prose lines are
joined, and no unit grows beyond ``max_chars`` (long runs are cut at whitespace).

Every returned span is stripped of surrounding whitespace and indexes the original string, so
``text[start:end]`` is always the exact sentence.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragpress.types import Span

__all__ = ["DEFAULT_MAX_SENTENCE_CHARS", "split_sentences"]

DEFAULT_MAX_SENTENCE_CHARS = 1_000

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
# Lines that stand alone: Markdown headings and table rows.
_STANDALONE = re.compile(r"^\s{0,3}(?:\#{1,6}\s|\|)")
# Lines that start a new unit, and the marker that belongs to the unit's first sentence.
_ITEM_MARKER = re.compile(
    r"""^\s*(?:
        [-*+•‣◦▪●]\s+ |           # bullets
        \d{1,3}[.)]\s+ |          # 1. 2)
        [a-zA-Z][.)]\s+ |          # a) b.
        >\s*                       # quotes
    )""",
    re.VERBOSE,
)
_LABEL = re.compile(r"^\s*[A-Z][\w ]{0,30}:\s*$")  # "Steps:" on a line of its own


def split_sentences(
    text: str, *, language: str = "en", max_chars: int = DEFAULT_MAX_SENTENCE_CHARS
) -> list[Span]:
    """Split ``text`` into sentence spans.

    Args:
        text: Any text: prose, Markdown, lists, code, CJK.
        language: ISO 639 code for sentencex's abbreviation and punctuation rules.
        max_chars: Longest unit returned; longer sentences are cut at whitespace (or hard,
            for text without spaces).

    Returns:
        Sorted, non-overlapping, whitespace-stripped ``(start, end)`` spans covering every
        non-whitespace character of ``text``.

    Example:
        >>> t = "Dr. Smith arrived. He sat down."
        >>> [t[s:e] for s, e in split_sentences(t)]
        ['Dr. Smith arrived.', 'He sat down.']
    """
    import sentencex

    spans: list[Span] = []
    for block_start, block_end, kind in _blocks(text):
        if kind == "prose":
            block = text[block_start:block_end]
            marker = _ITEM_MARKER.match(block)
            skip = marker.end() if marker else 0
            pieces = [
                (block_start + skip + b["start_index"], block_start + skip + b["end_index"])
                for b in sentencex.get_sentence_boundaries(language, block[skip:])
            ]
            if skip and pieces:  # the list marker belongs to the item's first sentence
                pieces[0] = (block_start, pieces[0][1])
        else:
            pieces = [(block_start, block_end)]
        for start, end in pieces:
            stripped = _strip(text, start, end)
            if stripped is not None:
                spans.extend(_cap(text, *stripped, max_chars))
    return spans


def _blocks(text: str) -> list[tuple[int, int, str]]:
    """Layout units as ``(start, end, kind)``, kind one of ``prose``, ``line``, ``code``."""
    blocks: list[tuple[int, int, str]] = []
    prose_start: int | None = None
    code_start: int | None = None
    position = 0

    def close_prose(at: int) -> None:
        nonlocal prose_start
        if prose_start is not None:
            blocks.append((prose_start, at, "prose"))
            prose_start = None

    for line in text.splitlines(keepends=True):
        line_start, position = position, position + len(line)
        if code_start is not None:
            if _FENCE.match(line):
                blocks.append((code_start, position, "code"))
                code_start = None
        elif _FENCE.match(line):
            close_prose(line_start)
            code_start = line_start
        elif not line.strip():
            close_prose(line_start)
        elif _STANDALONE.match(line) or _LABEL.match(line):
            close_prose(line_start)
            blocks.append((line_start, position, "line"))
        elif _ITEM_MARKER.match(line):
            close_prose(line_start)
            prose_start = line_start
        elif prose_start is None:
            prose_start = line_start
    if code_start is not None:
        blocks.append((code_start, len(text), "code"))
    close_prose(len(text))
    return blocks


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _cap(text: str, start: int, end: int, max_chars: int) -> list[Span]:
    """Cut ``[start, end)`` into pieces of at most ``max_chars``, preferring whitespace."""
    out: list[Span] = []
    while end - start > max_chars:
        limit = start + max_chars
        cut = text.rfind("\n", start + max_chars // 2, limit)
        if cut == -1:
            cut = text.rfind(" ", start + max_chars // 2, limit)
        if cut == -1:
            cut = limit
        piece = _strip(text, start, cut)
        if piece is not None:
            out.append(piece)
        rest = _strip(text, cut, end)
        if rest is None:
            return out
        start, end = rest
    out.append((start, end))
    return out
