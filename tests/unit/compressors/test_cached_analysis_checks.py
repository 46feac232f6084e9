"""Issue 21: each compressor that caches an analysis checks a decoded entry before use.

What it computes always passes; well-formed entries that cannot be the unit's analysis fail
(the pipeline then treats them as misses: tests/unit/middleware/pipeline/test_cache_validation.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from ragpress.types import Passage

pytestmark = pytest.mark.model

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


def test_exit_checks_its_cached_sentences(exit_classifier) -> None:
    from ragpress.compressors.exit import ExitCompressor

    compressor = ExitCompressor(exit_classifier)
    passages = [*DOCS, Passage("一二三四五六七八九十" * 150)]
    analyses = compressor.analyze(passages)
    for passage, analysis in zip(passages, analyses, strict=True):
        compressor.check_analysis(
            passage, compressor.decode_analysis(compressor.encode_analysis(analysis))
        )
    good = analyses[0]
    for bad in (
        replace(good, spans=tuple((s + 500, e + 500) for s, e in good.spans)),
        replace(good, tokens=tuple(0 for _ in good.tokens)),
        replace(good, tokens=good.tokens[:-1]),
        analyses[1],  # another passage's sentences
    ):
        with pytest.raises(ValueError):
            compressor.check_analysis(passages[0], bad)


@pytest.mark.parametrize("mode", ["fixed", "compat"])
def test_llmlingua2_checks_its_cached_words(bert_token_classifier, mode) -> None:
    pytest.importorskip("torch")
    from ragpress.compressors.llmlingua2.compat import CompatChunks
    from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor, WordAnalysis

    compressor = LLMLingua2Compressor(bert_token_classifier, mode=mode)
    analyses = compressor.analyze(DOCS)
    for passage, analysis in zip(DOCS, analyses, strict=True):
        compressor.check_analysis(
            passage, compressor.decode_analysis(compressor.encode_analysis(analysis))
        )
    good = analyses[0]
    if isinstance(good, WordAnalysis):
        bads: list[Any] = [
            replace(good, spans=good.spans + 10_000),
            replace(good, spans=good.spans[::-1].copy()),
            replace(good, tokens=np.zeros_like(good.tokens)),
            replace(good, probs=np.full_like(good.probs, np.nan)),
            replace(good, probs=good.probs + 2),
            replace(good, probs=good.probs[:-1]),
        ]
    else:
        assert isinstance(good, CompatChunks)
        bads = [
            replace(good, probs=tuple(np.full_like(p, np.nan) for p in good.probs)),
            replace(good, probs=tuple(p[:-1] for p in good.probs)),
            replace(good, ids=tuple(i + 10**9 for i in good.ids)),
            replace(good, chunks=(*good.chunks, "extra")),
        ]
    for bad in bads:
        with pytest.raises(ValueError):
            compressor.check_analysis(DOCS[0], bad)


def test_compllm_checks_its_cached_concepts(compllm) -> None:
    torch = pytest.importorskip("torch")
    units = compllm.analysis_units(DOCS[:1])[0]
    concepts = compllm.analyze_units([u.item for u in units])
    for unit, tensor in zip(units, concepts, strict=True):
        compllm.check_analysis(unit.item, compllm.decode_analysis(compllm.encode_analysis(tensor)))
    segment, tensor = units[0].item, concepts[0]
    poisoned = tensor.clone()
    poisoned[0, 0] = float("nan")
    for bad in (poisoned, tensor[:0], torch.cat([tensor, tensor])):
        with pytest.raises(ValueError):
            compllm.check_analysis(segment, bad)
