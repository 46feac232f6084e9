"""Word labels from (original, compressed) pairs: LLMLingua-2's data-distillation alignment.

The teacher only deletes words (it is told to keep order and never add or change words), so an
original word is labelled "keep" when it can be matched, in order, to a word of the compressed
text. Matching is greedy within a look-ahead window (the paper's is 400 words) and
case-insensitive; commas are ignored, as the paper does. Two quality measures filter bad
pairs, as the paper's quality control does (Pan et al., 2024, §3; the training recipe is in
``docs/compressors/llmlingua2.md``):

* **variation rate**: the share of compressed words that occur nowhere in the original (the
  teacher added or changed words);
* **alignment gap**: hitting rate minus matching rate: compressed words that occur in the
  original but could not be aligned in order (the teacher reordered text).

Pure Python, no model: the trainer turns word labels into token labels with the tokenizer's
offsets.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["WordAlignment", "align_words", "split_words"]

_WORDS = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]", re.UNICODE)
DEFAULT_WINDOW = 400


@dataclass(frozen=True, slots=True)
class WordAlignment:
    """Keep/drop labels of an original text's words, and how trustworthy they are."""

    spans: tuple[tuple[int, int], ...]
    """Character spans of the original's words."""
    labels: tuple[int, ...]
    """1 = the teacher kept the word, 0 = it dropped it."""
    variation_rate: float
    """Share of the compressed words found nowhere in the original (0 = pure deletion)."""
    alignment_gap: float
    """Share of the compressed words found in the original but not alignable in order."""

    @property
    def kept_share(self) -> float:
        """Share of words labelled keep."""
        return sum(self.labels) / len(self.labels) if self.labels else 0.0


def split_words(text: str) -> list[tuple[int, int]]:
    """Character spans of the words and punctuation marks of ``text``."""
    return [m.span() for m in _WORDS.finditer(text)]


def _norm(word: str) -> str:
    return unicodedata.normalize("NFKC", word).casefold()


def align_words(original: str, compressed: str, *, window: int = DEFAULT_WINDOW) -> WordAlignment:
    """Label each word of ``original`` by whether it survives in ``compressed``.

    Args:
        original: The text given to the teacher.
        compressed: The teacher's compression of it.
        window: How many original words ahead a compressed word may match.
    """
    spans = [s for s in split_words(original) if original[s[0] : s[1]] != ","]
    words = [_norm(original[s:e]) for s, e in spans]
    targets = [_norm(compressed[s:e]) for s, e in split_words(compressed) if compressed[s:e] != ","]
    labels = [0] * len(words)
    vocabulary = set(words)
    position = 0
    matched = 0
    for target in targets:
        limit = min(len(words), position + window)
        hit = next((i for i in range(position, limit) if words[i] == target), None)
        if hit is None:
            continue
        labels[hit] = 1
        matched += 1
        position = hit + 1
    hits = sum(1 for t in targets if t in vocabulary)
    total = max(len(targets), 1)
    return WordAlignment(
        spans=tuple((int(s), int(e)) for s, e in spans),
        labels=tuple(labels),
        variation_rate=(len(targets) - hits) / total,
        alignment_gap=(hits - matched) / total,
    )
