"""Run an evaluation: build every condition's contexts, ask the reader, score the replies.

The reader's replies are cached in a JSONL file under the reader's fingerprint and the exact
prompt, so a prompt is answered once: the full-context answers serve every method and every
later run, and an interrupted run resumes where it stopped. Prompts are sent to the reader
longest first, in chunks, so batches pad little.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragpress.middleware.evaluation.contexts import (
    REFERENCES,
    Condition,
    Context,
    pipeline_contexts,
    random_contexts,
    reference_contexts,
)
from ragpress.middleware.evaluation.metrics import (
    answer_in_text,
    bootstrap_interval,
    exact_match,
    has_answer,
    token_f1,
)
from ragpress.middleware.evaluation.reader import ReaderReply
from ragpress.middleware.evaluation.records import render_prompt

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

    from ragpress.middleware.evaluation.reader import Reader
    from ragpress.middleware.evaluation.records import EvalRecord, Message
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import TokenCounter

__all__ = [
    "ConditionSummary",
    "EvalReport",
    "Outcome",
    "evaluate",
]

_READ_CHUNK = 64


@dataclass(frozen=True, slots=True)
class Outcome:
    """One record under one condition."""

    id: str
    reply: str | None
    correct: bool
    """A gold answer occurs in the normalised reply (the accuracy of *Lost in the Middle*)."""
    exact: bool
    f1: float
    retained: bool
    """A gold answer string is still in the context."""
    tokens_before: int
    tokens_after: int
    compress_ms: float
    reader_ms: float
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        """Achieved original/compressed tokens (``None`` when nothing was kept)."""
        return self.tokens_before / self.tokens_after if self.tokens_after else None


@dataclass(frozen=True, slots=True)
class ConditionSummary:
    """One row of the table, with its per-record outcomes."""

    condition: Condition
    outcomes: tuple[Outcome, ...]
    accuracy: float
    accuracy_interval: tuple[float, float]
    """95% percentile-bootstrap interval of the accuracy."""
    exact_match: float
    f1: float
    retention: float
    ratio: float | None
    """Achieved ratio over all records: total tokens before / total tokens after."""
    prompt_tokens: float
    """Mean context tokens the reader saw."""
    compress_ms: float
    """Mean compression time per record."""
    reader_ms: float
    """Mean reader time per record."""
    errors: int

    @classmethod
    def of(cls, condition: Condition, outcomes: Sequence[Outcome]) -> ConditionSummary:
        """Aggregate ``outcomes`` (records with an error count as wrong)."""
        n = max(len(outcomes), 1)
        correct = [float(o.correct) for o in outcomes]
        before = sum(o.tokens_before for o in outcomes)
        after = sum(o.tokens_after for o in outcomes)
        return cls(
            condition=condition,
            outcomes=tuple(outcomes),
            accuracy=sum(correct) / n,
            accuracy_interval=bootstrap_interval(correct),
            exact_match=sum(o.exact for o in outcomes) / n,
            f1=sum(o.f1 for o in outcomes) / n,
            retention=sum(o.retained for o in outcomes) / n,
            ratio=before / after if after and condition.method != "none" else None,
            prompt_tokens=after / n,
            compress_ms=sum(o.compress_ms for o in outcomes) / n,
            reader_ms=sum(o.reader_ms for o in outcomes) / n,
            errors=sum(o.error is not None for o in outcomes),
        )

    def as_dict(self, *, records: bool = True) -> dict[str, Any]:
        """JSON-friendly (NaN becomes ``None``)."""
        low, high = self.accuracy_interval
        out: dict[str, Any] = {
            "condition": self.condition.label,
            "method": self.condition.method,
            "target_ratio": self.condition.ratio,
            "ratio": _finite(self.ratio),
            "accuracy": self.accuracy,
            "accuracy_ci95": [_finite(low), _finite(high)],
            "exact_match": self.exact_match,
            "f1": self.f1,
            "retention": self.retention,
            "prompt_tokens": self.prompt_tokens,
            "compress_ms": self.compress_ms,
            "reader_ms": self.reader_ms,
            "errors": self.errors,
        }
        if records:
            out["records"] = [
                {
                    "id": o.id,
                    "reply": o.reply,
                    "correct": o.correct,
                    "exact": o.exact,
                    "f1": round(o.f1, 4),
                    "retained": o.retained,
                    "tokens_before": o.tokens_before,
                    "tokens_after": o.tokens_after,
                    "ratio": None if o.ratio is None else round(o.ratio, 3),
                    "compress_ms": round(o.compress_ms, 2),
                    "reader_ms": round(o.reader_ms, 2),
                    "error": o.error,
                }
                for o in self.outcomes
            ]
        return out


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Everything an evaluation measured."""

    reader: str
    """The reader's fingerprint."""
    records: int
    summaries: tuple[ConditionSummary, ...]
    seconds: float
    answered: int
    """Prompts the reader answered in this run (the others came from the answer cache)."""

    def summary(self, label: str) -> ConditionSummary:
        """The row of a condition by its label (``"full"``, ``"sentence_selection@3x"``)."""
        for s in self.summaries:
            if s.condition.label == label:
                return s
        raise KeyError(
            f"no condition {label!r}; have {[s.condition.label for s in self.summaries]}"
        )

    def as_dict(self, *, records: bool = True) -> dict[str, Any]:
        """JSON-friendly, with per-record outcomes unless ``records`` is false."""
        return {
            "reader": self.reader,
            "records": self.records,
            "seconds": round(self.seconds, 1),
            "answered": self.answered,
            "conditions": [s.as_dict(records=records) for s in self.summaries],
        }


