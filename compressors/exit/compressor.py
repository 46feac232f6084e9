"""EXIT: context-aware extractive compression with a causal-LM sentence classifier.

EXIT (Hwang et al., *EXIT: Context-Aware Extractive Compression for Enhancing
Retrieval-Augmented Generation*, Findings of ACL 2025, arXiv 2412.12559) asks a small
instruction-tuned LM, for every sentence of the retrieved documents, whether the sentence is
useful for the query *given the full context it appears in*, and keeps the sentence when
P("Yes") >= 0.5. Kept sentences stay in their original order; when no sentence passes, the
context is empty and the reader should answer without retrieval (selective augmentation).

What this implementation adds to the reference code:

* **Exact scores, much faster.** Sentences of one context share the prompt up to the sentence;
  that prefix runs through the model once and its key/value cache serves every sentence, in
  length-bucketed batches (:mod:`ragpress.compressors.exit.scoring`).
* **Correct truncation.** Only the context is cut when a prompt exceeds the window; the query,
  sentence and question always reach the model (:meth:`ExitClassifier.fit`).
* **Provenance.** Every document comes back, with the exact character spans it kept.
* **Budget mode.** ``selection="budget"`` keeps the highest-P(Yes) sentences until the token
  budget is spent, so EXIT takes the same ``target_ratio`` / ``rate`` / ``target_tokens`` as the
  other methods. In the default ``"threshold"`` mode a budget only caps what passes τ.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ragpress.compressors._keep import keep_exceeds_budget, units_holding
from ragpress.compressors.base import BaseCompressor
from ragpress.compressors.exit.model import DEFAULT_EXIT_MODEL, ExitClassifier
from ragpress.compressors.exit.prompt import all_documents_context, document_context
from ragpress.compressors.exit.scoring import ScoringLimits
from ragpress.exceptions import (
    CompressionError,
    ConfigurationError,
    RequestValidationError,
)
from ragpress.provenance import join_spans
from ragpress.segmentation import DEFAULT_MAX_SENTENCE_CHARS, split_sentences
from ragpress.tokens import DEFAULT_ENCODING, get_token_counter
from ragpress.types import CompressedPassage, CompressionResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.compressors.exit.model import DType, FittedPrompts
    from ragpress.types import CompressionOptions, Passage, Span

__all__ = ["ExitAnalysis", "ExitCompressor"]

logger = logging.getLogger("ragpress.compressors.exit")

ContextMode = Literal["document", "all"]
SelectionMode = Literal["threshold", "budget"]
_ANALYSIS_SCHEMA = 1


@dataclass(frozen=True, slots=True)
class ExitAnalysis:
    """What EXIT knows about a passage before seeing a query (cached by the pipeline)."""

    spans: tuple[Span, ...]
    """Character spans of the sentences."""
    tokens: tuple[int, ...]
    """Tokens per sentence, in the budget tokenizer."""
    text_tokens: int
    """Tokens of the whole passage text."""


class ExitCompressor(BaseCompressor):
    """Keeps the sentences a causal-LM classifier judges useful for the query (EXIT).

    Args:
        classifier: A loaded :class:`ExitClassifier` to share between compressors; when
            ``None``, ``model`` is loaded.
        model: Hub id or folder of the classifier: a causal LM or a peft adapter on one.
        base_model: For an adapter, the base model to load instead of the one it names.
        revision: Hub revision of ``model``.
        threshold: Keep a sentence when P(Yes) >= this (τ; the paper uses 0.5).
        context: ``"document"`` judges each sentence within its own document (the paper);
            ``"all"`` within all the documents of the request (the EXIT quickstart).
        selection: ``"threshold"`` keeps what passes τ (a budget, if given, caps it);
            ``"budget"`` keeps the highest-P(Yes) sentences until the budget is spent.
        fallback_top_k: When nothing passes τ, keep this many best sentences anyway; 0 (the
            paper) returns an empty context.
        max_prompt_tokens: Longest prompt; only the context is cut. ``None``: model window.
        batch_size: Most prompts per forward pass.
        max_batch_tokens: Most token positions per forward pass (bounds memory).
        device: Torch device for the model.
        dtype: ``"auto"`` (bf16/fp16 on GPU, fp32 on CPU), or an explicit dtype.
        merge_adapter: Fold a LoRA adapter into the base weights for faster inference.
        tokenizer: What budgets are counted in (see :func:`ragpress.tokens.get_token_counter`).
        language: Language code for sentence splitting.
        max_sentence_chars: Longest unit the splitter returns.
    """

    name: ClassVar[str] = "exit"
    version: ClassVar[str] = "1"
    config_keys: ClassVar[tuple[str, ...]] = (
        "model",
        "base_model",
        "revision",
        "threshold",
        "context",
        "selection",
        "fallback_top_k",
        "max_prompt_tokens",
        "batch_size",
        "max_batch_tokens",
        "device",
        "dtype",
        "merge_adapter",
        "tokenizer",
        "language",
        "max_sentence_chars",
    )
    injected_keys: ClassVar[tuple[str, ...]] = ("classifier",)
    analysis_artefact: ClassVar[str | None] = "exit_sentences"

    def __init__(
        self,
        classifier: ExitClassifier | None = None,
        *,
        model: str = DEFAULT_EXIT_MODEL,
        base_model: str | None = None,
        revision: str | None = None,
        threshold: float = 0.5,
        context: ContextMode = "document",
        selection: SelectionMode = "threshold",
        fallback_top_k: int = 0,
        max_prompt_tokens: int | None = None,
        batch_size: int = 32,
        max_batch_tokens: int = 16_384,
        device: str = "cpu",
        dtype: DType = "auto",
        merge_adapter: bool = True,
        tokenizer: str = DEFAULT_ENCODING,
        language: str = "en",
        max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS,
    ) -> None:
        _check_config(
            threshold=threshold,
            context=context,
            selection=selection,
            fallback_top_k=fallback_top_k,
            max_prompt_tokens=max_prompt_tokens,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            max_sentence_chars=max_sentence_chars,
        )
        self.base_model = base_model
        self.revision = revision
        self.threshold = float(threshold)
        self.context: ContextMode = context
        self.selection: SelectionMode = selection
        self.fallback_top_k = fallback_top_k
        self.max_prompt_tokens = max_prompt_tokens
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.device = device
        self.dtype: DType = dtype
        self.merge_adapter = merge_adapter
        self.tokenizer = tokenizer
        self.language = language
        self.max_sentence_chars = max_sentence_chars
        self._counter = get_token_counter(tokenizer)
        self._owns_classifier = classifier is None
        if classifier is None:
            classifier = ExitClassifier.from_pretrained(
                model,
                base_model=base_model,
                revision=revision,
                device=device,
                dtype=dtype,
                merge_adapter=merge_adapter,
            )
        self.model = classifier.name
        self._classifier: ExitClassifier | None = classifier

    @property
    def classifier(self) -> ExitClassifier:
        """The loaded classifier.

        Raises:
            CompressionError: The compressor was closed.
        """
        if self._classifier is None:
            raise CompressionError("this exit compressor was closed; create a new one")
        return self._classifier

    def model_revision(self) -> str:
        """The classifier's weights (base model and adapter)."""
        return self.classifier.revision

    def close(self) -> None:
        """Release the model (when this compressor loaded it)."""
        if self._owns_classifier and self._classifier is not None:
            self._classifier = None
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- query-independent analysis ------------------------------------------------------------

    def analyze(self, passages: Sequence[Passage]) -> list[ExitAnalysis]:
        """Split every passage into sentences and count their tokens."""
        spans = [
            split_sentences(p.text, language=self.language, max_chars=self.max_sentence_chars)
            for p in passages
        ]
        counts = self._counter.count_many(
            [p.text[s:e] for p, ps in zip(passages, spans, strict=True) for s, e in ps]
        )
        text_tokens = self._counter.count_many([p.text for p in passages])
        out: list[ExitAnalysis] = []
        offset = 0
        for passage_spans, total in zip(spans, text_tokens, strict=True):
            n = len(passage_spans)
            out.append(
                ExitAnalysis(tuple(passage_spans), tuple(counts[offset : offset + n]), total)
            )
            offset += n
        return out

    def encode_analysis(self, analysis: ExitAnalysis) -> bytes:
        """Serialise as compact JSON."""
        payload = {
            "schema": _ANALYSIS_SCHEMA,
            "spans": [list(s) for s in analysis.spans],
            "tokens": list(analysis.tokens),
            "text_tokens": analysis.text_tokens,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    def decode_analysis(self, data: bytes) -> ExitAnalysis:
        """Inverse of :meth:`encode_analysis`."""
        payload = json.loads(data)
        if payload.get("schema") != _ANALYSIS_SCHEMA:
            raise ValueError(f"unknown exit analysis schema {payload.get('schema')!r}")
        return ExitAnalysis(
            spans=tuple((int(s), int(e)) for s, e in payload["spans"]),
            tokens=tuple(int(t) for t in payload["tokens"]),
            text_tokens=int(payload["text_tokens"]),
        )

    def check_analysis(self, item: Any, analysis: Any) -> None:
        """Refuse a cached analysis that cannot be this passage's (issue 21).

        Spans must be the text's sentences (inside it, in order, covering it) and every
        sentence at least one token.

        Raises:
            ValueError: Saying what does not fit; the pipeline then recomputes the analysis.
        """
        from ragpress.compressors._checks import check_counts, check_sentence_spans

        if not isinstance(analysis, ExitAnalysis):
            raise ValueError(f"expected an ExitAnalysis, got {type(analysis).__name__}")
        text: str = item.text
        count = check_sentence_spans(text, list(analysis.spans)).shape[0]
        check_counts(text, list(analysis.tokens), count, analysis.text_tokens)

    # -- scoring -------------------------------------------------------------------------------

    def prompts(
        self,
        query: str,
        passages: Sequence[Passage],
        analyses: Sequence[ExitAnalysis] | None = None,
    ) -> list[FittedPrompts]:
        """The classifier prompts: one group per document, or one for all (``context="all"``).

        Groups follow document order and, within a group, sentence order; documents without
        sentences have no group in ``"document"`` mode.
        """
        if analyses is None:
            analyses = self.analyze(passages)
        sentences = [
            [p.text[s:e] for s, e in a.spans] for p, a in zip(passages, analyses, strict=True)
        ]
        classifier = self.classifier
        limit = self.max_prompt_tokens
        if self.context == "all":
            flat = [s for doc in sentences for s in doc]
            if not flat:
                return []
            context = all_documents_context(passages)
            return [classifier.fit(query, context, flat, max_prompt_tokens=limit)]
        return [
            classifier.fit(query, document_context(p.title, p.text), doc, max_prompt_tokens=limit)
            for p, doc in zip(passages, sentences, strict=True)
            if doc
        ]

    def score(
        self,
        query: str,
        passages: Sequence[Passage],
        analyses: Sequence[ExitAnalysis] | None = None,
    ) -> list[list[float]]:
        """P(Yes) of every sentence of every passage (empty list for a passage without any)."""
        return self._score(query, passages, analyses)[0]

    def _score(
        self,
        query: str,
        passages: Sequence[Passage],
        analyses: Sequence[ExitAnalysis] | None,
    ) -> tuple[list[list[float]], list[str]]:
        if analyses is None:
            analyses = self.analyze(passages)
        groups = self.prompts(query, passages, analyses)
        limits = ScoringLimits(batch_size=self.batch_size, max_batch_tokens=self.max_batch_tokens)
        grouped = self.classifier.score(groups, limits=limits)
        counts = [len(a.spans) for a in analyses]
        with_sentences = [i for i, n in enumerate(counts) if n]
        scores: list[list[float]] = [[] for _ in passages]
        notes: list[str] = []
        if self.context == "all":
            flat = grouped[0] if grouped else []
            offset = 0
            for i, n in enumerate(counts):
                scores[i] = flat[offset : offset + n]
                offset += n
            if groups and groups[0].truncated:
                notes.append(_truncation_note("the combined context", groups[0], self))
        else:
            for i, group, group_scores in zip(with_sentences, groups, grouped, strict=True):
                scores[i] = group_scores
                if group.truncated:
                    notes.append(_truncation_note(f"docs[{i}]", group, self))
        if logger.isEnabledFor(logging.DEBUG):
            for i, (passage, a) in enumerate(zip(passages, analyses, strict=True)):
                for k, ((s, e), p) in enumerate(zip(a.spans, scores[i], strict=True)):
                    logger.debug("exit P(Yes)=%.4f docs[%d][%d] %.80r", p, i, k, passage.text[s:e])
        return scores, notes

    # -- selection -----------------------------------------------------------------------------

    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage],
        options: CompressionOptions,
        *,
        analyses: Sequence[Any] | None = None,
    ) -> CompressionResult:
        """Keep the sentences the classifier judges useful for ``query``.

        Raises:
            RequestValidationError: No query (EXIT judges sentences against one), or the query
                alone does not fit the model window.
            BudgetError: The sentences holding ``options.keep`` strings exceed the budget.
        """
        if query is None or not query.strip():
            raise RequestValidationError(
                "exit judges each sentence against a question, and the request has none; "
                "give a question, or use a query-agnostic method",
                param="query",
            )
        if analyses is None:
            analyses = self.analyze(passages)
        total = sum(a.text_tokens for a in analyses)
        budget = options.budget(total)
        forced = [
            units_holding(p.text, a.spans, options.keep)
            for p, a in zip(passages, analyses, strict=True)
        ]
        scores, notes = self._score(query, passages, analyses) if passages else ([], [])
        chosen, selection_notes = self._select(scores, analyses, forced, budget, options)
        notes.extend(selection_notes)
        kept_spans = [
            tuple(a.spans[k] for k in sorted(c)) for a, c in zip(analyses, chosen, strict=True)
        ]
        texts = [join_spans(p.text, spans) for p, spans in zip(passages, kept_spans, strict=True)]
        after = self._counter.count_many(texts)
        results = tuple(
            CompressedPassage(
                source=passage,
                text=text,
                spans=spans,
                tokens_before=a.text_tokens,
                tokens_after=tokens,
                score=max(s) if s else None,
            )
            for passage, a, spans, text, tokens, s in zip(
                passages, analyses, kept_spans, texts, after, scores, strict=True
            )
        )
        return CompressionResult(
            passages=results,
            method=self.name,
            tokens_before=total,
            tokens_after=sum(after),
            notes=tuple(notes),
        )

    def _select(
        self,
        scores: Sequence[Sequence[float]],
        analyses: Sequence[ExitAnalysis],
        forced: Sequence[set[int]],
        budget: int | None,
        options: CompressionOptions,
    ) -> tuple[list[set[int]], list[str]]:
        """Sentences to keep per passage, and what the caller should know about the choice."""
        chosen = [set(f) for f in forced]
        spent = sum(analyses[d].tokens[k] for d, f in enumerate(forced) for k in f)
        if budget is not None and spent > budget:
            raise keep_exceeds_budget(options.keep, spent, budget)
        ranked = sorted(
            (
                (-p, d, k)
                for d, doc in enumerate(scores)
                for k, p in enumerate(doc)
                if k not in chosen[d]
            ),
        )
        total_sentences = sum(len(doc) for doc in scores)
        notes: list[str] = []
        fill_budget = self.selection == "budget" and budget is not None
        if self.selection == "budget" and budget is None:
            notes.append(
                f"exit: selection='budget' but the request has no budget; kept the sentences "
                f"with P(Yes) >= {self.threshold}"
            )
        candidates = ranked if fill_budget else [r for r in ranked if -r[0] >= self.threshold]
        left_out = 0
        for _, d, k in candidates:
            cost = analyses[d].tokens[k]
            if budget is None or spent + cost <= budget:
                chosen[d].add(k)
                spent += cost
            else:
                left_out += 1
        if left_out and not fill_budget:
            notes.append(
                f"exit: {left_out} sentences with P(Yes) >= {self.threshold} did not fit the "
                f"budget of {budget} tokens; the highest-scoring ones were kept"
            )
        if not any(chosen) and total_sentences:
            notes.append(self._empty_note(ranked, candidates, chosen, analyses, budget, spent))
        kept = sum(len(c) for c in chosen)
        rule = "highest P(Yes) within the budget" if fill_budget else f"P(Yes) >= {self.threshold}"
        notes.append(
            f"exit: kept {kept} of {total_sentences} sentences ({rule}; context={self.context})"
        )
        return chosen, notes

    def _empty_note(
        self,
        ranked: list[tuple[float, int, int]],
        candidates: list[tuple[float, int, int]],
        chosen: list[set[int]],
        analyses: Sequence[ExitAnalysis],
        budget: int | None,
        spent: int,
    ) -> str:
        """Explain an empty selection; apply ``fallback_top_k`` when nothing passed τ."""
        if candidates:  # sentences passed (or budget mode), but none fits the budget
            return f"exit: no sentence fits the budget of {budget} tokens; the context is empty"
        best, best_doc, _ = ranked[0]
        reached = (
            f"exit: no sentence reached P(Yes) >= {self.threshold} (highest {-best:.3f}, "
            f"docs[{best_doc}])"
        )
        if not self.fallback_top_k:
            return (
                f"{reached}; the context is empty, so answer without retrieval "
                "(selective augmentation)"
            )
        for _, d, k in ranked[: self.fallback_top_k]:
            if budget is None or spent + analyses[d].tokens[k] <= budget:
                chosen[d].add(k)
                spent += analyses[d].tokens[k]
        return f"{reached}; kept the best {self.fallback_top_k} as fallback_top_k asks"


