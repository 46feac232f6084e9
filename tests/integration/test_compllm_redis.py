"""CompLLM concept embeddings through a real Redis: bit-exact, pipelined, shared."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

from ragpress.compressors.compllm import CompLLMCompressor
from ragpress.compressors.compllm.segments import decode_concepts, encode_concepts
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.types import Passage

pytestmark = [pytest.mark.redis, pytest.mark.model]

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DOCS = [
    Passage(
        "Ada Lovelace wrote the first algorithm intended for Charles Babbage's Analytical "
        "Engine, and is often called the first computer programmer.",
        title="Ada Lovelace",
    ),
    Passage("The Analytical Engine was a proposed mechanical general-purpose computer."),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
async def test_concepts_round_trip_bit_exact(redis_cache, dtype) -> None:
    tensors = {f"seg{i}": (torch.randn(10, 96) * 10 ** (i - 2)).to(dtype) for i in range(5)}
    await redis_cache.set_many({k: encode_concepts(v) for k, v in tensors.items()})
    blobs = await redis_cache.get_many([*tensors, "absent"])  # one MGET round trip
    assert blobs[-1] is None
    for (key, original), blob in zip(tensors.items(), blobs, strict=False):
        back = decode_concepts(blob)
        assert back.dtype == dtype and back.shape == original.shape, key
        assert torch.equal(back.view(torch.uint8), original.view(torch.uint8)), key


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
async def test_a_second_server_reads_the_first_ones_segments(
    redis_cache, compllm_adapter_dir, dtype
) -> None:
    first = CompLLMCompressor(str(compllm_adapter_dir), dtype=dtype)
    cold = await Pipeline([Stage(first)], cache=FailOpenCache(redis_cache)).acompress("q", DOCS)
    segments = sum(len(first.segments(p)) for p in DOCS)
    assert (cold.cache_hits, cold.cache_misses) == (0, segments)

    second = CompLLMCompressor(str(compllm_adapter_dir), dtype=dtype)  # another process's view
    warm = await Pipeline([Stage(second)], cache=FailOpenCache(redis_cache)).acompress("q2", DOCS)
    assert (warm.cache_hits, warm.cache_misses) == (segments, 0)
    assert second.stats.segments_encoded == 0  # nothing recomputed
    assert isinstance(warm.embeddings, torch.Tensor)
    assert isinstance(cold.embeddings, torch.Tensor)
    assert warm.embeddings.dtype == getattr(torch, dtype)
    assert torch.equal(warm.embeddings, cold.embeddings)  # bit-exact through Redis
