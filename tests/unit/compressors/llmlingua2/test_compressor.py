"""LLMLingua-2 fixed mode: global budget, exact provenance, tokenizer-derived words, caching."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ragpress.compressors import load_compressor  # noqa: E402
from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor  # noqa: E402
from ragpress.compressors.llmlingua2.model import plain_backend  # noqa: E402
from ragpress.compressors.llmlingua2.words import (  # noqa: E402
    chunk_bounds,
    pool_words,
    tokenize_texts,
)
from ragpress.exceptions import BudgetError, ConfigurationError, ModelNotFoundError  # noqa: E402
from ragpress.provenance import verify  # noqa: E402
from ragpress.tokens import get_token_counter  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402

pytestmark = pytest.mark.model

DOCS = [
    Passage(
        "# Quarterly report\n\nRevenue grew **12%** to $4.5M in Q3. The board met on "
        "2024-10-03 and approved the plan.\n\n- hire 3 engineers\n- open the Berlin office\n",
        title="Report",
        metadata={"url": "https://example.com/q3"},
    ),
    Passage(""),
    Passage(
        "Wilhelm Conrad Röntgen received the first Nobel Prize in Physics in 1901 for his "
        "discovery of X-rays. Москва — столица России. 北京是中国的首都。"
    ),
    Passage(
        " ".join(
            f"Item {i}: the quick brown fox jumps over the lazy dog {i % 7} times."
            for i in range(60)
        )
    ),
]


class _Analysed:
    """A compressor whose analyses of DOCS are computed once (as the pipeline cache would)."""

    def __init__(self, compressor: LLMLingua2Compressor) -> None:
        self.inner = compressor
        self.docs_analyses = compressor.analyze(DOCS)
        self._classifier = compressor._classifier

    def compress(self, query, passages, options, analyses=None):
        if analyses is None and list(passages) == DOCS:
            analyses = self.docs_analyses
        return self.inner.compress(query, passages, options, analyses=analyses)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module", params=["bert", "xlmr"])
def compressor(request, bert_token_classifier, xlmr_token_classifier) -> _Analysed:
    path = bert_token_classifier if request.param == "bert" else xlmr_token_classifier
    return _Analysed(LLMLingua2Compressor(path))


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.33, 0.5, 0.8])
def test_global_budget_hits_the_requested_rate_within_5_percent(compressor, rate) -> None:
    result = compressor.compress(None, DOCS, CompressionOptions(rate=rate))
    counter = get_token_counter("cl100k_base")
    assert result.tokens_before == sum(counter.count(d.text) for d in DOCS)
    assert result.tokens_after == sum(counter.count(p.text) for p in result.passages)
    assert abs(result.tokens_after / result.tokens_before - rate) <= 0.05 * rate


def test_target_ratio_and_target_tokens_are_budgets_too(compressor) -> None:
    by_ratio = compressor.compress(None, DOCS, CompressionOptions(target_ratio=4))
    assert abs(by_ratio.ratio - 4) <= 0.2
    by_tokens = compressor.compress(None, DOCS, CompressionOptions(target_tokens=120))
    assert 114 <= by_tokens.tokens_after <= 126


def test_output_is_cut_from_the_original_and_spans_verify(compressor) -> None:
    result = compressor.compress(None, DOCS, CompressionOptions(rate=0.4))
    for passage, original in zip(result.passages, DOCS, strict=True):
        assert passage.source is original  # title, id, metadata ride along
        assert verify(passage) or (not original.text and passage.text == "")
        for start, end in passage.spans:
            assert original.text[start:end] in original.text
    assert result.passages[0].metadata["url"] == "https://example.com/q3"


def test_rate_one_keeps_everything_verbatim(compressor) -> None:
    result = compressor.compress(None, DOCS, CompressionOptions(rate=1.0))
    for passage, original in zip(result.passages, DOCS, strict=True):
        assert passage.text == original.text.strip()


@pytest.mark.parametrize("rate", [1e-6, 0.01])
def test_tiny_rates_and_empty_input_do_not_crash(compressor, rate) -> None:
    result = compressor.compress(None, DOCS, CompressionOptions(rate=rate))
    assert all(verify(p) or p.text == "" for p in result.passages)
    empty = compressor.compress(
        None, [Passage(""), Passage("   \n ")], CompressionOptions(rate=0.5)
    )
    assert [p.text for p in empty.passages] == ["", ""]
    assert compressor.compress(None, [], CompressionOptions(rate=0.5)).passages == ()


def test_keep_strings_and_digits_survive(compressor) -> None:
    options = CompressionOptions(rate=0.2, keep=("Berlin office", "Röntgen"))
    result = compressor.compress(None, DOCS, options)
    assert "Berlin office" in result.passages[0].text
    assert "Röntgen" in result.passages[2].text


def test_forced_words_over_the_budget_raise_budget_error(compressor) -> None:
    with pytest.raises(BudgetError, match="forced words"):
        compressor.compress(
            None,
            DOCS[:1],
            CompressionOptions(target_tokens=4, keep=("Revenue grew **12%** to $4.5M",)),
        )


def test_threshold_mode_keeps_words_above_the_probability(bert_token_classifier) -> None:
    low = LLMLingua2Compressor(bert_token_classifier, threshold=0.3)
    high = LLMLingua2Compressor(bert_token_classifier, threshold=0.7)
    analyses = low.analyze(DOCS)
    words = sum(a.count for a in analyses)
    kept_low = low.compress(None, DOCS, CompressionOptions(rate=0.1), analyses=analyses)
    kept_high = high.compress(None, DOCS, CompressionOptions(rate=0.1), analyses=analyses)
    above = sum(int((a.probs >= 0.7).sum()) for a in analyses)
    assert 0 < above < words
    assert kept_high.tokens_after < kept_low.tokens_after  # the rate is not what decides
    capped = high.compress(None, DOCS, CompressionOptions(target_tokens=30), analyses=analyses)
    assert capped.tokens_after <= 32


def test_special_tokens_come_from_each_tokenizer(bert_token_classifier, xlmr_token_classifier):
    bert = LLMLingua2Compressor(bert_token_classifier)._classifier
    xlmr = LLMLingua2Compressor(xlmr_token_classifier)._classifier
    assert bert.tokenizer.convert_ids_to_tokens([*bert.prefix_ids, *bert.suffix_ids]) == [
        "[CLS]",
        "[SEP]",
    ]
    assert xlmr.tokenizer.convert_ids_to_tokens([*xlmr.prefix_ids, *xlmr.suffix_ids]) == [
        "<s>",
        "</s>",
    ]
    assert xlmr.max_length == 512 and xlmr.content_length == 510


def _words(backend, text: str) -> list[str]:
    tokens = tokenize_texts(backend, [text])[0]
    spans, _ = pool_words(tokens, torch.zeros(tokens.size).numpy())
    return [text[s:e] for s, e in spans.tolist()]


def test_word_boundaries_come_from_the_tokenizer_not_the_name(
    bert_token_classifier, xlmr_token_classifier
) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = "Hello, unaffable world. Prices: 3.5kg!"
    expected = ["Hello", ",", "unaffable", "world", ".", "Prices", ":", "3.5kg", "!"]
    xlmr = plain_backend(Tokenizer.from_file(f"{xlmr_token_classifier}/tokenizer.json"))
    assert _words(xlmr, text) == expected
    bert = plain_backend(Tokenizer.from_file(f"{bert_token_classifier}/tokenizer.json"))
    # WordPiece's pre-tokenizer splits "3.5kg"; words stay slices of the original (cased) text.
    assert _words(bert, text) == [*expected[:7], "3", ".", "5kg", "!"]
    assert [t for t in bert.encode("unaffable").tokens if t.startswith("##")]  # pieces pooled
    # Byte-level BPE (GPT-2/RoBERTa style, "Ġ" pieces): same words from the same rules.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        [text] * 5,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    assert _words(bpe, text) == [*expected[:7], "3", ".", "5", "kg", "!"]  # GPT-2's regex
    assert _words(xlmr, "北京是中国") == list("北京是中国")  # unspaced scripts: a word per piece


def test_chunks_never_split_words_and_respect_the_model_window(xlmr_token_classifier) -> None:
    from tokenizers import Tokenizer

    backend = plain_backend(Tokenizer.from_file(f"{xlmr_token_classifier}/tokenizer.json"))
    tokens = tokenize_texts(backend, [DOCS[3].text])[0]
    bounds = chunk_bounds(tokens, 100)
    assert bounds[0][0] == 0 and bounds[-1][1] == tokens.size
    assert all(b - a <= 100 for a, b in bounds)
    assert all(a2 == b1 for (_, b1), (a2, _) in itertools.pairwise(bounds))
    assert all(tokens.word_start[a] for a, _ in bounds)


def test_long_documents_span_many_chunks(compressor) -> None:
    long = Passage(" ".join(DOCS[3].text for _ in range(2)))
    (analysis,) = compressor.analyze([long])
    assert analysis.count > 1000
    result = compressor.compress(None, [long], CompressionOptions(rate=0.3))
    assert verify(result.passages[0])
    assert abs(result.tokens_after / result.tokens_before - 0.3) <= 0.015


def test_analysis_roundtrips_through_cache_bytes(compressor) -> None:
    analyses = compressor.analyze(DOCS)
    decoded = [compressor.decode_analysis(compressor.encode_analysis(a)) for a in analyses]
    a = compressor.compress(None, DOCS, CompressionOptions(rate=0.3), analyses=analyses)
    b = compressor.compress(None, DOCS, CompressionOptions(rate=0.3), analyses=decoded)
    assert [p.text for p in a.passages] == [p.text for p in b.passages]


def test_context_filter_drops_low_scoring_documents(bert_token_classifier) -> None:
    compressor = LLMLingua2Compressor(bert_token_classifier, context_filter=True)
    result = compressor.compress(None, DOCS, CompressionOptions(rate=0.3))
    assert any("context filter dropped" in n for n in result.notes)
    assert sum(1 for p in result.passages if p.text) < 3


def test_registry_and_config_validation(bert_token_classifier) -> None:
    compressor = load_compressor("llmlingua2", model=bert_token_classifier, word_pooling="first")
    assert compressor.name == "llmlingua2"
    other = load_compressor("llmlingua2", model=bert_token_classifier, force_reserve_digit=True)
    assert compressor.fingerprint() != other.fingerprint()
    with pytest.raises(ConfigurationError, match="mode"):
        LLMLingua2Compressor(bert_token_classifier, mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="threshold"):
        LLMLingua2Compressor(bert_token_classifier, threshold=1.5)


def test_missing_model_says_how_to_use_a_local_copy(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="local folder") as info:
        LLMLingua2Compressor(str(tmp_path / "no-such-model"))
    assert "hf download" in str(info.value)


def test_onnx_backend_makes_the_same_decisions(bert_token_classifier, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    torch_backend = LLMLingua2Compressor(bert_token_classifier)
    onnx_backend = LLMLingua2Compressor(
        bert_token_classifier, backend="onnx", onnx_path=str(tmp_path / "m.onnx")
    )
    assert (tmp_path / "m.onnx").is_file()
    a, b = torch_backend.analyze(DOCS), onnx_backend.analyze(DOCS)
    for x, y in zip(a, b, strict=True):
        assert (x.spans == y.spans).all()
        assert abs(x.probs - y.probs).max(initial=0.0) < 1e-4
    options = CompressionOptions(rate=0.33)
    left = torch_backend.compress(None, DOCS, options, analyses=a)
    right = onnx_backend.compress(None, DOCS, options, analyses=b)
    assert [p.spans for p in left.passages] == [p.spans for p in right.passages]
    assert torch_backend.fingerprint() != onnx_backend.fingerprint()
    # Idle ONNX Runtime threads must not spin on the cores the rest of the process needs.
    session_options = onnx_backend._classifier.onnx_session.get_session_options()
    assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def _kept_words(compressor, analyses, options) -> list[bool]:
    """Each word's keep decision: inside one of the kept runs of its passage."""
    result = compressor.compress(None, DOCS, options, analyses=analyses)
    return [
        any(a <= start and end <= b for a, b in passage.spans or ())
        for analysis, passage in zip(analyses, result.passages, strict=True)
        for start, end in analysis.spans.tolist()
    ]


