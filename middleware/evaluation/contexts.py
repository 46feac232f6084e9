"""The contexts an evaluation compares: references, baselines and compressors.

* references: ``full`` (every document), ``none`` (closed book) and ``gold`` (only the
  passages marked ``is_gold``: what a perfect compressor keeps);
* baselines at each target ratio, with the same token budget as the compressors:
  ``random`` (random whole sentences, seeded per record) and ``naive`` (each sentence embedded
  alone and ranked by similarity to the question, best first: sentence selection with every
  refinement switched off);
* any pipeline (a compressor or a chain) at each target ratio.

Every context keeps the documents in their original order, with their titles.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ragpress.middleware.pipeline.core import PipelineRequest
from ragpress.provenance import join_spans
from ragpress.segmentation import split_sentences
from ragpress.types import CompressionOptions, CompressionResult

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ragpress.middleware.evaluation.records import EvalRecord
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import TokenCounter

__all__ = [
    "NAIVE_PARAMS",
    "REFERENCES",
    "Condition",
    "Context",
    "pipeline_contexts",
    "random_contexts",
    "reference_contexts",
]

REFERENCES = ("full", "none", "gold")
"""Contexts with no compressor and no budget."""

NAIVE_PARAMS: dict[str, Any] = {
    "title_in_embedding": False,
    "document_weight": 0.0,
    "lexical_weight": 0.0,
    "neighbor_weight": 0.0,
    "document_decay": 0.0,
}
"""``sentence_selection`` parameters that make it the naive baseline."""


@dataclass(frozen=True, slots=True)
class Condition:
    """One row of the table: how the context is built, and at what target ratio."""

    method: str
    """``full``, ``none``, ``gold``, ``random``, ``naive``, or a compressor / chain name."""
    ratio: float | None = None
    """Target original/compressed tokens; ``None`` for the references."""

    @property
    def label(self) -> str:
        """``method`` or ``method@3x``."""
        return self.method if self.ratio is None else f"{self.method}@{self.ratio:g}x"


@dataclass(frozen=True, slots=True)
class Context:
    """The context one record gets under one condition."""

    documents: tuple[tuple[str | None, str], ...]
    """``(title, kept text)`` per document, in the original order (empty text: dropped)."""
    tokens_before: int
    tokens_after: int
    ms: float
    """Time to build this context (compression), in milliseconds."""
    error: str | None = None
    """Why the context could not be built (the record then counts as unanswered)."""

    @property
    def text(self) -> str:
        """Every kept text, for the answer-retention check."""
        return "\n".join(text for _, text in self.documents if text)


def reference_contexts(
    records: Sequence[EvalRecord], method: str, counter: TokenCounter
) -> list[Context] | None:
    """``full``, ``none`` or ``gold`` contexts; ``None`` for ``gold`` when no record marks gold."""
    if method == "gold" and not any(r.gold for r in records):
        return None
    out = []
    for record in records:
        total = sum(counter.count_many([p.text for p in record.passages]))
        if method == "full":
            keep = [True] * len(record.passages)
        elif method == "none":
            keep = [False] * len(record.passages)
        else:
            keep = list(record.gold or [False] * len(record.passages))
        documents = tuple(
            (p.title, p.text if k else "") for p, k in zip(record.passages, keep, strict=True)
        )
        after = sum(counter.count_many([text for _, text in documents if text]))
        out.append(Context(documents, total, after, 0.0))
    return out


def random_contexts(
    records: Sequence[EvalRecord], ratio: float, counter: TokenCounter, *, seed: int = 0
) -> list[Context]:
    """Random whole sentences under the ratio's budget (deterministic per record and seed)."""
    out = []
    for record in records:
        started = time.perf_counter()
        spans = [split_sentences(p.text) for p in record.passages]
        units = [(i, span) for i, ps in enumerate(spans) for span in ps]
        costs = counter.count_many([record.passages[i].text[s:e] for i, (s, e) in units])
        total = sum(counter.count_many([p.text for p in record.passages]))
        budget = CompressionOptions(target_ratio=ratio).budget(total) or 0
        order = list(range(len(units)))
        random.Random(f"{seed}:{record.id}:{ratio}").shuffle(order)
        chosen: set[int] = set()
        spent = 0
        for k in order:
            if spent + costs[k] <= budget:
                chosen.add(k)
                spent += costs[k]
        documents = tuple(
            (
                passage.title,
                join_spans(passage.text, [units[k][1] for k in sorted(chosen) if units[k][0] == i]),
            )
            for i, passage in enumerate(record.passages)
        )
        after = sum(counter.count_many([text for _, text in documents if text]))
        out.append(Context(documents, total, after, (time.perf_counter() - started) * 1e3))
    return out


def pipeline_contexts(
    records: Sequence[EvalRecord],
    pipeline: Pipeline,
    ratio: float,
    *,
    chunk: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> list[Context]:
    """Compress every record with ``pipeline`` at ``ratio``, ``chunk`` records per model pass.

    A record the pipeline fails on gets a context with its ``error``; the others go on.
    """
    options = CompressionOptions(target_ratio=ratio)
    out: list[Context] = []
    for start in range(0, len(records), chunk):
        group = records[start : start + chunk]
        requests = [PipelineRequest(r.question, r.passages, options) for r in group]
        started = time.perf_counter()
        results = anyio.run(pipeline.acompress_many, requests)
        ms = (time.perf_counter() - started) * 1e3 / len(group)
        for record, result in zip(group, results, strict=True):
            if isinstance(result, CompressionResult):
                documents = tuple((cp.title, cp.text) for cp in result.passages)
                out.append(Context(documents, result.tokens_before, result.tokens_after, ms))
            else:
                empty = tuple((p.title, "") for p in record.passages)
                out.append(Context(empty, 0, 0, ms, error=f"{type(result).__name__}: {result}"))
        if on_progress is not None:
            on_progress(len(group))
    return out
