"""Words from a fast tokenizer's own offsets, model-sized chunks, vectorised word probabilities.

Word boundaries never depend on a model's name. A token starts a new word when

* the tokenizer's pre-tokenizer starts a new word there (``word_ids`` change: whitespace for
  SentencePiece and byte-level BPE, whitespace and punctuation for WordPiece), or
* its characters change class (letters/digits vs punctuation), so ``"Hello."`` is two words
  under every tokenizer, as LLMLingua-2 treats it, or
* it is in a script written without spaces (Han, Kana, Thai, ...): each piece is a word.

Character offsets come from the same single tokenization pass, so every word is a span of the
original string and compressed output can be cut from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ragpress.exceptions import MissingDependencyError

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "numpy", extra="llmlingua2") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt
    from tokenizers import Tokenizer

__all__ = ["TokenizedText", "WordPooling", "chunk_bounds", "pool_words", "tokenize_texts"]

WordPooling = Literal["mean", "first"]

_HAS_WORD_CHAR = re.compile(r"[^\W_]")
_UNSPACED = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f"
    r"\u1780-\u17ff\U00020000-\U0002fa1f]"
)
_SENTENCE_END = frozenset(".!?;:。！？；：")
_WORD, _PUNCT, _UNSPACED_CLASS = 1, 2, 3
_MARKERS = "▁Ġ "


@dataclass(frozen=True, slots=True)
class TokenizedText:
    """One text after the single tokenization pass."""

    ids: npt.NDArray[np.int64]
    """Token ids, without special tokens."""
    offsets: npt.NDArray[np.int64]
    """``(n, 2)`` character spans of the tokens in the original text."""
    word_start: npt.NDArray[np.bool_]
    """Whether each token starts a word."""
    cut_after: npt.NDArray[np.bool_]
    """Whether a sentence or line ends after each token (a preferred chunk boundary)."""

    @property
    def size(self) -> int:
        """Number of tokens."""
        return int(self.ids.shape[0])


def tokenize_texts(backend: Tokenizer, texts: Sequence[str]) -> list[TokenizedText]:
    """Tokenize ``texts`` in one batched call and derive word starts and cut points.

    Args:
        backend: A fast tokenizer with truncation and padding off.
        texts: The original texts.
    """
    encodings = backend.encode_batch(list(texts), add_special_tokens=False)
    return [
        _analyse(text, e.ids, e.tokens, e.offsets, e.word_ids)
        for text, e in zip(texts, encodings, strict=True)
    ]


def _analyse(
    text: str,
    ids: list[int],
    pieces: list[str],
    offsets: list[tuple[int, int]],
    word_ids: list[int | None],
) -> TokenizedText:
    n = len(ids)
    spans = np.asarray(offsets, dtype=np.int64).reshape(n, 2)
    classes = np.empty(n, dtype=np.int8)
    marker = np.zeros(n, dtype=bool)
    following = _WORD
    # Backwards, so a zero-width marker piece ("▁") takes the class of what follows it.
    for i in range(n - 1, -1, -1):
        start, end = offsets[i]
        if not pieces[i].strip(_MARKERS):
            # A bare "▁"/"Ġ" piece: some tokenizers give it the next character's offsets.
            marker[i] = True
            spans[i] = (start, start)
            classes[i] = following
            continue
        piece = text[start:end]
        if piece[:1].isspace() or piece[-1:].isspace():
            # Some tokenizers give a "▁"/"Ġ" piece the offsets of the space itself.
            stripped = piece.strip()
            start += len(piece) - len(piece.lstrip())
            end = start + len(stripped)
            spans[i] = (start, end)
            piece = stripped
        if not piece:
            classes[i] = following
            continue
        if _UNSPACED.search(piece):
            following = _UNSPACED_CLASS
        elif _HAS_WORD_CHAR.search(piece):
            following = _WORD
        else:
            following = _PUNCT
        classes[i] = following
    words = np.asarray([-1 if w is None else w for w in word_ids], dtype=np.int64)
    start_flags = np.ones(n, dtype=bool)
    if n > 1:
        start_flags[1:] = (
            (words[1:] != words[:-1])
            | (classes[1:] != classes[:-1])
            | ((classes[1:] == _UNSPACED_CLASS) & ~marker[:-1])
        )
    cut_after = np.zeros(n, dtype=bool)
    if n:
        ends = spans[:, 1]
        last_chars = [text[e - 1] if e > 0 else "" for e in ends.tolist()]
        cut_after = np.fromiter((c in _SENTENCE_END for c in last_chars), dtype=bool, count=n)
        newlines = np.asarray([m.start() for m in re.finditer("\n", text)], dtype=np.int64)
        if newlines.size and n > 1:
            gap_lo = np.searchsorted(newlines, ends[:-1], side="left")
            gap_hi = np.searchsorted(newlines, spans[1:, 0], side="left")
            cut_after[:-1] |= gap_hi > gap_lo
    return TokenizedText(
        ids=np.asarray(ids, dtype=np.int64),
        offsets=spans,
        word_start=start_flags,
        cut_after=cut_after,
    )


def chunk_bounds(tokens: TokenizedText, size: int) -> list[tuple[int, int]]:
    """Split a text's tokens into windows of at most ``size`` tokens.

    Windows are about equal in size; each ends at a sentence or line end near its target
    length when there is one, else at the last word start, and only inside a single very long
    word within one.
    Words therefore never straddle chunks in practice, and when one does, its pieces are
    still pooled together (pooling runs over the whole text, not per chunk).
    """
    n = tokens.size
    bounds: list[tuple[int, int]] = []
    start = 0
    while n - start > size:
        # Aim for equal windows (540 tokens -> 2 x 270, not 510 + 30): less padding in a batch
        # and less attention work, with the cut still at a sentence end when there is one.
        remaining = n - start
        target = -(-remaining // -(-remaining // size))
        end = start + min(size, target + target // 8)
        low = start + max(target // 2, 1)
        starts = tokens.word_start[low : end + 1]
        preferred = np.flatnonzero(starts & tokens.cut_after[low - 1 : end])
        if preferred.size:
            cut = low + int(preferred[-1])
        else:
            anywhere = np.flatnonzero(starts)
            cut = low + int(anywhere[-1]) if anywhere.size else end
        bounds.append((start, cut))
        start = cut
    if n > start or not bounds:
        bounds.append((start, n))
    return bounds


def pool_words(
    tokens: TokenizedText,
    probabilities: npt.NDArray[np.float32],
    pooling: WordPooling = "mean",
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Word spans and keep-probabilities from per-token probabilities (vectorised).

    Args:
        tokens: The tokenized text.
        probabilities: P(keep) of each token.
        pooling: ``"mean"`` of a word's pieces, or its ``"first"`` piece.

    Returns:
        ``(spans, probs)``: ``(w, 2)`` character spans (empty words dropped) and ``(w,)``
        probabilities.
    """
    if tokens.size == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    starts = np.flatnonzero(tokens.word_start)
    probs = probabilities.astype(np.float32, copy=False)
    if pooling == "first":
        word_probs = probs[starts]
    else:
        counts = np.diff(np.append(starts, tokens.size))
        word_probs = (np.add.reduceat(probs, starts) / counts).astype(np.float32)
    # Zero-width pieces ("▁" alone) do not widen a word.
    width = tokens.offsets[:, 1] > tokens.offsets[:, 0]
    big = np.iinfo(np.int64).max
    lo = np.minimum.reduceat(np.where(width, tokens.offsets[:, 0], big), starts)
    hi = np.maximum.reduceat(np.where(width, tokens.offsets[:, 1], -1), starts)
    keep = hi > lo
    spans = np.stack([lo[keep], hi[keep]], axis=1).astype(np.int64)
    return spans, word_probs[keep]
