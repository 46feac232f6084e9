"""A tiny Gemma-architecture causal LM and tokenizer, built locally for the EXIT tests.

Nothing is downloaded: the tokenizer is a byte-level BPE trained here on a few hundred words
(with Gemma's special tokens and a Gemma-format chat template), and the model is a two-layer
``GemmaForCausalLM`` with random weights. Both are saved with ``save_pretrained`` so the tests
load them through the same code that loads ``google/gemma-2b-it`` and its EXIT adapter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# Gemma's chat format (user/model turns, BOS first), written as a Jinja template.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]

CORPUS = """
Query: Full context: Sentence: Is this sentence useful in answering the query?
Answer only "Yes" or "No". Yes No Yes No "Yes" "No"
The Eiffel Tower is in Paris. It was completed in 1889. Gustave Eiffel's company built it.
Berlin is the capital of Germany. The Brandenburg Gate stands in Berlin. Berlin has many museums.
Bananas are yellow. Apples can be red or green. Grapes grow in bunches.
Wilhelm Conrad Röntgen received the first Nobel Prize in Physics in 1901 for discovering X-rays.
The journal is published by the American Psychological Association, whose first president was
G. Stanley Hall. A river flows through the city, and the old bridge crosses it near the market.
The company was founded in 1998 and its headquarters are located in the north of the country.
Who when where what which how many first last year city country river president prize built.
user model user model
"""


def build_tokenizer(vocab_size: int = 700):
    """A byte-level BPE tokenizer with Gemma's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS] * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<start_of_turn>", "<end_of_turn>"],
    )
    fast.chat_template = GEMMA_CHAT_TEMPLATE
    for word in ("Yes", "No"):
        assert len(fast.encode(word, add_special_tokens=False)) == 1, word
    return fast


def build_model(tokenizer, *, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A ``GemmaForCausalLM`` with random weights and tiny sizes."""
    import torch
    from transformers import GemmaConfig, GemmaForCausalLM

    config = GemmaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=hidden_size // 4,
        max_position_embeddings=2048,
        # Large random weights and an untied head make P(Yes) depend on the whole prompt,
        # so scores spread over (0, 1) and equality checks between scorers mean something.
        initializer_range=0.3,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = GemmaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5)
    return model.eval()


def save_tiny_gemma(folder: Path, **model_kwargs) -> Path:
    """Build and save the tiny model and tokenizer into ``folder``; returns it."""
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, **model_kwargs)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_lora_adapter(base_folder: Path, folder: Path, *, seed: int = 1) -> Path:
    """A LoRA adapter on the tiny model, saved with peft like a published EXIT adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules="all-linear",
        init_lora_weights=False,  # random A and B, so the adapter changes the scores
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(folder)
    return folder


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one CPU thread: tiny models gain nothing from more, and on a busy machine
    idle-spinning worker threads make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