def _check_config(
    *,
    threshold: float,
    context: str,
    selection: str,
    fallback_top_k: int,
    max_prompt_tokens: int | None,
    batch_size: int,
    max_batch_tokens: int,
    max_sentence_chars: int,
) -> None:
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigurationError(f"threshold={threshold} must be in [0, 1] (the paper uses 0.5)")
    if context not in ("document", "all"):
        raise ConfigurationError(f"context={context!r} must be 'document' or 'all'")
    if selection not in ("threshold", "budget"):
        raise ConfigurationError(f"selection={selection!r} must be 'threshold' or 'budget'")
    if fallback_top_k < 0:
        raise ConfigurationError(f"fallback_top_k={fallback_top_k} must be >= 0")
    if max_prompt_tokens is not None and max_prompt_tokens < 32:
        raise ConfigurationError(
            f"max_prompt_tokens={max_prompt_tokens} must be >= 32, or None for the model window"
        )
    if batch_size < 1:
        raise ConfigurationError(f"batch_size={batch_size} must be >= 1")
    if max_batch_tokens < 64:
        raise ConfigurationError(f"max_batch_tokens={max_batch_tokens} must be >= 64")
    if max_sentence_chars < 20:
        raise ConfigurationError(f"max_sentence_chars={max_sentence_chars} must be >= 20")


def _truncation_note(where: str, group: FittedPrompts, compressor: ExitCompressor) -> str:
    limit = compressor.max_prompt_tokens or compressor.classifier.window
    return (
        f"exit: {where} was cut to its first {group.kept_context_tokens} of "
        f"{group.context_tokens} context tokens to fit max_prompt_tokens={limit}; the query, "
        "the sentences and the question are whole"
    )
