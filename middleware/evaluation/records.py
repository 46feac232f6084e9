"""Evaluation records and the reader's prompt.

A record is a ``ragpress batch`` record with gold answers: ``{"id", "question", "answers":
[...], "docs": [{"title", "text", "is_gold"?}]}``. ``is_gold`` (a boolean, or the strings
``"true"``/``"false"``) marks the passages that hold the evidence; with it, the evaluation adds
the gold-only context, the upper reference of what a perfect compressor keeps.

The prompt is the one of *Lost in the Middle* (Liu et al., TACL 2024): the search results as
``Document [i](Title: ...) text``, then the question; without any context, the closed-book
variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import RagpressError, RequestValidationError
from ragpress.middleware.batch.io import open_source
from ragpress.middleware.batch.records import item_from_record, load_record

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.types import Passage

__all__ = [
    "CLOSED_BOOK_INSTRUCTION",
    "QA_INSTRUCTION",
    "EvalRecord",
    "Message",
    "load_eval_records",
    "parse_eval_record",
    "render_prompt",
]

QA_INSTRUCTION = (
    "Write a high-quality answer for the given question using only the provided search results "
    "(some of which might be irrelevant)."
)
CLOSED_BOOK_INSTRUCTION = "Write a high-quality answer for the given question."

Message = dict[str, str]
"""A chat message: ``{"role": ..., "content": ...}``."""


@dataclass(frozen=True, slots=True)
class EvalRecord:
    """One question with its documents and gold answers."""

    id: str
    question: str
    answers: tuple[str, ...]
    passages: tuple[Passage, ...]
    gold: tuple[bool, ...] | None
    """Per passage, whether it holds the evidence; ``None`` when the record does not say."""


def parse_eval_record(line: int, raw: bytes | str | dict[str, Any]) -> EvalRecord:
    """Validate one record.

    Raises:
        RequestValidationError: Not a batch record, no question, or no answers; the message
            names the line and the field.
    """
    record = load_record(line, raw)
    item = item_from_record(line, record)
    if not item.query:
        raise RequestValidationError(
            f"line {line}: question is missing; evaluation needs a question per record",
            param="question",
        )
    answers = record.get("answers", record.get("answer"))
    if isinstance(answers, str):
        answers = [answers]
    if (
        not isinstance(answers, list)
        or not answers
        or not all(isinstance(a, str) and a.strip() for a in answers)
    ):
        raise RequestValidationError(
            f'line {line}: answers must be a non-empty list of strings, e.g. "answers": ["Paris"]',
            param="answers",
        )
    flags = [_flag(doc.get("is_gold")) for doc in item.docs]
    gold = None if all(f is None for f in flags) else tuple(bool(f) for f in flags)
    record_id = record.get("id")
    return EvalRecord(
        id=str(record_id) if record_id is not None else f"line-{line}",
        question=item.query,
        answers=tuple(answers),
        passages=item.passages,
        gold=gold,
    )


def load_eval_records(
    path: str, *, limit: int | None = None
) -> tuple[list[EvalRecord], list[tuple[int, str]]]:
    """Read records (JSONL, JSONL.gz or Parquet) in order; a bad one is reported, not fatal.

    Returns:
        The valid records (at most ``limit``), and ``(line, error)`` for each invalid one.
    """
    records: list[EvalRecord] = []
    errors: list[tuple[int, str]] = []
    for line, raw in open_source(path).records():
        if limit is not None and len(records) >= limit:
            break
        try:
            records.append(parse_eval_record(line, raw))
        except RagpressError as exc:
            errors.append((line, str(exc)))
    return records, errors


def render_prompt(question: str, documents: Sequence[tuple[str | None, str]]) -> list[Message]:
    """The reader's chat messages for ``question`` over ``(title, text)`` documents.

    Documents whose text is empty (dropped whole by a compressor) are left out; with none left,
    the question is asked closed-book.
    """
    kept = [(title, text.strip()) for title, text in documents if text.strip()]
    if not kept:
        content = f"{CLOSED_BOOK_INSTRUCTION}\n\nQuestion: {question}\nAnswer:"
    else:
        results = "\n".join(
            f"Document [{i}](Title: {title or ''}) {text}"
            for i, (title, text) in enumerate(kept, 1)
        )
        content = f"{QA_INSTRUCTION}\n\n{results}\n\nQuestion: {question}\nAnswer:"
    return [{"role": "user", "content": content}]


def _flag(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None
