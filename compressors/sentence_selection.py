"""Query- and context-aware sentence selection with a sentence-transformers model.

Extractive and training-free, in the family of RECOMP's extractive compressor (Xu et al., ICLR
2024, arXiv 2310.04408) and EXIT (Hwang et al., 2024, arXiv 2412.12559): whole sentences are kept
or dropped, in their original order, until a global token budget is spent.

What makes it better than ranking sentences one by one:

* **Context in the embedding.** Each sentence is embedded with its document's title in front,
  so "He was awarded it in 1901." still says who and what.
* **Document relevance.** A sentence's score includes how well its whole document answers the
  query, so the budget flows to the right documents first.
* **Lexical evidence.** Rare query terms (names, numbers) found in the sentence or its title
  add an IDF-weighted bonus that dense similarity alone underrates.
* **Neighbours.** A sentence next to a highly relevant one gains a little, which keeps the
  antecedent of a pronoun alongside its sentence.
* **Spread when no document dominates.** When the best document leads the runner-up clearly
  (a single-hop question), the budget goes to it; when several score alike (a multi-hop
  question whose evidence is spread), each further sentence taken from one document costs it
  a handicap, so the budget reaches the other documents too.

Without a query, sentences are scored by salience: similarity to their document's centroid
and to the centroid of all documents, with a small lead bonus.

The per-passage analysis (sentence spans, token counts, embeddings) does not depend on the
query and is cached by the pipeline, so a document seen before is never embedded again.
"""

from __future__ import annotations

import heapq
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ragpress.compressors._keep import keep_exceeds_budget, units_holding
from ragpress.compressors.base import BaseCompressor
from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.provenance import join_spans
from ragpress.segmentation import DEFAULT_MAX_SENTENCE_CHARS, split_sentences
from ragpress.tokens import DEFAULT_ENCODING, get_token_counter
from ragpress.types import CompressedPassage, CompressionOptions, CompressionResult

try:
    import numpy as np
    from safetensors.numpy import load as load_arrays
    from safetensors.numpy import save as save_arrays
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "numpy", extra="sentence-selection") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

    from ragpress.types import Embedder, Passage, TokenCounter

__all__ = [
    "DEFAULT_AUTO_MARGIN",
    "DEFAULT_AUTO_MAX_DOCUMENTS",
    "SentenceAnalysis",
    "SentenceSelectionCompressor",
]

DEFAULT_AUTO_MARGIN = 0.1
"""Score gap within which a document counts as evidence for ``target_ratio="auto"``. Measured
on nq_train (200 records): the gold passage is among the evidence documents of 97% of the
questions, with 1.14 documents on average."""
DEFAULT_AUTO_MAX_DOCUMENTS = 3
"""Most evidence documents an auto budget is sized for."""

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACED = re.compile(r"\S+")
# Function words that carry no evidence on their own (English; IDF handles other languages).
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "many",
        "much",
        "name",
        "named",
        "first",
        "last",
    ]
)
_ANALYSIS_SCHEMA = "1"


@dataclass(frozen=True, slots=True)
class SentenceAnalysis:
    """What the compressor knows about one passage before seeing any query."""

    spans: npt.NDArray[np.int64]
    """``(n, 2)`` character spans of the sentences."""
    tokens: npt.NDArray[np.int64]
    """``(n,)`` tokens per sentence, in the compressor's counting tokenizer."""
    embeddings: npt.NDArray[np.float32]
    """``(n, d)`` normalised sentence embeddings (title in front when enabled)."""
    document: npt.NDArray[np.float32]
    """``(d,)`` normalised embedding of the whole passage (title and start of the text)."""
    text_tokens: int
    """Tokens of the whole passage text."""

    @property
    def count(self) -> int:
        """Number of sentences."""
        return int(self.spans.shape[0])


