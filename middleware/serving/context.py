"""Find the context a client marked for compression inside a message's text.

What gets compressed is explicit: text between ``<context>`` and ``</context>``. Inside a block,
``<document title="..." id="...">...</document>`` (or ``<doc>``) elements are compressed as
separate documents with their titles; a block without them is one document. Tags, attributes
and everything outside the blocks stay byte for byte; only the inner text of each document
(trimmed of surrounding whitespace) is replaced.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

__all__ = ["MarkedText", "Piece", "find_marked", "has_markers", "replace_pieces"]

_CONTEXT = re.compile(r"<context(?:\s[^<>]*)?>(.*?)</context\s*>", re.S | re.I)
_OPEN = re.compile(r"<context(?:\s[^<>]*)?>", re.I)
_DOCUMENT = re.compile(r"<(document|doc)(\s[^<>]*)?>(.*?)</\1\s*>", re.S | re.I)
_ATTRIBUTE = re.compile(r"""([A-Za-z_][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_MARKER_BYTES = re.compile(rb"<context|\\u003ccontext", re.I)


def has_markers(body: bytes) -> bool:
    """Whether a raw JSON body may contain a ``<context>`` block (fast pre-check, no parsing).

    Also finds the tag when a serializer escaped ``<`` as ``\\u003c`` (Go does by default).
    """
    return _MARKER_BYTES.search(body) is not None


@dataclass(frozen=True, slots=True)
class Piece:
    """One document inside a context block: ``text[start:end]`` of the message text."""

    start: int
    end: int
    title: str | None = None
    id: str | None = None


@dataclass(frozen=True, slots=True)
class MarkedText:
    """The marked documents of one text, and the text around the blocks."""

    pieces: tuple[Piece, ...]
    outside: str
    """The text outside every block, whitespace collapsed: the user's question, usually."""
    unclosed: int = 0
    """``<context>`` tags without a closing tag (left untouched)."""


def find_marked(text: str) -> MarkedText:
    """Locate the documents to compress in ``text``."""
    pieces: list[Piece] = []
    outside_parts: list[str] = []
    position = 0
    blocks = 0
    for block in _CONTEXT.finditer(text):
        blocks += 1
        outside_parts.append(text[position : block.start()])
        position = block.end()
        inner_start, inner_end = block.span(1)
        documents = list(_DOCUMENT.finditer(text, inner_start, inner_end))
        if not documents:
            _append_trimmed(pieces, text, inner_start, inner_end, None, None)
            continue
        for doc in documents:
            attributes = _attributes(doc.group(2) or "")
            _append_trimmed(
                pieces,
                text,
                doc.start(3),
                doc.end(3),
                attributes.get("title") or attributes.get("name"),
                attributes.get("id"),
            )
    outside_parts.append(text[position:])
    opened = len(_OPEN.findall(text))
    outside = " ".join(" ".join(outside_parts).split())
    return MarkedText(tuple(pieces), outside, unclosed=max(0, opened - blocks))


def replace_pieces(text: str, pieces: tuple[Piece, ...], replacements: list[str]) -> str:
    """``text`` with each piece's span replaced by the matching replacement."""
    out: list[str] = []
    position = 0
    for piece, replacement in zip(pieces, replacements, strict=True):
        out.append(text[position : piece.start])
        out.append(replacement)
        position = piece.end
    out.append(text[position:])
    return "".join(out)


def _append_trimmed(
    pieces: list[Piece], text: str, start: int, end: int, title: str | None, doc_id: str | None
) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        pieces.append(Piece(start, end, title, doc_id))


def _attributes(raw: str) -> dict[str, str]:
    return {
        m.group(1).lower(): html.unescape(m.group(2) if m.group(2) is not None else m.group(3))
        for m in _ATTRIBUTE.finditer(raw)
    }