@pytest.mark.parametrize(("checkpoint", "floor"), [("bert", 0.95), ("xlmr", 0.99)])
def test_int8_keeps_nearly_the_same_words(
    checkpoint, floor, bert_token_classifier, xlmr_token_classifier, tmp_path
) -> None:
    """Int8 moves probabilities, so a few decisions flip; measured 0.971 (bert), 1.0 (xlmr)."""
    onnx = pytest.importorskip("onnx")
    path = bert_token_classifier if checkpoint == "bert" else xlmr_token_classifier
    fp32 = LLMLingua2Compressor(path, backend="onnx", onnx_path=str(tmp_path / "m.onnx"))
    int8 = LLMLingua2Compressor(
        path, backend="onnx", quantize="int8", onnx_path=str(tmp_path / "q.onnx")
    )
    graph = onnx.load(str(tmp_path / "q.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert "MatMulInteger" in ops  # really quantized,
    assert [n for n in graph.node if n.op_type == "MatMul" and "classifier" in n.name]  # head fp32
    a, b = fp32.analyze(DOCS), int8.analyze(DOCS)
    assert all((x.spans == y.spans).all() for x, y in zip(a, b, strict=True))
    if checkpoint == "bert":  # the probabilities do move
        moved = max(abs(x.probs - y.probs).max(initial=0.0) for x, y in zip(a, b, strict=True))
        assert moved > 1e-3
    options = CompressionOptions(rate=0.33)
    left, right = _kept_words(fp32, a, options), _kept_words(int8, b, options)
    agreement = sum(x == y for x, y in zip(left, right, strict=True)) / len(left)
    assert agreement >= floor
    result = int8.compress(None, DOCS, options, analyses=b)
    assert result.tokens_after == pytest.approx(0.33 * result.tokens_before, rel=0.05)


def test_int8_has_its_own_cache_keys_and_file(bert_token_classifier, tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    fp32 = LLMLingua2Compressor(
        bert_token_classifier, backend="onnx", onnx_path=str(tmp_path / "m.onnx")
    )
    int8 = LLMLingua2Compressor(
        bert_token_classifier, backend="onnx", quantize="int8", onnx_path=str(tmp_path / "q.onnx")
    )
    assert fp32.fingerprint() != int8.fingerprint()  # analysis cache keys differ
    assert "int8" in int8.model_revision() and "onnxruntime-" in int8.model_revision()
    assert int8.get_config_dict()["quantize"] == "int8"
    default_fp32, default_int8 = fp32._default_onnx_path(), int8._default_onnx_path()
    assert default_fp32.endswith("model.onnx") and default_int8.endswith("model.int8.onnx")
    assert default_fp32 != default_int8


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"quantize": "int4", "backend": "onnx"}, "must be 'int8'"),
        ({"quantize": "int8"}, "add backend='onnx'"),
        ({"quantize": "int8", "backend": "onnx", "mode": "compat"}, "mode='fixed'"),
        ({"quantize": "int8", "backend": "onnx", "device": "cuda"}, "device='cpu'"),
        ({"quantize": "int8", "backend": "onnx", "dtype": "bfloat16"}, "'float32'"),
    ],
)
def test_int8_refuses_combinations_it_does_not_serve(bert_token_classifier, kwargs, fix) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(fix)):
        LLMLingua2Compressor(bert_token_classifier, **kwargs)


