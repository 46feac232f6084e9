"""Synthetic checkpoints: a causal LM with random weights and a locally trained tokenizer.

For tests, benchmarks and smoke checks on machines that cannot download a model. The folder is
written with ``save_pretrained`` and read back through the same ``from_pretrained`` code that
loads real checkpoints, so everything downstream runs unchanged. The weights are random, so the
text such a model writes is noise; its shapes, speed and memory are those of the real thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, MissingDependencyError

try:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "transformers", extra="compllm") from exc

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["CHATML_TEMPLATE", "SHAPES", "build_random_checkpoint", "build_tokenizer"]

Shape = Literal["tiny", "small", "qwen2.5-0.5b"]
SHAPES: dict[str, dict[str, Any]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "small": {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    # The published Qwen2.5-0.5B layout (494M parameters with its 151,936-token vocabulary).
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
    },
}
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def build_tokenizer(corpus: Iterable[str], *, vocab_size: int = 2048) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with ChatML special tokens and chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def build_random_checkpoint(
    folder: str | Path,
    *,
    corpus: Iterable[str],
    shape: Shape = "tiny",
    architecture: Literal["qwen2", "llama"] = "qwen2",
    vocab_size: int = 2048,
    dtype: torch.dtype = torch.float32,
    max_positions: int = 32768,
    init_std: float = 0.02,
    seed: int = 0,
) -> Path:
    """Write a random-weight causal LM and a tokenizer trained on ``corpus`` to ``folder``.

    Args:
        folder: Where to save (created).
        corpus: Texts the tokenizer is trained on.
        shape: Layer sizes from :data:`SHAPES`.
        architecture: ``qwen2`` or ``llama`` modelling code.
        vocab_size: Tokenizer vocabulary (the model's is at least this).
        dtype: Weight dtype on disk.
        max_positions: Longest sequence the model accepts.
        init_std: Standard deviation of the random weights; larger values make a tiny model's
            greedy output vary more (useful to compare decoders token by token).
        seed: Seed of the weight initialisation.

    Returns:
        The folder, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``.
    """
    if shape not in SHAPES:
        raise ConfigurationError(f"shape={shape!r} is not one of {sorted(SHAPES)}")
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(corpus, vocab_size=vocab_size)
    tokenizer.save_pretrained(str(path))
    dims = dict(SHAPES[shape])
    dims["vocab_size"] = max(dims.get("vocab_size", 0), len(tokenizer))
    common = {
        **dims,
        "max_position_embeddings": max_positions,
        "tie_word_embeddings": True,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": None,
        "initializer_range": init_std,
    }
    model: Any
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = (
            Qwen2ForCausalLM(Qwen2Config(**common))
            if architecture == "qwen2"
            else LlamaForCausalLM(LlamaConfig(**common))
        )
    model.to(dtype).save_pretrained(str(path))
    return path
