"""Decoding from prompt embeddings, checked against Hugging Face ``generate`` as the oracle."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragpress.compressors.compllm.generation import EmbeddingGenerator  # noqa: E402
from ragpress.exceptions import RequestValidationError  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402

pytestmark = pytest.mark.model

DOCS = [
    Passage(
        "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911.",
        title="Marie Curie",
    ),
    Passage("The Seine flows through Paris into the English Channel.", title="Seine"),
]
QUESTION = "When did Marie Curie win the chemistry prize?"


@pytest.fixture
def prompt(compllm):
    concepts = compllm.compress(QUESTION, DOCS, CompressionOptions()).embeddings
    return compllm.prompt_embeddings(QUESTION, concepts)


def test_greedy_stream_equals_hf_generate_from_inputs_embeds(compllm, prompt) -> None:
    generator = EmbeddingGenerator(compllm.encoder)
    deltas = list(generator.stream(prompt, max_new_tokens=12))
    assert deltas[-1].finish_reason in ("length", "stop")
    assert all(d.finish_reason is None for d in deltas[:-1])
    with torch.no_grad(), compllm.encoder.frozen() as llm:
        oracle = llm.generate(inputs_embeds=prompt[None], max_new_tokens=12, do_sample=False)
    expected = compllm.encoder.tokenizer.decode(oracle[0], skip_special_tokens=True)
    assert "".join(d.text for d in deltas) == expected
    assert len(set(oracle[0].tolist())) > 3  # a varied continuation, not one token repeated


def test_prefill_reports_first_token_and_kv_bytes(compllm, prompt) -> None:
    prefill = EmbeddingGenerator(compllm.encoder).prefill(prompt)
    config = compllm.encoder.llm.config
    head_dim = config.hidden_size // config.num_attention_heads
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    assert prefill.kv_cache_bytes == per_position * prompt.shape[0]
    with torch.no_grad(), compllm.encoder.frozen() as llm:
        logits = llm(inputs_embeds=prompt[None]).logits[0, -1]
    assert prefill.first_token == int(logits.argmax())


def test_stop_strings_end_generation_and_are_not_emitted(compllm, prompt) -> None:
    generator = EmbeddingGenerator(compllm.encoder)
    full = generator.generate(prompt, max_new_tokens=12)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    deltas = list(generator.stream(prompt, max_new_tokens=12, stop=[stop]))
    text = "".join(d.text for d in deltas)
    assert text == full[: full.index(stop)]
    assert deltas[-1].finish_reason == "stop"


def test_sampling_is_reproducible_with_a_seed(compllm, prompt) -> None:
    generator = EmbeddingGenerator(compllm.encoder)
    params = {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9, "seed": 7}
    assert generator.generate(prompt, **params) == generator.generate(prompt, **params)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"max_new_tokens": 0}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
    ],
)
def test_bad_sampling_parameters_name_the_field(compllm, prompt, params, field) -> None:
    generator = EmbeddingGenerator(compllm.encoder)
    with pytest.raises(RequestValidationError) as caught:
        list(generator.stream(prompt, **params))
    assert caught.value.param == field
