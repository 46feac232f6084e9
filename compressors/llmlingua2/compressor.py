"""LLMLingua-2: token classification decides, word by word, what survives.

LLMLingua-2 (Pan et al., Findings of ACL 2024, arXiv 2403.12968) trains an encoder to label
every token "keep" or "drop" from data distilled from GPT-4, and compresses by keeping the
words with the highest keep-probability. It is task-agnostic: the probabilities do not depend
on the query, so ragpress caches them per document and a document seen before never reaches
the model again.

Two modes:

* ``"fixed"`` (default): the same word probabilities, a **global** token budget across all
  chunks and documents (counted in the target tokenizer, hit within a few percent), output
  **cut from the original string** by the tokenizer's offsets (casing, spacing, punctuation,
  Markdown and newlines survive; provenance spans are exact), each tokenizer's own special
  tokens, and an optional probability-threshold mode.
* ``"compat"``: reproduces ``llmlingua==0.2.2``'s ``compress_prompt(..., use_llmlingua2=True)``
  exactly (text, kept words, cl100k counts), quirks included; see
  :mod:`ragpress.compressors.llmlingua2.compat`.

Question-aware use is a chain: a coarse stage ranks or trims documents for the query, then this
one compresses what is left (``method = "sentence_selection+llmlingua2"``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ragpress.compressors.base import BaseCompressor
from ragpress.compressors.llmlingua2.compat import (
    CompatChunks,
    CompatOptions,
    CompatResult,
    LLMLingua2Compat,
    WordRules,
    decode_chunks,
    encode_chunks,
)
from ragpress.compressors.llmlingua2.model import DType, RequestBatcher, load_token_classifier
from ragpress.compressors.llmlingua2.words import (
    WordPooling,
    chunk_bounds,
    pool_words,
    tokenize_texts,
)
from ragpress.exceptions import BudgetError, ConfigurationError, MissingDependencyError
from ragpress.hub import model_revision
from ragpress.provenance import join_spans
from ragpress.tokens import DEFAULT_ENCODING, get_token_counter
from ragpress.types import CompressedPassage, CompressionOptions, CompressionResult

try:
    import numpy as np
    from safetensors.numpy import load as load_arrays
    from safetensors.numpy import save as save_arrays
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "numpy", extra="llmlingua2") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from ragpress.types import Passage, Span

__all__ = ["DEFAULT_MODEL", "LLMLingua2Compressor", "WordAnalysis"]

DEFAULT_MODEL = "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
DEFAULT_RATE = 0.5
_SCHEMA = "1"
_CALIBRATION_TOLERANCE = 0.02
_MEMO_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class WordAnalysis:
    """Query-independent view of one passage: its words and their keep-probabilities."""

    spans: npt.NDArray[np.int64]
    """``(w, 2)`` character spans of the words in the passage text."""
    probs: npt.NDArray[np.float32]
    """``(w,)`` P(keep) of each word (mean or first of its pieces)."""
    tokens: npt.NDArray[np.int64]
    """``(w,)`` tokens of each word (with its leading space) in the counting tokenizer."""
    text_tokens: int
    """Tokens of the whole passage text."""

    @property
    def count(self) -> int:
        """Number of words."""
        return int(self.probs.shape[0])


class LLMLingua2Compressor(BaseCompressor):
    """Keeps the words a token classifier scores highest, under a global token budget.

    Args:
        model: Hub id or local folder of a 2-label token-classification checkpoint, e.g.
            ``microsoft/llmlingua-2-xlm-roberta-large-meetingbank`` or
            ``microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank``.
        revision: Hub revision (commit, branch or tag) to load.
        mode: ``"fixed"`` (global budget, output cut from the original) or ``"compat"``
            (llmlingua 0.2.2's exact output).
        device: Torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        dtype: ``auto`` (float32 on CPU, float16 on CUDA), ``float32``, ``float16``,
            ``bfloat16``.
        tokenizer: What budgets are counted in (fixed mode; compat counts cl100k like the
            reference).
        word_pooling: A word's probability: the ``mean`` of its pieces or the ``first``.
        force_tokens: Strings always kept (``"\\n"``, ``"."``, ``"?"``, names...).
        force_reserve_digit: Always keep words that contain a digit.
        drop_consecutive: Compat mode: drop a repeated force token with nothing kept between.
        context_filter: Drop whole low-scoring documents first (LLMLingua-2's context-level
            filter); fixed mode reuses the word probabilities, so there is one forward pass.
        threshold: Fixed mode: keep every word with P(keep) >= threshold instead of filling a
            ratio budget (``target_tokens`` still caps the output).
        word_rules: Compat mode's word rules; ``auto`` reads them from the tokenizer's model
            (WordPiece or SentencePiece), never from the checkpoint name.
        max_batch_tokens: Padded tokens per forward pass.
        trust_remote_code: Allow checkpoints that ship their own modelling code.
        backend: ``torch``, or ``onnx`` to run the same weights with ONNX Runtime (exported
            once; faster on CPU, probabilities equal to float rounding; extra ``onnx``).
        onnx_path: Where the exported model is kept (default: under ``~/.cache/ragpress``).
        quantize: ``"int8"`` (with ``backend="onnx"``, CPU, fixed mode): run an int8
            dynamically quantized copy of the exported model (ONNX Runtime's
            ``quantize_dynamic``: int8 MatMul weights, per-channel, fp32 head). About 2x faster
            than ONNX fp32 and 2.9-3.5x faster than torch fp32 on BERT-base-sized and larger
            models in the bench (VNNI CPU; little gain on tiny ones), but the probabilities
            change, so 1-6% of words can get another keep decision
            (``docs/compressors/llmlingua2.md``, "Int8"); its own cache file and cache keys.
            Compat mode refuses it: its point is the reference's exact output.
    """

    name: ClassVar[str] = "llmlingua2"
    version: ClassVar[str] = "1"
    config_keys: ClassVar[tuple[str, ...]] = (
        "model",
        "revision",
        "mode",
        "device",
        "dtype",
        "tokenizer",
        "word_pooling",
        "force_tokens",
        "force_reserve_digit",
        "drop_consecutive",
        "context_filter",
        "threshold",
        "word_rules",
        "max_batch_tokens",
        "trust_remote_code",
        "backend",
        "onnx_path",
        "quantize",
    )
    analysis_artefact: ClassVar[str | None] = "llmlingua2_words"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        mode: Literal["fixed", "compat"] = "fixed",
        device: str = "cpu",
        dtype: DType = "auto",
        tokenizer: str = DEFAULT_ENCODING,
        word_pooling: WordPooling = "mean",
        force_tokens: Sequence[str] = (),
        force_reserve_digit: bool = False,
        drop_consecutive: bool = False,
        context_filter: bool = False,
        threshold: float | None = None,
        word_rules: Literal["auto", "wordpiece", "sentencepiece"] = "auto",
        max_batch_tokens: int = 16384,
        trust_remote_code: bool = False,
        backend: Literal["torch", "onnx"] = "torch",
        onnx_path: str | None = None,
        quantize: Literal["int8"] | None = None,
    ) -> None:
        if mode not in ("fixed", "compat"):
            raise ConfigurationError(f"mode={mode!r} must be 'fixed' or 'compat'")
        if word_pooling not in ("mean", "first"):
            raise ConfigurationError(f"word_pooling={word_pooling!r} must be 'mean' or 'first'")
        if isinstance(force_tokens, str):
            raise ConfigurationError(
                f"force_tokens must be a list of strings, not the string {force_tokens!r}"
            )
        if threshold is not None and not (math.isfinite(threshold) and 0 <= threshold <= 1):
            raise ConfigurationError(f"threshold={threshold} must be a probability in [0, 1]")
        if backend not in ("torch", "onnx"):
            raise ConfigurationError(f"backend={backend!r} must be 'torch' or 'onnx'")
        _check_quantize(quantize, backend=backend, mode=mode, device=device, dtype=dtype)
        if max_batch_tokens < 512:
            raise ConfigurationError(f"max_batch_tokens={max_batch_tokens} must be >= 512")
        self.model = model
        self.revision = revision
        self.mode = mode
        self.device = device
        self.dtype = dtype
        self.tokenizer = tokenizer
        self.word_pooling: WordPooling = word_pooling
        self.force_tokens = list(force_tokens)
        self.force_reserve_digit = bool(force_reserve_digit)
        self.drop_consecutive = bool(drop_consecutive)
        self.context_filter = bool(context_filter)
        self.threshold = None if threshold is None else float(threshold)
        self.max_batch_tokens = int(max_batch_tokens)
        self.trust_remote_code = bool(trust_remote_code)
        self._counter = get_token_counter(tokenizer)
        self._classifier = load_token_classifier(
            model,
            revision=revision,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
        )
        self.word_rules = word_rules
        self._rules: WordRules = (
            word_rules if word_rules != "auto" else _detect_rules(self._classifier.backend)
        )
        self._lock = threading.Lock()
        self._batcher = RequestBatcher(self._classifier, max_batch_tokens=self.max_batch_tokens)
        self._word_memo: dict[str, int] = {}
        self._compat = LLMLingua2Compat(self._classifier, self._rules) if mode == "compat" else None
        self.backend = backend
        self.onnx_path = onnx_path
        self.quantize = quantize
        if backend == "onnx":
            self._classifier.use_onnx(
                onnx_path or self._default_onnx_path(),
                int8=quantize == "int8",
                check_existing=onnx_path is not None,  # default names say the precision
            )

    def _default_onnx_path(self) -> str:
        """``~/.cache/ragpress/onnx/<hash of weights, mode, versions>/model[.int8].onnx``."""
        import hashlib

        key = f"{self.model_revision()}|{self.mode}|{self.model}|torch-{package_version('torch')}"
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        name = "model.int8.onnx" if self.quantize == "int8" else "model.onnx"
        return str(Path.home() / ".cache" / "ragpress" / "onnx" / digest / name)

    def model_revision(self) -> str:
        """The checkpoint's revision, plus what else changes the probabilities (see below).

        Compat mode resizes the embeddings with random rows for ``[NEWi]`` tokens, and their
        initialisation depends on the transformers release. Int8 weights depend on the
        quantization recipe and the onnxruntime release that applies it.
        """
        revision = self.revision or model_revision(self.model)
        if self.mode == "compat":
            revision += f"+transformers-{package_version('transformers')}"
        if self.quantize == "int8":
            from ragpress.compressors.llmlingua2.quantize import RECIPE

            revision += f"+{RECIPE}+onnxruntime-{package_version('onnxruntime')}"
        return revision

    # -- query-independent analysis ------------------------------------------------------------

    def analyze(self, passages: Sequence[Passage]) -> list[Any]:
        """Word probabilities of every passage: one tokenization pass, one batched inference."""
        if self._compat is not None:
            return list(self._compat.prepare([p.text for p in passages], self._compat_options()))
        return self._analyze_fixed([p.text for p in passages])

    def _analyze_fixed(self, texts: list[str]) -> list[WordAnalysis]:
        classifier = self._classifier
        tokenized = tokenize_texts(classifier.backend, texts)
        sequences: list[npt.NDArray[np.int64]] = []
        owners: list[int] = []
        for index, tokens in enumerate(tokenized):
            for start, end in chunk_bounds(tokens, classifier.content_length):
                if end > start:
                    sequences.append(tokens.ids[start:end])
                    owners.append(index)
        probs = self._batcher.keep_probabilities([s.tolist() for s in sequences])
        per_text: list[list[npt.NDArray[np.float32]]] = [[] for _ in texts]
        for owner, p in zip(owners, probs, strict=True):
            per_text[owner].append(p)
        out: list[WordAnalysis] = []
        for text, tokens, parts in zip(texts, tokenized, per_text, strict=True):
            token_probs = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
            spans, word_probs = pool_words(tokens, token_probs, self.word_pooling)
            counts, total = self._word_counts(text, spans)
            out.append(WordAnalysis(spans, word_probs, counts, total))
        return out

    def _word_counts(
        self, text: str, spans: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], int]:
        """Tokens of each word (with its leading space, as it reads in the output) and of the text.

        Counting words one by one predicts the output's count better than crediting the text's
        tokens in context (a kept word's neighbours change). Counts are memoised per word
        string, since words repeat (Zipf), which keeps this linear and cheap.
        """
        words = [_with_space(text, s, e) for s, e in spans.tolist()]
        memo = self._word_memo
        missing = list({w for w in words if w not in memo})
        if missing:
            if len(memo) > _MEMO_LIMIT:
                memo.clear()
            encoding = getattr(self._counter, "encoding", None)
            if encoding is not None:  # tiktoken: a plain loop beats its thread-pool batch here
                memo.update((w, len(encoding.encode_ordinary(w))) for w in missing)
            else:
                memo.update(zip(missing, self._counter.count_many(missing), strict=True))
        counts = np.fromiter((memo[w] for w in words), dtype=np.int64, count=len(words))
        return counts, self._counter.count(text)

    def encode_analysis(self, analysis: Any) -> bytes:
        """Serialise with safetensors (arrays plus a small JSON header), never pickle."""
        if isinstance(analysis, CompatChunks):
            return encode_chunks(analysis)
        return bytes(
            save_arrays(
                {
                    "spans": analysis.spans,
                    "probs": analysis.probs,
                    "tokens": analysis.tokens,
                    "text_tokens": np.asarray([analysis.text_tokens], dtype=np.int64),
                },
                metadata={"schema": _SCHEMA, "kind": "fixed"},
            )
        )

    def decode_analysis(self, data: bytes) -> Any:
        """Inverse of :meth:`encode_analysis`."""
        if self._compat is not None:
            return decode_chunks(data)
        arrays = load_arrays(data)
        return WordAnalysis(
            spans=arrays["spans"].reshape(-1, 2),
            probs=arrays["probs"],
            tokens=arrays["tokens"],
            text_tokens=int(arrays["text_tokens"][0]),
        )

    def check_analysis(self, item: Any, analysis: Any) -> None:
        """Refuse a cached analysis that cannot be this passage's (issue 21).

        Fixed mode: word spans inside the text, in order and disjoint, one probability in
        [0, 1] and a token count of at least 1 per word. Compat mode: one probability in
        [0, 1] per input id of each chunk, ids inside the vocabulary.

        Raises:
            ValueError: Saying what does not fit; the pipeline then recomputes the analysis.
        """
        from ragpress.compressors._checks import check_counts, check_spans, check_vectors

        if self._compat is not None:
            if not isinstance(analysis, CompatChunks):
                raise ValueError(f"expected CompatChunks, got {type(analysis).__name__}")
            if not len(analysis.chunks) == len(analysis.ids) == len(analysis.probs):
                raise ValueError("chunks, ids and probabilities differ in number")
            vocabulary = len(self._classifier.tokenizer)
            for ids, probs in zip(analysis.ids, analysis.probs, strict=True):
                check_vectors(probs, (len(ids),), "keep probabilities")
                if len(ids) and (np.min(ids) < 0 or np.max(ids) >= vocabulary):
                    raise ValueError(f"token ids outside the vocabulary of {vocabulary}")
                _check_probabilities(probs)
            return
        if not isinstance(analysis, WordAnalysis):
            raise ValueError(f"expected a WordAnalysis, got {type(analysis).__name__}")
        text: str = item.text
        count = check_spans(text, analysis.spans, what="word span").shape[0]
        check_vectors(analysis.probs, (count,), "keep probabilities")
        _check_probabilities(analysis.probs)
        check_counts(text, analysis.tokens, count, analysis.text_tokens)

    # -- compression ---------------------------------------------------------------------------

    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage],
        options: CompressionOptions,
        *,
        analyses: Sequence[Any] | None = None,
    ) -> CompressionResult:
        """Keep the highest-scoring words of all passages within the budget in ``options``.

        The query is not used: LLMLingua-2 is task-agnostic. Chain a query-aware coarse stage
        in front for question-aware compression.

        Raises:
            BudgetError: The forced words (``keep``, ``force_tokens``, digits) alone need more
                tokens than the budget allows.
        """
        if self._compat is not None:
            return self._compress_compat(passages, options, analyses)
        if analyses is None:
            analyses = self._analyze_fixed([p.text for p in passages])
        return self._compress_fixed(passages, options, list(analyses))

    def compress_prompt(
        self, context: str | Sequence[str], options: CompatOptions | None = None
    ) -> CompatResult:
        """Llmlingua 0.2.2's ``compress_prompt(context, ...)`` (compat mode only).

        Args:
            context: One text or a list of contexts.
            options: The reference's arguments; its defaults when ``None``.

        Raises:
            ConfigurationError: The compressor was not built with ``mode="compat"``.
        """
        if self._compat is None:
            raise ConfigurationError("compress_prompt needs LLMLingua2Compressor(mode='compat')")
        contexts = [context] if isinstance(context, str) else list(context)
        options = options or CompatOptions()
        with self._lock:
            return self._compat.compress(contexts, options)

    def _compat_options(self, options: CompressionOptions | None = None) -> CompatOptions:
        rate, target = DEFAULT_RATE, -1
        keep: tuple[str, ...] = ()
        if options is not None:
            options = options.fixed()  # word probabilities know no evidence-sized budget
            keep = tuple(k for k in options.keep if k not in self.force_tokens)
            if options.rate is not None:
                rate = options.rate
            elif options.target_ratio is not None and not isinstance(options.target_ratio, str):
                rate = 1 / options.target_ratio
            elif options.target_tokens is not None:
                target = options.target_tokens
        return CompatOptions(
            rate=rate,
            target_token=target,
            use_context_level_filter=self.context_filter,
            force_tokens=(*self.force_tokens, *keep),
            force_reserve_digit=self.force_reserve_digit,
            drop_consecutive=self.drop_consecutive,
            token_to_word=self.word_pooling,
        )

    def _compress_compat(
        self,
        passages: Sequence[Passage],
        options: CompressionOptions,
        analyses: Sequence[Any] | None,
    ) -> CompressionResult:
        assert self._compat is not None
        compat_options = self._compat_options(options)
        prepared = None if analyses is None or options.keep else list(analyses)
        texts = [p.text for p in passages]
        with self._lock:
            result = self._compat.compress(texts, compat_options, prepared)
        kept = dict(zip(result.kept_contexts, result.compressed_prompt_list, strict=True))
        before = [self._compat.count(t) for t in texts]
        out = tuple(
            CompressedPassage(
                source=p,
                text=kept.get(i, ""),
                spans=None,
                tokens_before=before[i],
                tokens_after=self._compat.count(kept[i]) if i in kept else 0,
            )
            for i, p in enumerate(passages)
        )
        return CompressionResult(
            passages=out,
            method=self.name,
            tokens_before=result.origin_tokens,
            tokens_after=result.compressed_tokens,
        )

    def _compress_fixed(
        self,
        passages: Sequence[Passage],
        options: CompressionOptions,
        analyses: list[WordAnalysis],
    ) -> CompressionResult:
        total = sum(a.text_tokens for a in analyses)
        forced = [
            self._forced(p.text, a, options.keep) for p, a in zip(passages, analyses, strict=False)
        ]
        active = self._active_passages(analyses, options)
        probs = np.concatenate([a.probs for a in analyses] or [np.zeros(0, np.float32)])
        tokens = np.concatenate([a.tokens for a in analyses] or [np.zeros(0, np.int64)])
        must = np.concatenate(forced or [np.zeros(0, bool)])
        allowed = np.concatenate(
            [np.full(a.count, ok, dtype=bool) for a, ok in zip(analyses, active, strict=False)]
            or [np.zeros(0, bool)]
        )
        must &= allowed
        budget = self._budget(options, total)
        forced_tokens = int(tokens[must].sum())
        if budget is not None and forced_tokens > budget:
            raise BudgetError(
                f"the forced words (keep={list(options.keep)!r}, force_tokens="
                f"{self.force_tokens!r}, force_reserve_digit={self.force_reserve_digit}) need "
                f"{forced_tokens} tokens, more than the budget of {budget}; raise the budget or "
                "force fewer strings"
            )
        if self.threshold is not None:
            selected = allowed & ((probs >= self.threshold) | must)
            if budget is not None and int(tokens[selected].sum()) > budget:
                selected = _fill(probs, tokens, must, allowed & selected, budget)
        elif budget is not None and budget >= total:
            selected = allowed.copy()
        else:
            assert budget is not None
            selected = _fill(probs, tokens, must, allowed, budget)
            texts, spans = self._render(passages, analyses, selected)
            actual = sum(self._counter.count_many(texts))
            if actual and abs(actual - budget) > _CALIBRATION_TOLERANCE * budget:
                adjusted = max(forced_tokens, round(budget * budget / actual))
                selected = _fill(probs, tokens, must, allowed, adjusted)
        texts, spans = self._render(passages, analyses, selected)
        after = self._counter.count_many(texts)
        out = tuple(
            CompressedPassage(
                source=p,
                text=text,
                spans=s,
                tokens_before=a.text_tokens,
                tokens_after=n,
                score=float(a.probs.mean()) if a.count else None,
            )
            for p, a, text, s, n in zip(passages, analyses, texts, spans, after, strict=True)
        )
        notes: tuple[str, ...] = ()
        dropped = [i for i, ok in enumerate(active) if not ok]
        if dropped:
            notes = (f"context filter dropped docs {dropped}",)
        return CompressionResult(
            passages=out,
            method=self.name,
            tokens_before=total,
            tokens_after=sum(after),
            notes=notes,
        )

    def _budget(self, options: CompressionOptions, total: int) -> int | None:
        if self.threshold is not None:
            return options.target_tokens
        budget = options.budget(total)
        return round(total * DEFAULT_RATE) if budget is None else budget

    def _active_passages(
        self, analyses: Sequence[WordAnalysis], options: CompressionOptions
    ) -> list[bool]:
        """The context-level filter: drop documents whose mean word probability is low."""
        if not self.context_filter or len(analyses) < 2:
            return [True] * len(analyses)
        total = sum(a.text_tokens for a in analyses)
        budget = options.budget(total)
        rate = DEFAULT_RATE if budget is None or not total else min(budget / total, 1.0)
        level = (rate + 1) / 2
        scores = np.asarray([a.probs.mean() if a.count else 0.0 for a in analyses])
        cut = np.percentile(scores, int(100 * (1 - level)))
        return [bool(s >= cut) for s in scores]

    def _forced(
        self, text: str, analysis: WordAnalysis, keep: Sequence[str]
    ) -> npt.NDArray[np.bool_]:
        """Words that overlap a ``keep`` or force string, or hold a digit (whole span)."""
        mask = np.zeros(analysis.count, dtype=bool)
        if not analysis.count:
            return mask
        starts, ends = analysis.spans[:, 0], analysis.spans[:, 1]
        for needle in (*keep, *self.force_tokens):
            position = text.find(needle)
            while position != -1:
                end = position + len(needle)
                mask |= (starts < end) & (ends > position)
                position = text.find(needle, position + 1)
        if self.force_reserve_digit:
            mask |= np.fromiter(
                (any(c.isdigit() for c in text[s:e]) for s, e in analysis.spans.tolist()),
                dtype=bool,
                count=analysis.count,
            )
        return mask

    def _render(
        self,
        passages: Sequence[Passage],
        analyses: Sequence[WordAnalysis],
        selected: npt.NDArray[np.bool_],
    ) -> tuple[list[str], list[tuple[Span, ...]]]:
        texts: list[str] = []
        all_spans: list[tuple[Span, ...]] = []
        offset = 0
        for passage, analysis in zip(passages, analyses, strict=True):
            mask = selected[offset : offset + analysis.count]
            offset += analysis.count
            spans = _runs(analysis.spans, mask)
            all_spans.append(spans)
            texts.append(join_spans(passage.text, spans))
        return texts, all_spans


def _fill(
    probs: npt.NDArray[np.float32],
    tokens: npt.NDArray[np.int64],
    must: npt.NDArray[np.bool_],
    allowed: npt.NDArray[np.bool_],
    budget: int,
) -> npt.NDArray[np.bool_]:
    """Forced words, then the most probable words, until ``budget`` tokens are spent."""
    priority = np.where(must, np.inf, probs.astype(np.float64))
    priority[~allowed] = -np.inf
    order = np.argsort(-priority, kind="stable")
    order = order[allowed[order]]
    spent = np.cumsum(tokens[order])
    n = int(np.searchsorted(spent, budget, side="right"))
    selected = np.zeros(probs.shape[0], dtype=bool)
    selected[order[:n]] = True
    return selected | must


def _runs(spans: npt.NDArray[np.int64], mask: npt.NDArray[np.bool_]) -> tuple[Span, ...]:
    """Character spans of runs of consecutive kept words (gaps inside a run are kept)."""
    if not mask.any():
        return ()
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    firsts, lasts = edges[::2], edges[1::2] - 1
    return tuple(
        (int(spans[a, 0]), int(spans[b, 1]))
        for a, b in zip(firsts.tolist(), lasts.tolist(), strict=False)
    )


def _check_probabilities(probs: npt.NDArray[np.float32]) -> None:
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("keep probabilities outside [0, 1]")


def _with_space(text: str, start: int, end: int) -> str:
    """The word as it sits in running text: with one leading space if one precedes it."""
    return (" " if start > 0 and text[start - 1].isspace() else "") + text[start:end]


def _check_quantize(
    quantize: str | None, *, backend: str, mode: str, device: str, dtype: str
) -> None:
    """Int8 runs only where it was measured to help: ONNX Runtime, CPU, fixed mode, float32."""
    if quantize is None:
        return
    if quantize != "int8":
        raise ConfigurationError(f"quantize={quantize!r} must be 'int8' or left out (None)")
    if mode == "compat":
        raise ConfigurationError(
            "quantize='int8' cannot be combined with mode='compat': compat mode reproduces "
            "llmlingua 0.2.2's output exactly and int8 changes the probabilities; use "
            "mode='fixed' with quantize='int8', or drop quantize"
        )
    if backend != "onnx":
        raise ConfigurationError(
            "quantize='int8' runs on ONNX Runtime: add backend='onnx' (extra 'onnx'); torch's "
            "dynamic int8 was much slower here"
        )
    if device != "cpu":
        raise ConfigurationError(
            f"quantize='int8' is a CPU speed-up and device={device!r} is not the CPU: use "
            "device='cpu', or on a GPU drop quantize and use dtype='float16'"
        )
    if dtype not in ("auto", "float32"):
        raise ConfigurationError(
            f"quantize='int8' quantizes the float32 weights; dtype={dtype!r} must be 'auto' "
            "or 'float32'"
        )


def _detect_rules(backend: Any) -> WordRules:
    """WordPiece tokenizers get BERT's rules; everything else SentencePiece's ``▁`` rules."""
    model_type = type(backend.model).__name__
    return "wordpiece" if model_type == "WordPiece" else "sentencepiece"