class SentenceSelectionCompressor(BaseCompressor):
    """Keeps the sentences that best answer the query, under a global token budget.

    Args:
        embedder: Any :class:`ragpress.types.Embedder`; the pipeline passes
            all-MiniLM-L6-v2 by default.
        tokenizer: What budgets are counted in (see :func:`ragpress.tokens.get_token_counter`).
        language: Language code for sentence splitting.
        title_in_embedding: Embed ``"{title}: {sentence}"`` instead of the bare sentence.
        document_weight: Weight of the whole document's similarity in a sentence's score.
        lexical_weight: Weight of the IDF-weighted share of query terms the sentence (or its
            title) contains.
        neighbor_weight: Share of the best neighbouring sentence's similarity a sentence
            inherits.
        document_decay: Score handicap per sentence already taken from the same document,
            in full when the two best documents score alike; spreads the budget across
            documents (coverage for multi-hop questions).
        dominance_margin: Lead of the best document's best sentence over the runner-up's at
            which the handicap has faded to nothing (0 applies it always).
        max_sentence_chars: Longest unit the splitter returns.
        auto_margin: With ``target_ratio="auto"``, the score gap within which a document counts
            as evidence and sizes the budget.
        auto_max_documents: With ``target_ratio="auto"``, the most evidence documents.
    """

    name: ClassVar[str] = "sentence_selection"
    adaptive_budget: ClassVar[bool] = True
    version: ClassVar[str] = "2"  # 2: an over-budget best sentence is trimmed, not skipped
    config_keys: ClassVar[tuple[str, ...]] = (
        "tokenizer",
        "language",
        "title_in_embedding",
        "document_weight",
        "lexical_weight",
        "neighbor_weight",
        "document_decay",
        "dominance_margin",
        "max_sentence_chars",
        "auto_margin",
        "auto_max_documents",
    )
    injected_keys: ClassVar[tuple[str, ...]] = ("embedder",)
    analysis_artefact: ClassVar[str | None] = "sentences"

    def __init__(
        self,
        embedder: Embedder,
        *,
        tokenizer: str = DEFAULT_ENCODING,
        language: str = "en",
        title_in_embedding: bool = True,
        document_weight: float = 0.5,
        lexical_weight: float = 0.3,
        neighbor_weight: float = 0.15,
        document_decay: float = 0.25,
        dominance_margin: float = 0.25,
        max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS,
        auto_margin: float = DEFAULT_AUTO_MARGIN,
        auto_max_documents: int = DEFAULT_AUTO_MAX_DOCUMENTS,
    ) -> None:
        for key, value in (
            ("document_weight", document_weight),
            ("lexical_weight", lexical_weight),
            ("neighbor_weight", neighbor_weight),
            ("document_decay", document_decay),
            ("dominance_margin", dominance_margin),
            ("auto_margin", auto_margin),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{key}={value} must be a finite number >= 0")
        if max_sentence_chars < 20:
            raise ConfigurationError(f"max_sentence_chars={max_sentence_chars} must be >= 20")
        if auto_max_documents < 1:
            raise ConfigurationError(f"auto_max_documents={auto_max_documents} must be >= 1")
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.language = language
        self.title_in_embedding = title_in_embedding
        self.document_weight = float(document_weight)
        self.lexical_weight = float(lexical_weight)
        self.neighbor_weight = float(neighbor_weight)
        self.document_decay = float(document_decay)
        self.dominance_margin = float(dominance_margin)
        self.max_sentence_chars = max_sentence_chars
        self.auto_margin = float(auto_margin)
        self.auto_max_documents = auto_max_documents
        self._counter = get_token_counter(tokenizer)

    def model_revision(self) -> str:
        """The embedder's fingerprint: a different model means different analyses."""
        return self.embedder.fingerprint

    # -- query-independent analysis ------------------------------------------------------------

    def analyze(self, passages: Sequence[Passage]) -> list[SentenceAnalysis]:
        """Split, count and embed every passage (one embedding batch for all of them)."""
        spans = [
            split_sentences(p.text, language=self.language, max_chars=self.max_sentence_chars)
            for p in passages
        ]
        sentence_texts: list[str] = []
        document_texts: list[str] = []
        for passage, passage_spans in zip(passages, spans, strict=True):
            prefix = f"{passage.title}: " if self.title_in_embedding and passage.title else ""
            sentence_texts.extend(prefix + passage.text[s:e] for s, e in passage_spans)
            document_texts.append(prefix + passage.text)
        vectors = self.embedder.embed([*sentence_texts, *document_texts], kind="passage")
        vectors = np.asarray(vectors, dtype=np.float32)
        token_counts = self._counter.count_many(
            [p.text[s:e] for p, ps in zip(passages, spans, strict=True) for s, e in ps]
        )
        text_tokens = self._counter.count_many([p.text for p in passages])
        analyses: list[SentenceAnalysis] = []
        offset = 0
        dim = vectors.shape[1]
        for i, passage_spans in enumerate(spans):
            n = len(passage_spans)
            analyses.append(
                SentenceAnalysis(
                    spans=np.asarray(passage_spans, dtype=np.int64).reshape(n, 2),
                    tokens=np.asarray(token_counts[offset : offset + n], dtype=np.int64),
                    embeddings=vectors[offset : offset + n].reshape(n, dim),
                    document=vectors[len(sentence_texts) + i],
                    text_tokens=text_tokens[i],
                )
            )
            offset += n
        return analyses

    def encode_analysis(self, analysis: SentenceAnalysis) -> bytes:
        """Serialise with safetensors: raw arrays plus a dtype/shape header, no pickle."""
        return save_arrays(
            {
                "spans": analysis.spans,
                "tokens": analysis.tokens,
                "embeddings": analysis.embeddings,
                "document": analysis.document,
                "text_tokens": np.asarray([analysis.text_tokens], dtype=np.int64),
            },
            metadata={"schema": _ANALYSIS_SCHEMA},
        )

    def decode_analysis(self, data: bytes) -> SentenceAnalysis:
        """Inverse of :meth:`encode_analysis`."""
        arrays = load_arrays(data)
        return SentenceAnalysis(
            spans=arrays["spans"],
            tokens=arrays["tokens"],
            embeddings=arrays["embeddings"],
            document=arrays["document"],
            text_tokens=int(arrays["text_tokens"][0]),
        )

    # -- selection -----------------------------------------------------------------------------

    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage],
        options: CompressionOptions,
        *,
        analyses: Sequence[Any] | None = None,
    ) -> CompressionResult:
        """Select sentences across all passages under the budget in ``options``.

        Raises:
            BudgetError: The sentences holding ``options.keep`` strings need more tokens than
                the budget allows.
        """
        if analyses is None:
            analyses = self.analyze(passages)
        total_tokens = sum(a.text_tokens for a in analyses)
        scores = self.score(query, passages, analyses)
        budget = (
            self._evidence_budget(analyses, scores, options, total_tokens)
            if options.adaptive
            else options.budget(total_tokens)
        )
        forced = self._forced(passages, analyses, options.keep)
        selected = _select(analyses, scores, forced, budget, options, self._decay(scores))
        kept: list[list[tuple[int, int]]] = [
            [(int(a.spans[k][0]), int(a.spans[k][1])) for k in sorted(chosen)]
            for a, chosen in zip(analyses, selected, strict=True)
        ]
        if budget is not None:
            self._trim_best_into_budget(query, passages, analyses, scores, forced, budget, kept)
        texts = [join_spans(p.text, spans) for p, spans in zip(passages, kept, strict=True)]
        after = self._counter.count_many(texts)
        results = tuple(
            CompressedPassage(
                source=passage,
                text=text,
                spans=tuple(spans),
                tokens_before=a.text_tokens,
                tokens_after=tokens,
                score=float(s.max()) if s.size else None,
            )
            for passage, a, spans, text, tokens, s in zip(
                passages, analyses, kept, texts, after, scores, strict=True
            )
        )
        return CompressionResult(
            passages=results,
            method=self.name,
            tokens_before=total_tokens,
            tokens_after=sum(after),
        )

    def score(
        self,
        query: str | None,
        passages: Sequence[Passage],
        analyses: Sequence[SentenceAnalysis],
    ) -> list[npt.NDArray[np.float32]]:
        """Relevance of every sentence, one array per passage (higher keeps first)."""
        if not any(a.count for a in analyses):
            return [np.zeros(0, dtype=np.float32) for _ in analyses]
        if query is None or not query.strip():
            return self._salience(analyses)
        q = np.asarray(self.embedder.embed([query], kind="query"), dtype=np.float32)[0]
        lexical = _lexical_scores(query, passages, analyses)
        out = []
        for a, lex in zip(analyses, lexical, strict=True):
            dense = a.embeddings @ q if a.count else np.zeros(0, dtype=np.float32)
            score = dense + self.document_weight * float(a.document @ q) + self.lexical_weight * lex
            out.append((score + self.neighbor_weight * _neighbour_max(dense)).astype(np.float32))
        return out

    def _decay(self, scores: Sequence[npt.NDArray[np.float32]]) -> float:
        """The per-sentence handicap for this request: full when no document dominates."""
        best = sorted((float(s.max()) for s in scores if s.size), reverse=True)
        if len(best) < 2 or self.dominance_margin == 0:
            return self.document_decay
        lead = best[0] - best[1]
        return self.document_decay * max(0.0, 1.0 - lead / self.dominance_margin)

    def _salience(self, analyses: Sequence[SentenceAnalysis]) -> list[npt.NDArray[np.float32]]:
        everything = np.concatenate([a.embeddings for a in analyses if a.count])
        overall = _unit(everything.mean(axis=0))
        out = []
        for a in analyses:
            if not a.count:
                out.append(np.zeros(0, dtype=np.float32))
                continue
            local = a.embeddings @ _unit(a.embeddings.mean(axis=0))
            lead = 0.1 / (1.0 + np.arange(a.count, dtype=np.float32))
            out.append((local + 0.5 * (a.embeddings @ overall) + lead).astype(np.float32))
        return out

    def _evidence_budget(
        self,
        analyses: Sequence[SentenceAnalysis],
        scores: Sequence[npt.NDArray[np.float32]],
        options: CompressionOptions,
        total_tokens: int,
    ) -> int:
        """The budget of ``target_ratio="auto"``: as many tokens as the evidence documents hold.

        A document is evidence when its best sentence scores within ``auto_margin`` of the best
        sentence overall (at most ``auto_max_documents`` of them): one document when it
        dominates (a single-hop question), several when they score alike. Their length, bounded
        by ``min_ratio`` and ``max_ratio``, is the budget the usual selection then fills.
        """
        best = sorted(((float(s.max()), i) for i, s in enumerate(scores) if s.size), reverse=True)
        if not best:
            return 0
        evidence = [i for score, i in best if score >= best[0][0] - self.auto_margin]
        wanted = sum(analyses[i].text_tokens for i in evidence[: self.auto_max_documents])
        fewest, most = options.auto_bounds(total_tokens)
        return max(fewest, min(most, wanted))

    def _trim_best_into_budget(
        self,
        query: str | None,
        passages: Sequence[Passage],
        analyses: Sequence[SentenceAnalysis],
        scores: Sequence[npt.NDArray[np.float32]],
        forced: Sequence[set[int]],
        budget: int,
        kept: list[list[tuple[int, int]]],
    ) -> None:
        """Keep part of the best sentence when it alone is longer than the budget.

        Whole sentences are the unit, so the greedy skips a best sentence that cannot fit and
        fills the budget with lesser ones. Instead, the budget left after the forced sentences
        goes to the window of the best sentence (cut at word boundaries; spans stay exact) that
        holds the most query terms, and the lesser sentences are dropped.
        """
        best = max(
            ((i, int(k)) for i, s in enumerate(scores) for k in range(s.size)),
            key=lambda ik: float(scores[ik[0]][ik[1]]),
            default=None,
        )
        if best is None:
            return
        i, k = best
        start, end = int(analyses[i].spans[k][0]), int(analyses[i].spans[k][1])
        if (start, end) in kept[i]:
            return
        forced_spans = [
            [(int(a.spans[f][0]), int(a.spans[f][1])) for f in sorted(fs)]
            for a, fs in zip(analyses, forced, strict=True)
        ]
        room = budget - sum(
            int(a.tokens[f]) for a, fs in zip(analyses, forced, strict=True) for f in fs
        )
        window = _best_window(
            passages[i].text, start, end, _terms(query or ""), room, self._counter
        )
        if window is None:
            return
        kept[:] = forced_spans
        kept[i] = sorted([*kept[i], window])

    def _forced(
        self,
        passages: Sequence[Passage],
        analyses: Sequence[SentenceAnalysis],
        keep: Sequence[str],
    ) -> list[set[int]]:
        """Indices of sentences that overlap an occurrence of a ``keep`` string."""
        return [
            units_holding(p.text, a.spans.tolist(), keep)
            for p, a in zip(passages, analyses, strict=True)
        ]

    def check_analysis(self, item: Any, analysis: Any) -> None:
        """Refuse a cached analysis that cannot be this passage's (issue 21).

        Spans must be the text's sentences (inside it, in order, covering it), every sentence
        at least one token, and the embeddings finite and of the embedder's dimension.

        Raises:
            ValueError: Saying what does not fit; the pipeline then recomputes the analysis.
        """
        from ragpress.compressors._checks import (
            check_counts,
            check_sentence_spans,
            check_vectors,
        )

        if not isinstance(analysis, SentenceAnalysis):
            raise ValueError(f"expected a SentenceAnalysis, got {type(analysis).__name__}")
        text: str = item.text
        count = check_sentence_spans(text, analysis.spans).shape[0]
        check_counts(text, analysis.tokens, count, analysis.text_tokens)
        dimension = getattr(self.embedder, "dimension", None)
        check_vectors(analysis.embeddings, (count, dimension), "sentence embeddings")
        check_vectors(analysis.document, (dimension,), "the document embedding")