def test_concurrent_requests_share_forward_passes(
    xlmr_token_classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    compressor = LLMLingua2Compressor(xlmr_token_classifier)
    expected = [a.probs for a in compressor.analyze(DOCS)]
    classifier = compressor._classifier
    calls: list[int] = []
    gate = threading.Event()
    original = classifier.keep_probabilities

    def slow_first_call(sequences, **kwargs):
        calls.append(len(sequences))
        if len(calls) == 1:
            gate.wait(5)  # hold the model while the other requests queue up
        return original(sequences, **kwargs)

    monkeypatch.setattr(classifier, "keep_probabilities", slow_first_call)
    results: dict[int, list[Any]] = {}

    def request(i: int) -> None:
        results[i] = compressor.analyze(DOCS)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(4)]
    threads[0].start()
    while not calls:
        pass
    for t in threads[1:]:
        t.start()
    while len(compressor._batcher._queue) < 3:
        pass
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 2  # the first request, then the three queued ones together
    for analyses in results.values():
        for a, probs in zip(analyses, expected, strict=True):
            assert abs(a.probs - probs).max(initial=0.0) < 1e-5


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cuda_runs_the_same_code_path(bert_token_classifier, dtype) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu = LLMLingua2Compressor(bert_token_classifier)
    gpu = LLMLingua2Compressor(bert_token_classifier, device="cuda", dtype=dtype)
    a, b = cpu.analyze(DOCS), gpu.analyze(DOCS)
    tolerance = 1e-4 if dtype == "float32" else 0.05
    for x, y in zip(a, b, strict=True):
        assert (x.spans == y.spans).all()
        assert abs(x.probs - y.probs).max(initial=0.0) < tolerance
    result = gpu.compress(None, DOCS, CompressionOptions(rate=0.33), analyses=b)
    assert abs(result.tokens_after / result.tokens_before - 0.33) <= 0.05 * 0.33


def test_an_onnx_file_of_the_other_precision_is_refused(bert_token_classifier, tmp_path) -> None:
    fp32_file, int8_file = str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx")
    LLMLingua2Compressor(bert_token_classifier, backend="onnx", onnx_path=fp32_file)
    LLMLingua2Compressor(
        bert_token_classifier, backend="onnx", quantize="int8", onnx_path=int8_file
    )
    with pytest.raises(ConfigurationError, match="holds a float32 model but this compressor"):
        LLMLingua2Compressor(
            bert_token_classifier, backend="onnx", quantize="int8", onnx_path=fp32_file
        )
    with pytest.raises(ConfigurationError, match=r"holds an int8 model but .* runs float32"):
        LLMLingua2Compressor(bert_token_classifier, backend="onnx", onnx_path=int8_file)
    # each file is still accepted by the compressor of its own precision
    LLMLingua2Compressor(bert_token_classifier, backend="onnx", onnx_path=fp32_file)
