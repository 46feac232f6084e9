from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from ragpress.compressors.sentence_selection import (
    SentenceAnalysis,
    SentenceSelectionCompressor,
    _select,
)
from ragpress.exceptions import BudgetError, ConfigurationError
from ragpress.provenance import verify
from ragpress.types import CompressionOptions, Passage

DOCS = [
    Passage(
        "The Eiffel Tower is in Paris. It was completed in 1889. "
        "Gustave Eiffel's company built it.",
        title="Eiffel Tower",
        id="d1",
        metadata={"url": "https://example.org/eiffel", "rank": 1},
    ),
    Passage(
        "Berlin is the capital of Germany. The Brandenburg Gate stands in Berlin. "
        "Berlin has many museums.",
        title="Berlin",
        id="d2",
        metadata={"rank": 2},
    ),
    Passage("", title="Empty", id="d3"),
    Passage(
        "Bananas are yellow. Apples can be red or green. Grapes grow in bunches.",
        title="Fruit",
        id="d4",
    ),
]


@pytest.fixture
def compressor(fake_embedder) -> SentenceSelectionCompressor:
    return SentenceSelectionCompressor(fake_embedder)


def test_query_relevant_sentences_are_kept_in_order(compressor) -> None:
    result = compressor.compress(
        "When was it completed?", DOCS, CompressionOptions(target_tokens=10)
    )
    assert [p.source for p in result.passages] == DOCS  # every document, same order
    kept = result.passages[0].text
    assert "completed in 1889" in kept
    assert result.passages[3].text == ""  # fruit is irrelevant
    assert result.tokens_after <= 10
    for passage in result.passages:
        assert verify(passage)  # provenance rebuilds the text exactly
        spans = passage.spans or ()
        assert list(spans) == sorted(spans)


def test_identity_and_metadata_survive(compressor) -> None:
    result = compressor.compress("Berlin museums", DOCS, CompressionOptions(rate=0.5))
    for original, out in zip(DOCS, result.passages, strict=True):
        assert out.source is original
        assert (out.id, out.title, out.metadata) == (original.id, original.title, original.metadata)


@pytest.mark.parametrize("ratio", [1.5, 2, 3, 5])
def test_budget_is_respected_and_used(compressor, ratio: float) -> None:
    docs = [
        Passage(" ".join(f"Sentence {i} of doc {d} mentions topic {i % 3}." for i in range(12)))
        for d in range(5)
    ]
    result = compressor.compress("topic 1", docs, CompressionOptions(target_ratio=ratio))
    budget = CompressionOptions(target_ratio=ratio).budget(result.tokens_before)
    assert budget is not None
    assert result.tokens_after <= budget + len(docs)  # joining may merge or split a token per doc
    assert result.tokens_after >= 0.85 * budget


def test_keep_strings_always_survive(compressor) -> None:
    result = compressor.compress(
        "capital of Germany", DOCS, CompressionOptions(target_ratio=4, keep=("Grapes",))
    )
    assert "Grapes grow in bunches." in result.passages[3].text


def test_keep_that_exceeds_the_budget_is_a_budget_error(compressor) -> None:
    with pytest.raises(BudgetError) as info:
        compressor.compress("x", DOCS, CompressionOptions(target_tokens=5, keep=("Berlin",)))
    assert info.value.param == "keep"
    assert "raise the budget" in str(info.value)


def test_without_a_query_it_still_compresses(compressor) -> None:
    for query in (None, "", "   "):
        result = compressor.compress(query, DOCS, CompressionOptions(target_ratio=2))
        assert 0 < result.tokens_after < result.tokens_before
        assert all(verify(p) for p in result.passages)


def test_no_budget_keeps_everything(compressor) -> None:
    result = compressor.compress("q", DOCS, CompressionOptions())
    assert [p.text for p in result.passages] == [d.text for d in DOCS]
    assert result.tokens_after == result.tokens_before


def test_zero_budget_and_empty_input(compressor) -> None:
    result = compressor.compress("q", DOCS, CompressionOptions(target_tokens=0))
    assert all(p.text == "" for p in result.passages)
    assert compressor.compress("q", [], CompressionOptions(target_ratio=2)).passages == ()
    only_empty = compressor.compress("q", [Passage("  ")], CompressionOptions(target_ratio=2))
    assert only_empty.passages[0].text == "" and only_empty.tokens_after == 0


def test_analysis_round_trips_through_bytes(compressor) -> None:
    analyses = compressor.analyze(DOCS)
    restored = [compressor.decode_analysis(compressor.encode_analysis(a)) for a in analyses]
    direct = compressor.compress(
        "Paris", DOCS, CompressionOptions(target_ratio=2), analyses=analyses
    )
    cached = compressor.compress(
        "Paris", DOCS, CompressionOptions(target_ratio=2), analyses=restored
    )
    assert [p.text for p in direct.passages] == [p.text for p in cached.passages]


def test_fingerprint_changes_with_every_config_key(fake_embedder) -> None:
    base = SentenceSelectionCompressor(fake_embedder).fingerprint()
    variants: dict[str, Any] = {
        "tokenizer": "o200k_base",
        "language": "de",
        "title_in_embedding": False,
        "document_weight": 0.1,
        "lexical_weight": 0.9,
        "neighbor_weight": 0.0,
        "document_decay": 0.3,
        "dominance_margin": 0.1,
        "max_sentence_chars": 500,
        "auto_margin": 0.3,
        "auto_max_documents": 5,
    }
    assert set(variants) == set(SentenceSelectionCompressor.config_keys)
    for key, value in variants.items():
        assert SentenceSelectionCompressor(fake_embedder, **{key: value}).fingerprint() != base, key


