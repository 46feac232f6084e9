"""Provenance: rebuild and verify extractive output from the character spans it kept.

Every extractive compressor returns the spans of the original text it kept. The compressed text
is, by definition, :func:`join_spans` of those spans, so anyone holding the original can check
that nothing was invented. Between two non-adjacent spans the separator follows the gap that was
dropped: a blank line stays a blank line, a line break a line break, other whitespace one space,
and a gap without whitespace (CJK text, a word-internal cut) joins with nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ragpress.types import CompressedPassage, Span

__all__ = ["compose_spans", "gap_separator", "join_spans", "merge_spans", "verify"]

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def gap_separator(gap: str) -> str:
    """The separator that replaces a dropped ``gap`` of the original text."""
    if not gap:
        return ""
    if _BLANK_LINE.search(gap):
        return "\n\n"
    if "\n" in gap:
        return "\n"
    if any(ch.isspace() for ch in gap):
        return " "
    return ""


def merge_spans(spans: Iterable[Span]) -> tuple[Span, ...]:
    """Sort spans, drop empty ones and merge those that touch or overlap."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((s, e) for s, e in merged)


def join_spans(text: str, spans: Sequence[Span]) -> str:
    """Concatenate ``text[start:end]`` for each span, separated as the dropped gaps dictate.

    Args:
        text: The original text.
        spans: Sorted, non-overlapping spans (see :func:`merge_spans`).

    Returns:
        The compressed text those spans describe.
    """
    parts: list[str] = []
    previous_end: int | None = None
    for start, end in spans:
        if previous_end is not None:
            parts.append(gap_separator(text[previous_end:start]))
        parts.append(text[start:end])
        previous_end = end
    return "".join(parts)


def compose_spans(original: str, first: Sequence[Span], second: Sequence[Span]) -> tuple[Span, ...]:
    """Map spans over an intermediate text back to the original (for compressor chains).

    Args:
        original: The original text.
        first: Spans of ``original`` kept by the first stage; the intermediate text is
            ``join_spans(original, first)``.
        second: Spans of the intermediate text kept by the second stage.

    Returns:
        Spans of ``original``; separators the first stage inserted are never part of them.
    """
    # Where each first-stage piece starts in the intermediate text.
    piece_starts: list[int] = []
    position = 0
    previous_end: int | None = None
    for start, end in first:
        if previous_end is not None:
            position += len(gap_separator(original[previous_end:start]))
        piece_starts.append(position)
        position += end - start
        previous_end = end
    out: list[Span] = []
    for a, b in second:
        i = max(bisect_right(piece_starts, a) - 1, 0)
        while i < len(first) and piece_starts[i] < b:
            p_start = piece_starts[i]
            p_end = p_start + first[i][1] - first[i][0]
            lo, hi = max(a, p_start), min(b, p_end)
            if lo < hi:
                offset = first[i][0] - p_start
                out.append((lo + offset, hi + offset))
            i += 1
    return tuple(out)


def verify(passage: CompressedPassage) -> bool:
    """Whether ``passage.text`` is exactly what its spans select from its source.

    Returns ``False`` for compressors that rewrite text (``spans is None``).
    """
    if passage.spans is None:
        return False
    text = passage.source.text
    spans = passage.spans
    in_bounds = all(0 <= s < e <= len(text) for s, e in spans)
    ordered = all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    return in_bounds and ordered and join_spans(text, spans) == passage.text