def evaluate(
    records: Sequence[EvalRecord],
    reader: Reader,
    *,
    pipelines: Mapping[str, Pipeline],
    ratios: Sequence[float],
    counter: TokenCounter,
    baselines: Sequence[str] = ("random",),
    references: Sequence[str] = REFERENCES,
    answers_path: Path | None = None,
    seed: int = 0,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> EvalReport:
    """Answer every record under every condition and score the replies.

    Args:
        records: The questions, documents and gold answers.
        reader: Answers the prompts.
        pipelines: Compressors by the name they get in the table (``"naive"`` included: see
            :data:`~ragpress.middleware.evaluation.contexts.NAIVE_PARAMS`); each runs at every
            ratio.
        ratios: Target original/compressed token ratios.
        counter: Counts context tokens for the references and the random baseline (use the
            pipelines' tokenizer).
        baselines: ``"random"`` to add the random-sentence baseline at each ratio.
        references: Any of ``"full"``, ``"none"``, ``"gold"`` (gold is skipped when no record
            marks its gold passages).
        answers_path: JSONL cache of the reader's replies; reused and extended (resume).
        seed: Seed of the random baseline.
        on_progress: ``(stage, advance, total)`` as contexts are built and prompts answered.

    Returns:
        One :class:`ConditionSummary` per condition: references first, then per ratio the
        baselines and the pipelines.
    """
    started = time.perf_counter()
    conditions: list[tuple[Condition, list[Context]]] = []
    for method in references:
        found = reference_contexts(records, method, counter)
        if found is not None:
            conditions.append((Condition(method), found))
    total = len(records) * len(ratios) * (len(pipelines) + ("random" in baselines))

    def compressed(n: int) -> None:
        if on_progress is not None:
            on_progress("compress", n, total)

    for ratio in ratios:
        if "random" in baselines:
            conditions.append(
                (Condition("random", ratio), random_contexts(records, ratio, counter, seed=seed))
            )
            compressed(len(records))
        for name, pipeline in pipelines.items():
            contexts = pipeline_contexts(records, pipeline, ratio, on_progress=compressed)
            conditions.append((Condition(name, ratio), contexts))

    fingerprint = reader.fingerprint()
    prompts: dict[str, list[Message]] = {}
    keys: list[list[str | None]] = []
    for _, contexts in conditions:
        row: list[str | None] = []
        for record, context in zip(records, contexts, strict=True):
            if context.error is not None:
                row.append(None)
                continue
            messages = render_prompt(record.question, context.documents)
            key = _prompt_key(fingerprint, messages)
            prompts.setdefault(key, messages)
            row.append(key)
        keys.append(row)
    replies = _cached_replies(answers_path)
    answered = _answer_missing(reader, prompts, replies, answers_path, on_progress)

    summaries = []
    for (condition, contexts), row in zip(conditions, keys, strict=True):
        outcomes = [
            _score(record, context, None if key is None else replies[key])
            for record, context, key in zip(records, contexts, row, strict=True)
        ]
        summaries.append(ConditionSummary.of(condition, outcomes))
    return EvalReport(
        reader=fingerprint,
        records=len(records),
        summaries=tuple(summaries),
        seconds=time.perf_counter() - started,
        answered=answered,
    )


def _score(record: EvalRecord, context: Context, reply: ReaderReply | None) -> Outcome:
    error = context.error or (reply.error if reply is not None else None)
    text = reply.text if reply is not None and reply.error is None else None
    return Outcome(
        id=record.id,
        reply=text,
        correct=text is not None and has_answer(text, record.answers),
        exact=text is not None and exact_match(text, record.answers),
        f1=token_f1(text, record.answers) if text is not None else 0.0,
        retained=answer_in_text(context.text, record.answers),
        tokens_before=context.tokens_before,
        tokens_after=context.tokens_after,
        compress_ms=context.ms,
        reader_ms=reply.ms if reply is not None else 0.0,
        error=error,
    )


def _answer_missing(
    reader: Reader,
    prompts: Mapping[str, list[Message]],
    replies: dict[str, ReaderReply],
    answers_path: Path | None,
    on_progress: Callable[[str, int, int], None] | None,
) -> int:
    """Ask the reader for every prompt not in ``replies``, longest first, saving as it goes."""
    missing = sorted(
        (key for key in prompts if key not in replies),
        key=lambda k: -sum(len(m["content"]) for m in prompts[k]),
    )
    total = len(missing)
    if on_progress is not None:
        on_progress("read", 0, total)
    for start in range(0, total, _READ_CHUNK):
        chunk = missing[start : start + _READ_CHUNK]
        answers = reader.answer(
            [prompts[k] for k in chunk],
            on_progress=None if on_progress is None else lambda n: on_progress("read", n, total),
        )
        fresh = dict(zip(chunk, answers, strict=True))
        replies.update(fresh)
        if answers_path is not None:
            _append_replies(answers_path, fresh)
    return total


def _prompt_key(fingerprint: str, messages: Sequence[Message]) -> str:
    payload = json.dumps([fingerprint, list(messages)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _cached_replies(path: Path | None) -> dict[str, ReaderReply]:
    """Replies saved by earlier runs (errors are asked again)."""
    if path is None or not path.exists():
        return {}
    out: dict[str, ReaderReply] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if row.get("error") is None:  # the key holds the reader's fingerprint
                out[row["key"]] = ReaderReply(row["text"], row["ms"])
    return out


def _append_replies(path: Path, replies: Mapping[str, ReaderReply]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for key, reply in replies.items():
            row = {"key": key, "text": reply.text, "ms": round(reply.ms, 2), "error": reply.error}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
