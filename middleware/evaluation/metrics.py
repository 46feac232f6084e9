"""Answer metrics for open-domain QA, and bootstrap confidence intervals.

* **accuracy** — a gold answer appears in the normalised reply (the measure of *Lost in the
  Middle*, Liu et al., TACL 2024, arXiv 2307.03172: instruction-tuned readers answer in
  sentences, so exact match under-counts them);
* **exact match** and **token F1** of the reply against the best gold answer (SQuAD's
  normalisation: lower case, no punctuation, no articles, single spaces).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "answer_in_text",
    "bootstrap_interval",
    "exact_match",
    "has_answer",
    "normalize_answer",
    "token_f1",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, punctuation and articles removed, spaces collapsed."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def has_answer(reply: str, answers: Sequence[str]) -> bool:
    """Whether a normalised gold answer is a substring of the normalised reply.

    This is *Lost in the Middle*'s ``best_subspan_em``, kept as published (substring, not
    word-aligned), so figures compare with theirs.
    """
    normalized = normalize_answer(reply)
    return any((gold := normalize_answer(answer)) and gold in normalized for answer in answers)


def answer_in_text(text: str, answers: Sequence[str]) -> bool:
    """Whether the context still holds an answer string (retention; same test as replies)."""
    return has_answer(text, answers)


def exact_match(reply: str, answers: Sequence[str]) -> bool:
    """The normalised reply equals a normalised gold answer."""
    normalized = normalize_answer(reply)
    return any(normalized == normalize_answer(answer) for answer in answers)


def token_f1(reply: str, answers: Sequence[str]) -> float:
    """Best token-overlap F1 of the reply against any gold answer."""
    predicted = normalize_answer(reply).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def bootstrap_interval(
    values: Sequence[float], *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (deterministic for a seed).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for no values.
    """
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    tail = (1 - confidence) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[round((1 - tail) * (resamples - 1))]
    return (low, high)