def _select(
    analyses: Sequence[SentenceAnalysis],
    scores: Sequence[npt.NDArray[np.float32]],
    forced: Sequence[set[int]],
    budget: int | None,
    options: CompressionOptions,
    document_decay: float,
) -> list[set[int]]:
    """Greedy under the budget: forced sentences first, then the best remaining one.

    The k-th sentence taken from a document competes with its score minus
    ``document_decay * k``, so once a document has given its best sentences, the budget
    flows to the best sentences of other documents (coverage for multi-hop questions).
    """
    if budget is None:
        return [set(range(a.count)) for a in analyses]
    chosen = [set(f) for f in forced]
    spent = sum(int(a.tokens[k]) for a, f in zip(analyses, forced, strict=True) for k in f)
    if spent > budget:
        raise keep_exceeds_budget(options.keep, spent, budget)
    queues = [
        [int(k) for k in np.argsort(-s, kind="stable") if int(k) not in chosen[i]]
        for i, s in enumerate(scores)
    ]
    heap = [(-float(scores[i][q[0]]), i, 0) for i, q in enumerate(queues) if q]
    heapq.heapify(heap)
    while heap:
        _, i, position = heapq.heappop(heap)
        k = queues[i][position]
        cost = int(analyses[i].tokens[k])
        if spent + cost <= budget:
            chosen[i].add(k)
            spent += cost
        if position + 1 < len(queues[i]):
            nxt = queues[i][position + 1]
            penalty = document_decay * len(chosen[i] - forced[i])
            heapq.heappush(heap, (-float(scores[i][nxt]) + penalty, i, position + 1))
    return chosen


