"""Split documents into overlapping chunks for indexing, with character offsets kept.

Chunks are built from whole sentences (:func:`ragpress.segmentation.split_sentences`): sentences
are packed until ``chunk_tokens`` is reached, and the next chunk starts with the last sentences
of the previous one, up to ``overlap_tokens``, so an answer that straddles a boundary is still
whole in one chunk. A sentence longer than a chunk is cut at word boundaries. Every chunk is a
contiguous slice ``text[start:end]`` of its document, so its provenance is exact.

Tokens are counted with the same tokenizer as compression budgets (``cl100k_base`` by
default). all-MiniLM-L6-v2 reads at most 256 word pieces; the default of 200 tokens stays
under that for English prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import ConfigurationError
from ragpress.segmentation import split_sentences
from ragpress.tokens import get_token_counter
from ragpress.types import Passage

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from ragpress.types import Span, TokenCounter

__all__ = [
    "DEFAULT_CHUNK_TOKENS",
    "DEFAULT_OVERLAP_TOKENS",
    "ChunkingOptions",
    "chunk_passage",
    "chunk_passages",
    "chunk_spans",
]

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40

_HEADING = re.compile(r"^\s{0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    """How documents are cut into chunks."""

    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    """Largest chunk, in tokens of ``tokenizer``."""
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS
    """Tokens of whole sentences repeated from the end of one chunk at the start of the next."""
    tokenizer: str = "cl100k_base"
    """Tokenizer the sizes are counted in (any name :func:`ragpress.get_token_counter` takes)."""
    language: str = "en"
    """Language for sentence boundaries (ISO 639 code)."""

    def __post_init__(self) -> None:
        if isinstance(self.chunk_tokens, bool) or self.chunk_tokens < 8:
            raise ConfigurationError(
                f"chunk_tokens={self.chunk_tokens} is too small; use at least 8 (200 is typical)"
            )
        if not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ConfigurationError(
                f"overlap_tokens={self.overlap_tokens} must be >= 0 and below "
                f"chunk_tokens={self.chunk_tokens}; a fifth of the chunk size is typical"
            )


def chunk_spans(
    text: str,
    options: ChunkingOptions | None = None,
    *,
    token_counter: TokenCounter | None = None,
) -> list[Span]:
    """Cut ``text`` into overlapping chunks of whole sentences.

    Args:
        text: The document.
        options: Sizes, tokenizer and language; the defaults when ``None``.
        token_counter: Counter to use instead of looking up ``options.tokenizer``.

    Returns:
        ``(start, end)`` character spans of ``text``, in order; consecutive chunks overlap by
        up to ``overlap_tokens``. Empty for blank text.

    Example:
        >>> text = "One sentence here. " * 50
        >>> spans = chunk_spans(text, ChunkingOptions(chunk_tokens=40, overlap_tokens=8))
        >>> spans[0][0], spans[1][0] < spans[0][1]
        (0, True)
    """
    options = options or ChunkingOptions()
    counter = token_counter or get_token_counter(options.tokenizer)
    units = _units(text, options, counter)
    limit = options.chunk_tokens
    # A Markdown heading starts a new chunk once the current one holds a quarter of the budget,
    # and no overlap reaches back across it: sections stay apart without tiny chunks.
    heading_break = limit // 4
    chunks: list[Span] = []
    first = 0
    while first < len(units):
        last, total = first, 0
        while last < len(units) and (last == first or total + units[last][2] <= limit):
            if last > first and units[last][3] and total >= heading_break:
                break
            total += units[last][2]
            last += 1
        chunks.append((units[first][0], units[last - 1][1]))
        if last == len(units):
            break
        if units[last][3]:
            first = last
            continue
        # Step back over whole units that fit in the overlap, but always move forward.
        start, overlap = last, 0
        while start - 1 > first and overlap + units[start - 1][2] <= options.overlap_tokens:
            start -= 1
            overlap += units[start][2]
        first = start
    return chunks


def chunk_passage(
    passage: Passage,
    options: ChunkingOptions | None = None,
    *,
    token_counter: TokenCounter | None = None,
) -> list[Passage]:
    """Cut one document into chunk passages that remember where they came from.

    Each chunk keeps the document's title and metadata and adds ``chunk`` (its number),
    ``start`` and ``end`` (character offsets into the document), ``document_id`` and, when the
    document is Markdown with headings, ``section`` (the nearest heading above the chunk). A
    chunk's id is ``"{document id}#{chunk number}"``.

    Args:
        passage: The whole document.
        options: Sizes, tokenizer and language.
        token_counter: Counter to use instead of looking up ``options.tokenizer``.
    """
    spans = chunk_spans(passage.text, options, token_counter=token_counter)
    headings = [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(passage.text)]
    out = []
    for number, (start, end) in enumerate(spans):
        metadata = dict(passage.metadata)
        if passage.id is not None:
            metadata["document_id"] = passage.id
        metadata.update(chunk=number, start=start, end=end)
        section = _section_at(headings, start)
        if section is not None:
            metadata["section"] = section
        out.append(
            Passage(
                passage.text[start:end],
                title=passage.title,
                id=f"{passage.id}#{number}" if passage.id is not None else None,
                metadata=metadata,
            )
        )
    return out


def chunk_passages(
    passages: Iterable[Passage], options: ChunkingOptions | None = None
) -> list[Passage]:
    """:func:`chunk_passage` over many documents, sharing one token counter."""
    options = options or ChunkingOptions()
    counter = get_token_counter(options.tokenizer)
    return [c for p in passages for c in chunk_passage(p, options, token_counter=counter)]


def _units(
    text: str, options: ChunkingOptions, counter: TokenCounter
) -> list[tuple[int, int, int, bool]]:
    """Sentences as ``(start, end, tokens, is_heading)``; long ones cut between words."""
    sentences = split_sentences(text, language=options.language)
    counts = counter.count_many([text[s:e] for s, e in sentences])
    units: list[tuple[int, int, int, bool]] = []
    for (start, end), tokens in zip(sentences, counts, strict=True):
        if tokens <= options.chunk_tokens:
            units.append((start, end, tokens, _HEADING.match(text, start, end) is not None))
        else:
            units.extend(
                (s, e, n, False)
                for s, e, n in _cut_words(text, start, end, options.chunk_tokens, counter)
            )
    return units


def _cut_words(
    text: str, start: int, end: int, limit: int, counter: TokenCounter
) -> list[tuple[int, int, int]]:
    """Pieces of ``text[start:end]`` of at most ``limit`` tokens, cut between words."""
    words = [(start + m.start(), start + m.end()) for m in _WORD.finditer(text[start:end])]
    counts = counter.count_many([" " + text[s:e] for s, e in words])
    pieces: list[tuple[int, int, int]] = []
    piece_start, total = words[0][0], 0
    previous_end = words[0][0]
    for (s, e), tokens in zip(words, counts, strict=True):
        if total and total + tokens > limit:
            pieces.append((piece_start, previous_end, total))
            piece_start, total = s, 0
        total += tokens
        previous_end = e
    pieces.append((piece_start, previous_end, total))
    return pieces


def _section_at(headings: Sequence[tuple[int, str]], position: int) -> str | None:
    section = None
    for start, title in headings:
        if start > position:
            break
        section = title
    return section