def test_bad_weights_are_configuration_errors(fake_embedder) -> None:
    with pytest.raises(ConfigurationError, match="document_weight"):
        SentenceSelectionCompressor(fake_embedder, document_weight=-1)


@pytest.mark.model
def test_with_the_embedded_minilm(minilm) -> None:
    compressor = SentenceSelectionCompressor(minilm)
    result = compressor.compress(
        "Who built the Eiffel Tower?", DOCS, CompressionOptions(target_ratio=3)
    )
    assert "Gustave Eiffel's company built it." in result.passages[0].text
    assert all(verify(p) for p in result.passages)


def _analysis(count: int) -> SentenceAnalysis:
    """Sentences of 10 tokens each; only spans and token counts matter to the selection."""
    return SentenceAnalysis(
        spans=np.asarray([[10 * k, 10 * k + 9] for k in range(count)], dtype=np.int64),
        tokens=np.full(count, 10, dtype=np.int64),
        embeddings=np.zeros((count, 4), dtype=np.float32),
        document=np.zeros(4, dtype=np.float32),
        text_tokens=10 * count,
    )


def test_the_budget_spreads_only_when_no_document_dominates(fake_embedder) -> None:
    compressor = SentenceSelectionCompressor(
        fake_embedder, document_decay=0.25, dominance_margin=0.25
    )
    analyses = [_analysis(3), _analysis(3)]
    close = [np.asarray([0.9, 0.8, 0.7]), np.asarray([0.85, 0.3, 0.2])]
    far = [np.asarray([0.9, 0.8, 0.7]), np.asarray([0.5, 0.3, 0.2])]
    assert compressor._decay(close) == pytest.approx(0.25 * (1 - 0.05 / 0.25))
    assert compressor._decay(far) == 0.0
    options = CompressionOptions(target_tokens=30)

    def chosen(scores):
        return _select(analyses, scores, [set(), set()], 30, options, compressor._decay(scores))

    # Alike: the second document's best sentence beats the first one's second and third.
    assert chosen(close) == [{0, 1}, {0}]
    # One document leads by the margin: the whole budget goes to it.
    assert chosen(far) == [{0, 1, 2}, set()]


def test_a_best_sentence_longer_than_the_budget_is_trimmed_not_skipped(compressor) -> None:
    """The answer sentence (40 tokens) does not fit a 17-token budget; short irrelevant sentences
    would. The budget goes to the part of the answer sentence that holds the query's terms."""
    answer = (
        "After a long and difficult search across several continents, the committee finally "
        "awarded the first Nobel Prize in Physics to Wilhelm Conrad Röntgen for discovering "
        "X-rays in 1895."
    )
    doc = Passage(f"Bread is food. The sky is blue. {answer} Cats purr.", title="Prizes")
    options = CompressionOptions(target_tokens=17)
    result = compressor.compress("Who won the first Nobel Prize in Physics?", [doc], options)
    kept = result.passages[0]
    assert "Nobel Prize in Physics" in kept.text and "Bread" not in kept.text
    assert kept.text in answer and result.tokens_after <= 17
    assert verify(kept) and len(kept.spans or ()) == 1  # one exact span inside the sentence
    # With room for the whole sentence, nothing is cut.
    roomy = compressor.compress(
        "Who won the first Nobel Prize in Physics?", [doc], CompressionOptions(target_tokens=45)
    )
    assert answer in roomy.passages[0].text


def test_trimming_keeps_forced_sentences_and_respects_the_budget(compressor) -> None:
    long = "Paris " + "is a large and very old city with many bridges and museums " * 4 + "."
    doc = Passage(f"ACME signed the deal. {long} Rome is old.", title="Cities")
    result = compressor.compress(
        "museums bridges city", [doc], CompressionOptions(target_tokens=20, keep=("ACME",))
    )
    kept = result.passages[0]
    assert kept.text.startswith("ACME signed the deal.")
    assert "museums" in kept.text and result.tokens_after <= 20 and verify(kept)


def _padded(text: str, n: int) -> str:
    return text + " " + " ".join(f"Filler sentence {i} says little of note." for i in range(n))


def test_auto_budget_fits_the_evidence_document(compressor) -> None:
    """One document clearly answers: auto keeps about its length, far below the 2x ceiling."""
    docs = [
        Passage(_padded("The Eiffel Tower was completed in 1889.", 3), title="Eiffel Tower"),
        *(
            Passage(_padded(f"Bananas and apples grow in orchard {i}.", 3), title=f"Fruit {i}")
            for i in range(7)
        ),
    ]
    auto = CompressionOptions(target_ratio="auto")
    result = compressor.compress("When was the Eiffel Tower completed?", docs, auto)
    assert "completed in 1889" in result.passages[0].text
    assert result.tokens_after <= result.passages[0].tokens_before  # about one document
    assert result.ratio > 4
    bounded = compressor.compress(
        "When was the Eiffel Tower completed?",
        docs,
        CompressionOptions(target_ratio="auto", max_ratio=3),
    )
    assert bounded.tokens_after >= round(bounded.tokens_before / 3) - 10  # floor respected
    assert "completed in 1889" in bounded.passages[0].text


def test_auto_keeps_several_documents_when_none_dominates(compressor) -> None:
    docs = [
        Passage(_padded(f"Marie Curie did research number {i} in Paris.", 2), title="Curie")
        for i in range(3)
    ] + [Passage(_padded("Bread is baked in ovens.", 2), title="Bread")]
    result = compressor.compress(
        "What research did Marie Curie do in Paris?", docs, CompressionOptions(target_ratio="auto")
    )
    assert sum(bool(p.text) for p in result.passages[:3]) >= 2