def _best_window(
    text: str,
    start: int,
    end: int,
    query_terms: set[str],
    limit: int,
    counter: TokenCounter,
) -> tuple[int, int] | None:
    """The run of whole words of ``text[start:end]`` within ``limit`` tokens with most query terms.

    Among runs with as many distinct query terms, the earliest wins. ``None`` when not even one
    word fits.
    """
    words = [(start + m.start(), start + m.end()) for m in _SPACED.finditer(text[start:end])]
    if not words or limit <= 0:
        return None
    costs = counter.count_many([text[a:b] for a, b in words])
    found = [_terms(text[a:b]) & query_terms for a, b in words]
    best: tuple[int, int, int] | None = None  # (distinct terms, first word, last word)
    last, total = 0, 0  # words[first:last] is the longest run from `first` that fits
    for first in range(len(words)):
        if last < first:
            last, total = first, 0
        while last < len(words) and total + costs[last] <= limit:
            total += costs[last]
            last += 1
        if last > first:
            hits = len(set().union(*found[first:last]))
            if best is None or hits > best[0]:
                best = (hits, first, last - 1)
            total -= costs[first]
    if best is None:
        return None
    _, first, final = best
    # Words were counted apart; joined, a token can straddle a boundary, so check the run.
    while final >= first:
        span = (words[first][0], words[final][1])
        if counter.count(text[span[0] : span[1]]) <= limit:
            return span
        final -= 1
    return None


def _neighbour_max(values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if values.size < 2:
        return np.zeros_like(values)
    padded = np.pad(values, 1, constant_values=-np.inf)
    return np.maximum(padded[:-2], padded[2:]).clip(min=0)


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _lexical_scores(
    query: str, passages: Sequence[Passage], analyses: Sequence[SentenceAnalysis]
) -> list[npt.NDArray[np.float32]]:
    """IDF-weighted share of query terms present in each sentence or its passage's title."""
    query_terms = _terms(query)
    units = [
        [_terms(p.text[s:e]) | _terms(p.title or "") for s, e in a.spans]
        for p, a in zip(passages, analyses, strict=True)
    ]
    if not query_terms:
        return [np.zeros(a.count, dtype=np.float32) for a in analyses]
    n = sum(len(u) for u in units)
    idf = {
        t: math.log(1 + (n + 1) / (1 + sum(t in terms for u in units for terms in u)))
        for t in query_terms
    }
    total = sum(idf.values())
    return [
        np.asarray(
            [sum(idf[t] for t in query_terms & terms) / total for terms in u], dtype=np.float32
        )
        for u in units
    ]


def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
