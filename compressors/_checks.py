"""Checks of decoded cache entries against what they describe (issue 21).

A cache entry can be well-formed and still wrong: stored under another passage's key, written
by an older release, or tampered with. Selection trusts spans, token counts and vectors, so a
wrong entry would cut text mid-word, repeat a document, spend no budget on what it keeps, or
score with NaN. Each function raises ``ValueError`` naming what does not fit; the pipeline then
treats the entry as a miss (:meth:`ragpress.compressors.base.BaseCompressor.check_analysis`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["check_counts", "check_sentence_spans", "check_spans", "check_vectors"]


def check_spans(text: str, spans: Any, *, what: str = "span") -> npt.NDArray[np.int64]:
    """``spans`` as an ``(n, 2)`` integer array: non-empty, inside ``text``, sorted, disjoint.

    Raises:
        ValueError: Any of these fails.
    """
    array = np.asarray(spans)
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if array.ndim != 2 or array.shape[1] != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}s have shape {array.shape} {array.dtype}, expected (n, 2) int")
    starts, ends = array[:, 0], array[:, 1]
    if starts.min() < 0 or ends.max() > len(text):
        raise ValueError(
            f"{what}s reach [{starts.min()}, {ends.max()}), outside the {len(text)}-character text"
        )
    if not (starts < ends).all():
        raise ValueError(f"a {what} is empty or reversed")
    if not (starts[1:] >= ends[:-1]).all():
        raise ValueError(f"{what}s overlap or are out of order")
    return array.astype(np.int64, copy=False)


def check_sentence_spans(text: str, spans: Any) -> npt.NDArray[np.int64]:
    """Spans as :func:`ragpress.segmentation.split_sentences` returns them for ``text``.

    Beyond :func:`check_spans`: each span is stripped of whitespace and together they cover
    every non-whitespace character, so spans from another text (almost) never pass.

    Raises:
        ValueError: They cannot be this text's sentences.
    """
    array = check_spans(text, spans, what="sentence span")
    previous = 0
    for start, end in array.tolist():
        if text[start].isspace() or text[end - 1].isspace():
            raise ValueError(f"sentence span ({start}, {end}) starts or ends with whitespace")
        if text[previous:start].strip():
            raise ValueError(f"text between sentence spans at [{previous}, {start}) is left out")
        previous = end
    if text[previous:].strip():
        raise ValueError(f"text after the last sentence span, from {previous}, is left out")
    return array


def check_counts(text: str, tokens: Any, count: int, text_tokens: int) -> None:
    """``count`` token counts of at least 1 each, and a plausible count for the whole text.

    Every span covers text, so it is at least one token in any tokenizer: zeroed counts (which
    would let selection keep everything for free) fail.

    Raises:
        ValueError: Counts of the wrong length, below 1, or none for a text that has some.
    """
    array = np.asarray(tokens)
    if array.shape != (count,) or (count and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"token counts have shape {array.shape}, expected ({count},) int")
    if count and array.min() < 1:
        raise ValueError(f"a token count is {array.min()}; every unit of text has at least 1")
    if text_tokens < (1 if text.strip() else 0):
        raise ValueError(f"the text's token count is {text_tokens} for a non-empty text")


def check_vectors(values: Any, shape: tuple[int | None, ...], what: str) -> None:
    """A float array of ``shape`` (``None``: any size) with only finite values.

    Raises:
        ValueError: Wrong shape or dtype, or a NaN or infinity in it.
    """
    array = np.asarray(values)
    if array.ndim != len(shape) or any(
        want is not None and have != want for have, want in zip(array.shape, shape, strict=True)
    ):
        shown = tuple("n" if s is None else s for s in shape)
        raise ValueError(f"{what} have shape {array.shape}, expected {shown}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{what} are {array.dtype}, expected floats")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} hold NaN or infinite values")
