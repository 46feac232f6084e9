"""Issue 21: a cache entry is used only when it can be the analysis of its passage.

Well-formed but wrong entries (swapped between passages, spans out of range, zeroed token
counts, NaN or mis-sized embeddings, garbage, entries not signed by this deployment) are
misses: logged, counted as rejected, recomputed. The output is what a cold run gives.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragpress.cache.keys import make_key
from ragpress.cache.memory import MemoryCache
from ragpress.compressors.base import BaseCompressor
from ragpress.compressors.sentence_selection import SentenceAnalysis, SentenceSelectionCompressor
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.types import CompressionOptions, Passage
from tests.support.fakes import HashingEmbedder

FIXTURES = Path(__file__).parents[3] / "fixtures"
DOCS = [
    Passage(
        "The Eiffel Tower is in Paris. It opened in 1889. It is 330 metres tall.", title="Tower"
    ),
    Passage(
        "Bread needs flour and water. Yeast makes the dough rise over several hours. Ovens bake "
        "it. A baguette is long. Rye bread is dark and dense, and keeps for a week.",
        title="Bread",
    ),
]
OPTIONS = CompressionOptions(target_ratio=2)


def key_of(compressor: BaseCompressor, passage: Passage) -> str:
    assert compressor.analysis_artefact is not None
    return make_key(
        compressor.analysis_artefact,
        compressor.name,
        compressor.fingerprint(),
        compressor.analysis_key(passage),
    )


def setup(**cache_kwargs: Any) -> tuple[Pipeline, FailOpenCache, SentenceSelectionCompressor]:
    compressor = SentenceSelectionCompressor(HashingEmbedder())
    cache = FailOpenCache(MemoryCache(max_bytes=1 << 22), **cache_kwargs)
    return Pipeline([Stage(compressor)], cache=cache, defaults=OPTIONS), cache, compressor


def texts(result: Any) -> list[str]:
    return [p.text for p in result.passages]


async def put(cache: FailOpenCache, key: str, payload: bytes) -> None:
    """Store ``payload`` as this deployment would (sealed): what someone able to write does."""
    await cache.set_many({key: payload})


async def test_entries_swapped_between_passages_are_misses(caplog) -> None:
    pipeline, cache, compressor = setup()
    cold = await pipeline.acompress("How tall is the tower?", DOCS)
    keys = [key_of(compressor, p) for p in DOCS]
    store = cache.store
    first, second = [await store.get(k) for k in keys]
    assert first is not None and second is not None
    await store.set(keys[0], second)  # values swapped as stored
    await store.set(keys[1], first)
    with caplog.at_level(logging.WARNING, logger="ragpress.cache"):
        swapped = await pipeline.acompress("How tall is the tower?", DOCS)
    assert texts(swapped) == texts(cold)  # not the other passage's cut of this text
    assert (swapped.cache_hits, swapped.cache_misses) == (0, 2)
    assert cache.counters.rejected == 2
    assert any("rejected" in r.message for r in caplog.records)


async def test_swapped_payloads_sealed_for_the_wrong_key_fail_the_check() -> None:
    """Someone who can write to the store seals the other passage's analysis under this key."""
    pipeline, cache, compressor = setup()
    cold = await pipeline.acompress("How tall is the tower?", DOCS)
    analyses = compressor.analyze(DOCS)
    keys = [key_of(compressor, p) for p in DOCS]
    await put(cache, keys[0], compressor.encode_analysis(analyses[1]))
    await put(cache, keys[1], compressor.encode_analysis(analyses[0]))
    swapped = await pipeline.acompress("How tall is the tower?", DOCS)
    assert texts(swapped) == texts(cold)
    assert swapped.cache_hits == 0 and cache.counters.rejected == 2


