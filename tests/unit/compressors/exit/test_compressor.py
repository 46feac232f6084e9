"""The EXIT compressor: threshold rule, order and provenance, selective augmentation, budgets."""

from __future__ import annotations

from typing import cast

import pytest

pytest.importorskip("peft")

from ragpress.cache.memory import MemoryCache
from ragpress.compressors import load_compressor
from ragpress.compressors.exit.compressor import ExitCompressor
from ragpress.compressors.exit.model import ExitClassifier
from ragpress.exceptions import (
    BudgetError,
    CompressionError,
    ConfigurationError,
    ModelNotFoundError,
    RequestValidationError,
)
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.provenance import verify
from ragpress.types import CompressionOptions, Passage

pytestmark = pytest.mark.model  # loads the tiny checkpoint the tests build
QUERY = "When was the Eiffel Tower completed, and who built it?"
DOCS = [
    Passage(
        "The Eiffel Tower is in Paris. It was completed in 1889. Gustave Eiffel's company "
        "built it. It is made of wrought iron.",
        title="Eiffel Tower",
        id="d1",
        metadata={"rank": 1},
    ),
    Passage(
        "Berlin is the capital of Germany. The Brandenburg Gate stands in Berlin. Berlin has "
        "many museums.",
        title="Berlin",
        id="d2",
    ),
    Passage("", title="Empty", id="d3"),
    Passage("Bananas are yellow. Apples can be red or green. Grapes grow in bunches.", id="d4"),
]


@pytest.fixture(scope="module")
def scores(exit_classifier) -> list[list[float]]:
    return ExitCompressor(exit_classifier).score(QUERY, DOCS)


def _kept(result) -> list[list[str]]:
    return [[p.source.text[s:e] for s, e in (p.spans or ())] for p in result.passages]


def _sentences(compressor, docs=DOCS) -> list[list[str]]:
    return [
        [d.text[s:e] for s, e in a.spans]
        for d, a in zip(docs, compressor.analyze(docs), strict=True)
    ]


