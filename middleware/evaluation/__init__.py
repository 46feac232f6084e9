"""Answer-level evaluation: does the compressed context still get the right answer?

``ragpress eval`` (and :func:`evaluate` from Python) runs a real reader LLM on records with gold
answers under the full context, no context, the gold passages alone, simple baselines and each
compressor at each target ratio, and reports accuracy with a bootstrap interval, exact match,
token F1, answer retention, the achieved ratio and the time spent.

* :mod:`~ragpress.middleware.evaluation.records` — records and the reader's prompt;
* :mod:`~ragpress.middleware.evaluation.contexts` — references, baselines, compressors;
* :mod:`~ragpress.middleware.evaluation.reader` — local (transformers) and OpenAI-compatible
  readers;
* :mod:`~ragpress.middleware.evaluation.metrics` — accuracy, EM, F1, bootstrap;
* :mod:`~ragpress.middleware.evaluation.runner` — :func:`evaluate`;
* :mod:`~ragpress.middleware.evaluation.report` — JSON, Markdown table and PNG plot.

Example:
    >>> from ragpress.middleware.evaluation import evaluate, load_eval_records  # doctest: +SKIP
    >>> records, _ = load_eval_records("nq_dev.jsonl.gz", limit=100)           # doctest: +SKIP
"""

from __future__ import annotations

from ragpress.middleware.evaluation.contexts import NAIVE_PARAMS, Condition
from ragpress.middleware.evaluation.reader import OpenAIReader, Reader, TransformersReader
from ragpress.middleware.evaluation.records import EvalRecord, load_eval_records
from ragpress.middleware.evaluation.report import write_report
from ragpress.middleware.evaluation.runner import ConditionSummary, EvalReport, evaluate

__all__ = [
    "NAIVE_PARAMS",
    "Condition",
    "ConditionSummary",
    "EvalRecord",
    "EvalReport",
    "OpenAIReader",
    "Reader",
    "TransformersReader",
    "evaluate",
    "load_eval_records",
    "write_report",
]
