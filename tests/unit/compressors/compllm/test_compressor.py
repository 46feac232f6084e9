"""CompLLM: segments, concept embeddings, the frozen target, persistence, the cache format."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragpress.compressors import load_compressor  # noqa: E402
from ragpress.compressors.compllm import CompLLMCompressor  # noqa: E402
from ragpress.compressors.compllm.segments import (  # noqa: E402
    decode_concepts,
    document_text,
    encode_concepts,
)
from ragpress.exceptions import BudgetError, ConfigurationError  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402

pytestmark = pytest.mark.model

DOCS = [
    Passage(
        "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris. "
        "It was designed by the company of Gustave Eiffel and completed in 1889 for the "
        "World's Fair. It is 330 metres tall.",
        title="Eiffel Tower",
        id="a",
        metadata={"url": "https://example.org/eiffel"},
    ),
    Passage("   ", title="Blank", id="b"),
    Passage(
        "Bread is a staple food prepared from a dough of flour and water, usually by baking.",
        title="Bread",
        id="c",
    ),
]


def test_each_segment_becomes_ceil_len_over_rate_concepts(compllm) -> None:
    result = compllm.compress("How tall is it?", DOCS, CompressionOptions())
    assert [p.source for p in result.passages] == DOCS  # every passage, in order
    for passage, cp in zip(DOCS, result.passages, strict=True):
        lengths = [len(s.ids) for s in compllm.segments(passage)]
        assert all(n <= 20 for n in lengths)
        assert cp.tokens_before == sum(lengths)
        assert cp.tokens_after == sum(math.ceil(n / 2) for n in lengths)
        assert cp.text == "" and cp.spans is None  # the output is embeddings, not text
    assert result.passages[1].tokens_before == 0  # blank passage: nothing to compress
    width = compllm.encoder.hidden_size
    assert tuple(result.embeddings.shape) == (result.tokens_after, width)
    assert result.embeddings.dtype == compllm.encoder.dtype
    assert 1.9 < result.ratio <= 2.0
    assert result.method == "compllm" and "result.embeddings" in result.notes[0]


def test_segments_are_compressed_independently(compllm) -> None:
    first, second = compllm.segments(DOCS[0])[:2]
    alone = compllm.encoder.encode([first.ids])[0]
    batched = compllm.encoder.encode([second.ids, first.ids, second.ids[:7]], batch_size=3)[1]
    torch.testing.assert_close(alone, batched, rtol=1e-5, atol=1e-6)
    # compressed among another document's segments: still the same embeddings
    with_prefix = compllm.analyze([DOCS[2], DOCS[0]])[1].concepts[0]
    torch.testing.assert_close(with_prefix, alone, rtol=1e-5, atol=1e-6)


def test_bfloat16_encoding_runs_the_adapter_in_bfloat16_and_keeps_its_float32_weights(
    compllm, compllm_adapter_dir
) -> None:
    # On a bf16 model, encode() autocasts the LoRA to bf16; the float32 route (PEFT's default,
    # what training uses) and the float32 model are the references it must stay close to.
    low = CompLLMCompressor(str(compllm_adapter_dir), dtype="bfloat16")
    digest = low.encoder.weights_digest()
    segments = [s.ids for s in low.segments(DOCS[0])]
    fast = low.encoder.encode(segments)
    with torch.no_grad():
        float32_lora = low.encoder.encode_with_grad(segments)
    reference = compllm.encoder.encode(segments)
    assert all(f.dtype == torch.bfloat16 for f in fast)
    for got, lora32, full32 in zip(fast, float32_lora, reference, strict=True):
        assert not torch.equal(got, lora32)  # a different (bf16) LoRA path really ran
        for other in (lora32, full32):
            cosine = torch.cosine_similarity(got.float(), other.float(), dim=-1)
            assert float(cosine.min()) > 0.99
    lora = [p for n, p in low.encoder.llm.named_parameters() if "lora_" in n]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert low.encoder.weights_digest() == digest
    assert low.fingerprint() != compllm.fingerprint()  # dtype is part of the cache key


def test_the_target_llm_stays_frozen_and_unmodified(compllm, tiny_llm_dir) -> None:
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(tiny_llm_dir), dtype=torch.float32).eval()
    ids = torch.tensor([compllm.full_prompt_ids("How tall is it?", DOCS)])
    with torch.no_grad(), compllm.encoder.frozen() as llm:
        ours = llm(input_ids=ids).logits
    with torch.no_grad():
        reference = plain(input_ids=ids).logits
    assert torch.equal(ours, reference)  # adapter off: bit-identical to the base model
    assert all(not p.requires_grad for p in compllm.encoder.llm.parameters())
    # ... while compression does use the adapter: an untrained one (LoRA B = 0) differs
    segment = compllm.segments(DOCS[0])[0]
    untrained = CompLLMCompressor.create(str(tiny_llm_dir), lora_rank=4)
    torch.testing.assert_close(
        untrained.encoder.projection.weight, compllm.encoder.projection.weight
    )
    assert not torch.allclose(
        compllm.encoder.encode([segment.ids])[0], untrained.encoder.encode([segment.ids])[0]
    )


def test_adapter_folder_round_trip(compllm, compllm_adapter_dir, tiny_llm_dir, tmp_path) -> None:
    before = compllm.compress(None, DOCS, CompressionOptions()).embeddings
    compllm.save(tmp_path / "copy")
    names = sorted(p.name for p in (tmp_path / "copy").iterdir())
    assert names == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "compllm.json",
        "projection.safetensors",
        "ragpress_compressor.json",
    ]
    adapter_bytes = sum(p.stat().st_size for p in (tmp_path / "copy").iterdir())
    model_bytes = (tiny_llm_dir / "model.safetensors").stat().st_size
    assert adapter_bytes < model_bytes  # a small folder next to the base model id
    loaded = load_compressor("compllm", adapter=str(tmp_path / "copy"))
    assert loaded.fingerprint() == compllm.fingerprint()
    after = loaded.compress(None, DOCS, CompressionOptions()).embeddings
    assert torch.equal(before, after)
    again = CompLLMCompressor.load(tmp_path / "copy", batch_size=2)
    assert again.fingerprint() == compllm.fingerprint()  # batching is not part of it


def test_fingerprint_follows_weights_and_segmenting(compllm, compllm_adapter_dir) -> None:
    other_segments = CompLLMCompressor(str(compllm_adapter_dir), segment_tokens=12)
    assert other_segments.fingerprint() != compllm.fingerprint()
    retrained = CompLLMCompressor(str(compllm_adapter_dir))
    with torch.no_grad():
        retrained.encoder.projection.bias.add_(0.01)
    retrained.refresh_fingerprint()
    assert retrained.fingerprint() != compllm.fingerprint()


def test_keep_strings_survive_as_plain_tokens(compllm) -> None:
    result = compllm.compress(None, DOCS[:1], CompressionOptions(keep=("1889",)))
    segments = compllm.segments(DOCS[0])
    text = document_text(DOCS[0])
    kept = [i for i, s in enumerate(segments) if s.span[0] <= text.index("1889") < s.span[1]]
    assert len(kept) == 1
    offset = sum(math.ceil(len(s.ids) / 2) for s in segments[: kept[0]])
    rows = result.embeddings[offset : offset + len(segments[kept[0]].ids)]
    assert torch.equal(rows, compllm.encoder.embed_ids(segments[kept[0]].ids))
    assert any("keep" in note for note in result.notes)


def test_budget_and_rate_are_reported_not_ignored(compllm) -> None:
    with pytest.raises(BudgetError, match="target_tokens=5"):
        compllm.compress(None, DOCS, CompressionOptions(target_tokens=5))
    result = compllm.compress(None, DOCS, CompressionOptions(target_ratio=4))
    assert any("fixed by the adapter at 2x" in note for note in result.notes)


def test_missing_or_wrong_adapter_is_a_clear_error(tmp_path, tiny_llm_dir) -> None:
    with pytest.raises(ConfigurationError, match="train-soft"):
        CompLLMCompressor()
    with pytest.raises(ConfigurationError, match="not a CompLLM adapter folder"):
        CompLLMCompressor(str(tmp_path))
    with pytest.raises(ConfigurationError, match="could not be loaded"):
        CompLLMCompressor.create(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cache_value_is_bit_exact_safetensors(dtype) -> None:
    tensor = (torch.randn(10, 64) * 3).to(dtype)
    data = encode_concepts(tensor[2:7])  # a view: only its own rows are written
    assert data[8 : 8 + int.from_bytes(data[:8], "little")].startswith(b"{")  # JSON header
    back = decode_concepts(data)
    assert back.dtype == dtype and tuple(back.shape) == (5, 64)
    assert torch.equal(back.view(torch.uint8), tensor[2:7].contiguous().view(torch.uint8))
    with pytest.raises(ValueError, match="schema"):
        decode_concepts(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")


def test_prompt_frames_context_with_the_chat_template(compllm) -> None:
    tokenizer = compllm.encoder.tokenizer
    parts = compllm.prompt_parts("How tall is the tower?", system="Be brief.")
    prefix, suffix = tokenizer.decode(parts.prefix), tokenizer.decode(parts.suffix)
    assert prefix.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert prefix.endswith("Documents:\n")
    assert suffix == "Question: How tall is the tower?<|im_end|>\n<|im_start|>assistant\n"
    concepts = compllm.compress(None, DOCS, CompressionOptions()).embeddings
    prompt = compllm.prompt_embeddings("How tall is the tower?", concepts, system="Be brief.")
    assert prompt.shape[0] == len(parts.prefix) + concepts.shape[0] + len(parts.suffix)
    assert torch.equal(prompt[: len(parts.prefix)], compllm.encoder.embed_ids(parts.prefix))
    full = tokenizer.decode(compllm.full_prompt_ids("How tall is the tower?", DOCS))
    assert "Eiffel Tower\nThe Eiffel Tower is" in full and "Blank" not in full
