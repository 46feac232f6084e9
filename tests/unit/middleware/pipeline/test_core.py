from __future__ import annotations

import pytest

from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.exceptions import CompressionError, RequestValidationError
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.provenance import verify
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions, Passage, SearchHit

DOCS = [
    Passage(
        "Marie Curie won two Nobel Prizes. She was born in Warsaw. She studied in Paris. "
        "Her husband was Pierre Curie.",
        title="Marie Curie",
        id="a",
        metadata={"source": "wiki"},
    ),
    Passage(
        "The Nobel Prize in Physics was first awarded in 1901. Wilhelm Röntgen received it. "
        "The prize is announced in October.",
        title="Nobel Prize in Physics",
        id="b",
    ),
    Passage("Bread is made from flour. Yeast makes it rise. Ovens bake it.", title="Bread", id="c"),
]


def make_pipeline(embedder, *, cache=None, **kwargs) -> Pipeline:
    return Pipeline(
        [Stage(SentenceSelectionCompressor(embedder))],
        cache=cache,
        defaults=CompressionOptions(target_ratio=2),
        token_counter=get_token_counter(),
        **kwargs,
    )


async def test_repeated_documents_come_from_the_cache(fake_embedder, memory_cache) -> None:
    pipeline = make_pipeline(fake_embedder, cache=FailOpenCache(memory_cache))
    first = await pipeline.acompress("Who won the first physics prize?", DOCS)
    assert (first.cache_hits, first.cache_misses) == (0, 3)
    embedded_before = sum(fake_embedder.calls)
    second = await pipeline.acompress("Where was Marie Curie born?", DOCS)
    assert (second.cache_hits, second.cache_misses) == (3, 0)
    assert sum(fake_embedder.calls) - embedded_before == 1  # only the new query was embedded
    again = await pipeline.acompress("Who won the first physics prize?", DOCS)
    assert [p.text for p in again.passages] == [p.text for p in first.passages]
    assert "cache_get" in second.timings_ms and "analyze" not in second.timings_ms


async def test_duplicate_documents_in_one_call_are_analysed_once(fake_embedder, memory_cache):
    pipeline = make_pipeline(fake_embedder, cache=FailOpenCache(memory_cache))
    result = await pipeline.acompress("Nobel", [DOCS[0], DOCS[0], DOCS[1]])
    assert result.cache_misses == 2
    assert len(result.passages) == 3


async def test_results_keep_every_document_and_verify(fake_embedder) -> None:
    result = await make_pipeline(fake_embedder).acompress("Nobel physics 1901", DOCS)
    assert [p.source for p in result.passages] == DOCS
    assert all(verify(p) for p in result.passages)
    assert result.method == "sentence_selection"


def test_sync_wrapper_can_be_called_repeatedly(fake_embedder, memory_cache) -> None:
    pipeline = make_pipeline(fake_embedder, cache=FailOpenCache(memory_cache))
    try:
        a = pipeline.compress("Curie", DOCS)
        b = pipeline.compress("Curie", DOCS)
    finally:
        pipeline.close()
    assert b.cache_hits == 3
    assert [p.text for p in a.passages] == [p.text for p in b.passages]


async def test_a_chain_composes_provenance_back_to_the_originals(fake_embedder) -> None:
    coarse = SentenceSelectionCompressor(fake_embedder)
    fine = SentenceSelectionCompressor(fake_embedder, title_in_embedding=False)
    pipeline = Pipeline(
        [Stage(coarse, CompressionOptions(target_ratio=1.5)), Stage(fine)],
        defaults=CompressionOptions(target_ratio=3),
        token_counter=get_token_counter(),
    )
    result = await pipeline.acompress("Marie Curie Nobel Prizes", DOCS)
    assert result.method == "sentence_selection+sentence_selection"
    assert all(verify(p) for p in result.passages)
    assert result.tokens_after <= round(result.tokens_before / 3) + 3


async def test_too_long_documents_are_rejected_by_name(fake_embedder) -> None:
    pipeline = make_pipeline(fake_embedder, max_document_chars=50)
    with pytest.raises(RequestValidationError) as info:
        await pipeline.acompress("q", [Passage("short"), Passage("x" * 51)])
    assert info.value.param == "docs[1].text"
    assert "max-document-chars" in str(info.value)


async def test_empty_documents_are_kept_with_a_note(fake_embedder) -> None:
    result = await make_pipeline(fake_embedder).acompress("Curie", [DOCS[0], Passage(" ")])
    assert len(result.passages) == 2 and result.passages[1].text == ""
    assert any("docs[1] is empty" in note for note in result.notes)


class Exploding(SentenceSelectionCompressor):
    def compress(self, *args, **kwargs):
        raise CompressionError("model fell over")


async def test_passthrough_policy_forwards_uncompressed(fake_embedder) -> None:
    pipeline = Pipeline(
        [Stage(Exploding(fake_embedder))],
        token_counter=get_token_counter(),
        on_error="passthrough",
        defaults=CompressionOptions(target_ratio=3),
    )
    result = await pipeline.acompress("q", DOCS)
    assert [p.text for p in result.passages] == [d.text for d in DOCS]
    assert result.method == "passthrough"
    assert any("model fell over" in n for n in result.notes)


async def test_fail_policy_raises(fake_embedder) -> None:
    pipeline = Pipeline([Stage(Exploding(fake_embedder))], token_counter=get_token_counter())
    with pytest.raises(CompressionError):
        await pipeline.acompress("q", DOCS)


async def test_retriever_supplies_passages_when_none_are_given(fake_embedder) -> None:
    class StaticRetriever:
        def search(self, query: str, k: int) -> list[SearchHit]:
            return [SearchHit(d, 1.0 - i / 10) for i, d in enumerate(DOCS[:k])]

    pipeline = make_pipeline(fake_embedder, retriever=StaticRetriever(), top_k=2)
    result = await pipeline.acompress("Curie", [])
    assert [p.id for p in result.passages] == ["a", "b"]
    assert "retrieve" in result.timings_ms


async def test_auto_budget_is_fixed_for_compressors_that_cannot_size_it(fake_embedder) -> None:
    """A compressor without an evidence-sized budget gets the least compression, and a note."""
    from tests.support.fakes import LeadCompressor

    seen: list[CompressionOptions] = []

    class Recording(LeadCompressor):
        def compress(self, query, passages, options, *, analyses=None):
            seen.append(options)
            return super().compress(query, passages, options, analyses=analyses)

    auto = CompressionOptions(target_ratio="auto", min_ratio=4)
    result = await Pipeline([Stage(Recording())]).acompress("q", DOCS, auto)
    assert seen == [CompressionOptions(target_ratio=4.0)]
    assert any("cannot size its budget" in note and "min_ratio=4" in note for note in result.notes)
    adaptive = await make_pipeline(fake_embedder).acompress("Where was Curie born?", DOCS, auto)
    assert not any("cannot size" in note for note in adaptive.notes)
