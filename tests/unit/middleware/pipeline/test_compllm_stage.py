"""``method="compllm"`` through the pipeline: per-segment caching, the soft-prompt service."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

from ragpress.compressors.compllm import CompLLMCompressor
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.config import RagpressSettings
from ragpress.exceptions import ConfigurationError, RequestValidationError
from ragpress.middleware.generation import (
    GenerationParams,
    SoftPromptService,
    build_embedding_backend,
    require_embedding_target,
)
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.middleware.pipeline.factory import build_pipeline
from ragpress.types import Passage

pytestmark = pytest.mark.model

TOWER = Passage(
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the "
    "World's Fair. It was the tallest man-made structure in the world for 41 years.",
    title="Eiffel Tower",
)
CURIE = Passage(
    "Marie Curie was a physicist and chemist who conducted pioneering research on "
    "radioactivity. She won Nobel Prizes in 1903 and 1911.",
    title="Marie Curie",
)
SEINE = Passage("The Seine is a river that flows through Paris.", title="Seine")


def segment_count(compressor: CompLLMCompressor, *passages: Passage) -> int:
    return sum(len(compressor.segments(p)) for p in passages)


async def test_second_query_on_known_documents_compresses_only_new_segments(
    compllm, memory_cache
) -> None:
    pipeline = Pipeline([Stage(compllm)], cache=FailOpenCache(memory_cache))
    first = await pipeline.acompress("When was the tower built?", [TOWER, CURIE])
    assert (first.cache_hits, first.cache_misses) == (0, segment_count(compllm, TOWER, CURIE))
    assert compllm.stats.segments_encoded == segment_count(compllm, TOWER, CURIE)

    second = await pipeline.acompress("Which river flows through Paris?", [SEINE, TOWER])
    assert second.cache_hits == segment_count(compllm, TOWER)
    assert second.cache_misses == segment_count(compllm, SEINE)
    assert compllm.stats.segments_encoded == segment_count(compllm, TOWER, CURIE, SEINE)

    # the cached rows are exactly the ones computed the first time, in the new order
    tower_rows = first.passages[0].tokens_after
    assert isinstance(first.embeddings, torch.Tensor)
    assert isinstance(second.embeddings, torch.Tensor)
    assert torch.equal(second.embeddings[-tower_rows:], first.embeddings[:tower_rows])
    uncached = compllm.compress(None, [SEINE, TOWER], pipeline.defaults)
    torch.testing.assert_close(second.embeddings, uncached.embeddings, rtol=1e-5, atol=1e-6)
    assert "analyze" in first.timings_ms and "cache_get" in second.timings_ms


async def test_build_pipeline_with_method_compllm_returns_embeddings(compllm_adapter_dir) -> None:
    settings = RagpressSettings(
        _env_file=None,
        cache={"backend": "memory"},
        compression={"method": "compllm", "params": {"adapter": str(compllm_adapter_dir)}},
    )
    pipeline = build_pipeline(settings)
    assert pipeline.output_kind == "embeddings"
    result = await pipeline.acompress("Who was Marie Curie?", [CURIE, TOWER])
    assert result.method == "compllm"
    assert isinstance(result.embeddings, torch.Tensor)
    assert result.embeddings.shape == (result.tokens_after, 64)
    assert result.tokens_after == sum(p.tokens_after for p in result.passages)
    await pipeline.aclose()


def test_soft_compression_must_be_the_last_stage(compllm, fake_embedder) -> None:
    selector = SentenceSelectionCompressor(fake_embedder)
    with pytest.raises(ConfigurationError, match="put it last"):
        Pipeline([Stage(compllm), Stage(selector)])
    chain = Pipeline([Stage(selector), Stage(compllm)])  # select sentences, then compress softly
    result = chain.compress("When was the tower completed?", [TOWER, CURIE])
    assert result.method == "sentence_selection+compllm"
    assert isinstance(result.embeddings, torch.Tensor)
    assert result.embeddings.shape[0] == result.tokens_after > 0
    chain.close()


async def test_service_streams_an_answer_with_the_local_backend(compllm, memory_cache) -> None:
    pipeline = Pipeline([Stage(compllm)], cache=FailOpenCache(memory_cache))
    service = SoftPromptService(pipeline, build_embedding_backend("local", compressor=compllm))
    prompt = await service.aprepare("When was the tower built?", [TOWER], system="Be brief.")
    expected = compllm.prompt_embeddings(
        "When was the tower built?", prompt.compression.embeddings, system="Be brief."
    )
    assert isinstance(prompt.embeddings, torch.Tensor)
    assert torch.equal(prompt.embeddings, expected)
    chunks = [c async for c in service.astream(prompt, GenerationParams(max_tokens=6))]
    assert chunks[-1].finish_reason in ("stop", "length")
    from ragpress.compressors.compllm.generation import EmbeddingGenerator

    oracle = EmbeddingGenerator(compllm.encoder).generate(expected, max_new_tokens=6)
    assert "".join(c.text for c in chunks) == oracle
    with pytest.raises(RequestValidationError) as caught:
        await service.aprepare("  ", [TOWER])
    assert caught.value.param == "question"
    answer = await service.agenerate(
        "When was the tower built?", [TOWER], GenerationParams(max_tokens=6), system="Be brief."
    )
    assert answer.text == oracle and answer.prompt.compression.cache_hits > 0
    await service.aclose()


@pytest.mark.parametrize("target", ["openai", "anthropic", "gpt-4o"])
def test_api_models_cannot_take_embeddings(compllm, target) -> None:
    with pytest.raises(ConfigurationError, match="API model that takes text") as caught:
        require_embedding_target(target)
    assert "vllm" in str(caught.value) and "sentence_selection" in str(caught.value)
    with pytest.raises(ConfigurationError, match="API model"):
        build_embedding_backend(target, compressor=compllm)


def test_service_refuses_a_text_pipeline(fake_embedder, compllm) -> None:
    text_pipeline = Pipeline([Stage(SentenceSelectionCompressor(fake_embedder))])
    with pytest.raises(ConfigurationError, match="emits text"):
        SoftPromptService(text_pipeline, build_embedding_backend("local", compressor=compllm))
    with pytest.raises(ConfigurationError, match="needs the server's URL"):
        build_embedding_backend("vllm", compressor=compllm)
