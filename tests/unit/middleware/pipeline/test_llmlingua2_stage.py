"""LLMLingua-2 in the pipeline: cached word probabilities, and coarse-to-fine chains."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from ragpress.cache.memory import MemoryCache
from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor
from ragpress.config import RagpressSettings
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.middleware.pipeline.factory import build_pipeline
from ragpress.provenance import verify
from ragpress.types import CompressionOptions, Passage

pytestmark = pytest.mark.model

DOCS = [
    Passage(
        "Wilhelm Conrad Röntgen received the first Nobel Prize in Physics in 1901 for the "
        "discovery of X-rays. He was a professor at Würzburg. He refused to patent it.",
        title="Röntgen",
    ),
    Passage(
        "Bread is made from flour, water and yeast. The dough rises for an hour before baking. "
        "Sourdough uses a starter instead of yeast.",
        title="Bread",
    ),
    Passage(
        "The Eiffel Tower was finished in 1889 for the World's Fair in Paris. It is 330 metres "
        "tall and was the tallest structure in the world until 1930.",
        title="Eiffel Tower",
    ),
]


async def test_warm_repeat_skips_the_model(bert_token_classifier, monkeypatch) -> None:
    compressor = LLMLingua2Compressor(bert_token_classifier)
    pipeline = Pipeline([Stage(compressor)], cache=FailOpenCache(MemoryCache(max_bytes=1 << 22)))
    options = CompressionOptions(rate=0.4)
    cold = await pipeline.acompress(None, DOCS, options)
    assert cold.cache_misses == 3 and cold.cache_hits == 0

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran on a warm repeat")

    monkeypatch.setattr(compressor._classifier, "forward", forbidden)
    warm = await pipeline.acompress(None, DOCS, CompressionOptions(rate=0.4))
    assert warm.cache_hits == 3 and warm.cache_misses == 0
    assert [p.text for p in warm.passages] == [p.text for p in cold.passages]
    other_budget = await pipeline.acompress(None, DOCS, CompressionOptions(rate=0.2))
    assert other_budget.tokens_after < warm.tokens_after  # same cache, new budget
    await pipeline.aclose()


async def test_question_aware_chain_ranks_documents_then_compresses_tokens(
    bert_token_classifier, fake_embedder
) -> None:
    settings = RagpressSettings(
        _env_file=None,
        cache={"backend": "memory"},
        compression={
            "stages": [
                {"method": "sentence_selection", "target_ratio": 2.5},
                {"method": "llmlingua2", "params": {"model": bert_token_classifier}},
            ],
            "rate": 0.3,
        },
    )
    pipeline = build_pipeline(settings, embedder=fake_embedder)
    assert pipeline.method == "sentence_selection+llmlingua2"
    question = "When did Röntgen receive the Nobel Prize in Physics?"
    result = await pipeline.acompress(question, DOCS)
    assert result.method == "sentence_selection+llmlingua2"
    assert result.passages[0].text  # the relevant document survives the coarse stage
    assert sum(1 for p in result.passages if p.text) < 3  # an irrelevant one does not
    for passage in result.passages:
        assert verify(passage) or passage.text == ""  # spans map back to the original
    assert result.tokens_after <= 0.3 * result.tokens_before * 1.05
    await pipeline.aclose()
