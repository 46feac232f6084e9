"""Must-keep strings (``CompressionOptions.keep``) for extractive compressors."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragpress.exceptions import BudgetError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["keep_exceeds_budget", "units_holding"]


def units_holding(text: str, spans: Iterable[Sequence[int]], keep: Sequence[str]) -> set[int]:
    """Indices of the ``spans`` of ``text`` that overlap an occurrence of a ``keep`` string.

    Args:
        text: The original text.
        spans: ``(start, end)`` character spans of its units (sentences), in order.
        keep: The strings that must survive.
    """
    if not keep:
        return set()
    bounds = [(int(s), int(e)) for s, e in spans]
    found: set[int] = set()
    for needle in keep:
        start = text.find(needle)
        while start != -1:
            end = start + len(needle)
            found.update(k for k, (s, e) in enumerate(bounds) if s < end and e > start)
            start = text.find(needle, start + 1)
    return found


def keep_exceeds_budget(keep: Sequence[str], needed: int, budget: int) -> BudgetError:
    """The error for ``keep`` strings whose sentences alone need more than the budget."""
    return BudgetError(
        f"the sentences holding keep={list(keep)!r} need {needed} tokens, more than the budget "
        f"of {budget}; raise the budget (lower target_ratio, higher rate or target_tokens) or "
        "shorten keep",
        param="keep",
    )