def corrupt(analysis: SentenceAnalysis, how: str) -> SentenceAnalysis:
    if how == "spans beyond the text":
        return replace(analysis, spans=analysis.spans + 1000)
    if how == "spans repeated":
        spans = analysis.spans.copy()
        spans[1:] = spans[0]
        return replace(analysis, spans=spans)
    if how == "zero token counts":
        return replace(analysis, tokens=np.zeros_like(analysis.tokens), text_tokens=0)
    if how == "NaN embeddings":
        embeddings = analysis.embeddings.copy()
        embeddings[0, 0] = np.nan
        return replace(analysis, embeddings=embeddings)
    if how == "embeddings of another dimension":
        return replace(analysis, embeddings=analysis.embeddings[:, :128])
    if how == "NaN document embedding":
        return replace(analysis, document=np.full_like(analysis.document, np.nan))
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "spans beyond the text",
        "spans repeated",
        "zero token counts",
        "NaN embeddings",
        "embeddings of another dimension",
        "NaN document embedding",
    ],
)
async def test_well_formed_but_wrong_entries_are_misses(how: str) -> None:
    pipeline, cache, compressor = setup()
    cold = await pipeline.acompress("How tall is the tower?", DOCS)
    key = key_of(compressor, DOCS[0])
    bad = corrupt(compressor.analyze(DOCS[:1])[0], how)
    with pytest.raises(ValueError):
        compressor.check_analysis(DOCS[0], bad)
    await put(cache, key, compressor.encode_analysis(bad))
    again = await pipeline.acompress("How tall is the tower?", DOCS)
    assert texts(again) == texts(cold) and again.tokens_after == cold.tokens_after
    assert (again.cache_hits, again.cache_misses) == (1, 1)
    assert cache.counters.rejected == 1
    fixed = await pipeline.acompress("How tall is the tower?", DOCS)  # rewritten when recomputed
    assert fixed.cache_hits == 2


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 40, b"rps1" + b"\x00" * 16, b"not an entry"])
async def test_garbage_bytes_are_misses(garbage: bytes) -> None:
    pipeline, cache, compressor = setup()
    cold = await pipeline.acompress("Bread?", DOCS)
    await cache.store.set(key_of(compressor, DOCS[1]), garbage)
    again = await pipeline.acompress("Bread?", DOCS)
    assert texts(again) == texts(cold) and again.cache_misses == 1
    assert cache.counters.rejected == 1


async def test_signed_entries_refuse_writers_without_the_key() -> None:
    writer, writer_cache, _ = setup(signing_key="deployment secret")
    cold = await writer.acompress("Bread?", DOCS)
    reader, reader_cache, _ = setup(signing_key="deployment secret")
    reader_cache.store = writer_cache.store
    assert (await reader.acompress("Bread?", DOCS)).cache_hits == 2  # same key: shared
    stranger, stranger_cache, _ = setup(signing_key="another secret")
    stranger_cache.store = writer_cache.store
    foreign = await stranger.acompress("Bread?", DOCS)
    assert foreign.cache_hits == 0 and stranger_cache.counters.rejected == 2
    assert texts(foreign) == texts(cold)
    unsigned, unsigned_cache, _ = setup()
    unsigned_cache.store = writer_cache.store
    assert (await unsigned.acompress("Bread?", DOCS)).cache_hits == 0  # nor unsigned readers


def fixture_passages() -> list[Passage]:
    with gzip.open(FIXTURES / "nq_sample.jsonl.gz", "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    return [Passage(d["text"], title=d.get("title")) for r in rows for d in r["docs"]]


def test_real_analyses_always_pass_their_check() -> None:
    """No false alarms: what the compressor computes passes, on real and awkward texts."""
    compressor = SentenceSelectionCompressor(HashingEmbedder())
    passages = [
        *fixture_passages(),
        Passage(""),
        Passage("   \n\n  "),
        Passage("一二三四五六七八九十" * 150),  # no spaces: sentences cut hard
        Passage("- item one\n- item two\n\n# Heading\n\n```\ncode\n```\n| a | b |"),
        Passage("word " * 600, title="Long"),
    ]
    for passage, analysis in zip(passages, compressor.analyze(passages), strict=True):
        decoded = compressor.decode_analysis(compressor.encode_analysis(analysis))
        compressor.check_analysis(passage, decoded)


async def test_the_signing_key_setting_reaches_the_cache() -> None:
    """RAGPRESS_CACHE__SIGNING_KEY: pipelines built with other keys cannot use each other's."""
    from ragpress.config import RagpressSettings
    from ragpress.middleware.pipeline.factory import build_pipeline

    store = MemoryCache(max_bytes=1 << 22)

    def pipeline(key: str) -> Pipeline:
        settings = RagpressSettings(_env_file=None, cache={"backend": "memory", "signing_key": key})
        return build_pipeline(settings, cache=store, embedder=HashingEmbedder())

    await pipeline("ours").acompress("Bread?", DOCS)
    assert (await pipeline("ours").acompress("Bread?", DOCS)).cache_hits == 2
    assert (await pipeline("theirs").acompress("Bread?", DOCS)).cache_hits == 0