def test_keeps_exactly_the_sentences_at_or_above_the_threshold(exit_classifier, scores) -> None:
    flat = sorted(s for doc in scores for s in doc)
    threshold = flat[len(flat) // 2]  # about half pass
    compressor = ExitCompressor(exit_classifier, threshold=threshold)
    result = compressor.compress(QUERY, DOCS, CompressionOptions())
    sentences = _sentences(compressor)
    expected = [
        [s for s, p in zip(doc, ps, strict=True) if p >= threshold]
        for doc, ps in zip(sentences, scores, strict=True)
    ]
    assert _kept(result) == expected  # the rule, in original order
    assert 0 < sum(map(len, expected)) < sum(map(len, sentences))
    assert [p.source for p in result.passages] == DOCS  # every document, same order
    for passage, doc_scores in zip(result.passages, scores, strict=True):
        assert verify(passage)  # text == join_spans(source.text, spans)
        assert passage.score == (max(doc_scores) if doc_scores else None)
    assert result.passages[2].text == "" and result.passages[2].score is None
    assert any("context=document" in note for note in result.notes)


def test_nothing_relevant_gives_an_empty_context_and_says_so(exit_classifier, scores) -> None:
    best = max(s for doc in scores for s in doc)
    compressor = ExitCompressor(exit_classifier, threshold=min(1.0, best + 1e-3))
    result = compressor.compress(QUERY, DOCS, CompressionOptions())
    assert result.context() == "" and result.tokens_after == 0
    assert all(p.text == "" and p.spans == () for p in result.passages)
    assert len(result.passages) == len(DOCS)
    note = next(n for n in result.notes if "no sentence reached" in n)
    assert "selective augmentation" in note and f"{best:.3f}" in note


def test_fallback_top_k_keeps_the_best_sentence_behind_a_flag(exit_classifier, scores) -> None:
    compressor = ExitCompressor(exit_classifier, threshold=1.0, fallback_top_k=1)
    result = compressor.compress(QUERY, DOCS, CompressionOptions())
    best_doc = max(range(len(scores)), key=lambda d: max(scores[d], default=-1))
    best_k = max(range(len(scores[best_doc])), key=lambda k: scores[best_doc][k])
    kept = _kept(result)
    assert sum(map(len, kept)) == 1
    assert kept[best_doc] == [_sentences(compressor)[best_doc][best_k]]
    assert any("fallback_top_k" in n for n in result.notes)


@pytest.mark.parametrize("ratio", [1.5, 2.5, 4])
def test_budget_mode_keeps_the_highest_scores_until_the_budget_is_spent(
    exit_classifier, scores, ratio
) -> None:
    compressor = ExitCompressor(exit_classifier, selection="budget")
    options = CompressionOptions(target_ratio=ratio)
    result = compressor.compress(QUERY, DOCS, options)
    budget = options.budget(result.tokens_before)
    assert budget is not None
    assert result.tokens_after <= budget + len(DOCS)  # joining may merge/split a token per doc
    # Independent greedy: best score first, skip what does not fit.
    analyses = compressor.analyze(DOCS)
    ranked = sorted(((-p, d, k) for d, doc in enumerate(scores) for k, p in enumerate(doc)))
    spent = 0
    expected: list[set[int]] = [set() for _ in DOCS]
    for _, d, k in ranked:
        if spent + analyses[d].tokens[k] <= budget:
            expected[d].add(k)
            spent += analyses[d].tokens[k]
    kept = [
        {a.spans.index(span) for span in (p.spans or ())}
        for p, a in zip(result.passages, analyses, strict=True)
    ]
    assert kept == expected
    assert result.tokens_after >= 0.6 * budget


def test_threshold_mode_treats_a_budget_as_a_ceiling(exit_classifier, scores) -> None:
    compressor = ExitCompressor(exit_classifier, threshold=0.0)  # every sentence passes
    options = CompressionOptions(target_ratio=2)
    result = compressor.compress(QUERY, DOCS, options)
    budget = options.budget(result.tokens_before)
    assert budget is not None
    assert result.tokens_after <= budget + len(DOCS)
    assert any("did not fit the budget" in n for n in result.notes)
    uncapped = compressor.compress(QUERY, DOCS, CompressionOptions())
    assert uncapped.tokens_after > result.tokens_after
    nothing_fits = compressor.compress(QUERY, DOCS, CompressionOptions(target_tokens=1))
    assert nothing_fits.context() == ""
    assert any("no sentence fits the budget of 1 tokens" in n for n in nothing_fits.notes)


def test_keep_strings_survive_and_can_exceed_the_budget(exit_classifier) -> None:
    compressor = ExitCompressor(exit_classifier, threshold=1.0)
    result = compressor.compress(QUERY, DOCS, CompressionOptions(keep=("Grapes",)))
    assert result.passages[3].text == "Grapes grow in bunches."
    with pytest.raises(BudgetError) as info:
        compressor.compress(QUERY, DOCS, CompressionOptions(target_tokens=2, keep=("Grapes",)))
    assert info.value.param == "keep"


def test_all_documents_context_judges_sentences_in_every_document(exit_classifier, scores) -> None:
    compressor = ExitCompressor(exit_classifier, context="all")
    groups = compressor.prompts(QUERY, DOCS)
    assert len(groups) == 1 and len(groups[0].texts) == sum(map(len, scores))
    context = groups[0].texts[0].split("Full context:\n")[1].split("\nSentence:\n")[0]
    assert context == (f"Eiffel Tower\n{DOCS[0].text}\n\nBerlin\n{DOCS[1].text}\n\n{DOCS[3].text}")
    all_scores = compressor.score(QUERY, DOCS)
    assert [len(s) for s in all_scores] == [len(s) for s in scores]
    assert all_scores != scores  # the context changes the judgement
    result = compressor.compress(QUERY, DOCS, CompressionOptions())
    assert any("context=all" in n for n in result.notes)


def test_a_request_without_a_question_is_rejected(exit_classifier) -> None:
    with pytest.raises(RequestValidationError, match="question") as info:
        ExitCompressor(exit_classifier).compress("  ", DOCS, CompressionOptions())
    assert info.value.param == "query"


def test_no_documents_give_an_empty_result(exit_classifier) -> None:
    result = ExitCompressor(exit_classifier).compress(QUERY, [], CompressionOptions())
    assert result.passages == () and result.tokens_before == 0


async def test_pipeline_caches_the_sentence_analysis(exit_classifier) -> None:
    compressor = ExitCompressor(exit_classifier, threshold=0.3)
    pipeline = Pipeline([Stage(compressor)], cache=FailOpenCache(MemoryCache(max_bytes=1 << 20)))
    first = await pipeline.acompress(QUERY, DOCS, CompressionOptions())
    second = await pipeline.acompress("Who built it?", DOCS, CompressionOptions())
    again = await pipeline.acompress(QUERY, DOCS, CompressionOptions())
    assert (first.cache_hits, second.cache_hits) == (0, len(DOCS))
    assert [p.spans for p in again.passages] == [p.spans for p in first.passages]
    blob = compressor.encode_analysis(compressor.analyze(DOCS[:1])[0])
    assert compressor.decode_analysis(blob) == compressor.analyze(DOCS[:1])[0]


def test_registry_config_and_fingerprint(exit_classifier) -> None:
    compressor = load_compressor("exit", classifier=exit_classifier, threshold=0.7)
    assert isinstance(compressor, ExitCompressor) and compressor.threshold == 0.7
    assert compressor.fingerprint() != ExitCompressor(exit_classifier, threshold=0.6).fingerprint()
    assert compressor.model_revision() == exit_classifier.revision
    with pytest.raises(ConfigurationError, match="threshold"):
        ExitCompressor(exit_classifier, threshold=1.5)
    with pytest.raises(ConfigurationError, match="context"):
        ExitCompressor(exit_classifier, context="paragraph")  # type: ignore[arg-type]


def test_save_and_load_round_trip(tiny_gemma_dir, tmp_path) -> None:
    compressor = ExitCompressor(model=str(tiny_gemma_dir), threshold=0.4, context="all")
    compressor.save(tmp_path / "saved")
    loaded = ExitCompressor.load(tmp_path / "saved")
    assert loaded.get_config_dict() == compressor.get_config_dict()
    assert loaded.fingerprint() == compressor.fingerprint()
    loaded.close()
    with pytest.raises(CompressionError, match="closed"):
        loaded.compress(QUERY, DOCS, CompressionOptions())


def test_lora_adapter_loads_through_the_published_path(tiny_gemma_dir, tmp_path, scores) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, PreTrainedModel

    from tests.support.exit_tiny import save_lora_adapter

    adapter_dir = save_lora_adapter(tiny_gemma_dir, tmp_path / "exit-lora")
    assert (adapter_dir / "adapter_config.json").is_file()
    merged = ExitClassifier.from_pretrained(str(adapter_dir))  # base named by adapter_config
    unmerged = ExitClassifier.from_pretrained(str(adapter_dir), merge_adapter=False)
    assert "+" in merged.revision  # base and adapter both identified
    adapted = ExitCompressor(merged).score(QUERY, DOCS)
    diffs = [
        abs(a - b) for x, y in zip(adapted, scores, strict=True) for a, b in zip(x, y, strict=True)
    ]
    assert max(diffs) > 1e-3
    assert ExitCompressor(unmerged).score(QUERY, DOCS) == [
        pytest.approx(s, abs=1e-4) for s in adapted
    ]
    # The same adapter applied by peft directly, scored prompt by prompt.
    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_gemma_dir), adapter_dir
    ).eval()
    # an unmerged PeftModel, as from_pretrained(merge_adapter=False) passes it too
    model = cast("PreTrainedModel", reference)
    plain = ExitClassifier(model, merged.tokenizer, name="peft", revision="r")
    groups = ExitCompressor(merged).prompts(QUERY, DOCS)
    assert plain.score_one_by_one(groups) == [
        pytest.approx(s, abs=1e-4) for s in [s for s in adapted if s]
    ]


def test_missing_models_and_bad_adapters_are_configuration_errors(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="could not be loaded"):
        ExitClassifier.from_pretrained(str(tmp_path / "no-such-model"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(ConfigurationError, match="base_model"):
        ExitClassifier.from_pretrained(str(adapter))
