"""Fine-tune any encoder as a 2-label token classifier on word labels, resumably.

Word labels become token labels through the tokenizer's offsets: every piece of a labelled word
gets its word's label; special tokens and unlabelled characters are ignored in the loss (the
reference counted padding in the loss; this does not). A checkpoint (weights, tokenizer,
optimizer state and position) is written every ``save_every`` steps and at each epoch's end, so
an interrupted run continues where it stopped with the same data order.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.hub import model_not_found

try:
    import torch
    import transformers
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="llmlingua2") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["LabelledText", "TrainingConfig", "train_token_classifier"]

CHECKPOINT_DIR = "checkpoint"
_STATE_FILE = "trainer_state.json"
_OPTIMIZER_FILE = "optimizer.pt"
IGNORE_INDEX = -100


@dataclass(frozen=True, slots=True)
class LabelledText:
    """A text and the keep (1) / drop (0) label of each of its word spans."""

    text: str
    spans: tuple[tuple[int, int], ...]
    labels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Hyper-parameters (defaults: the paper's: Adam, lr 1e-5, batch 10, 10 epochs)."""

    epochs: int = 10
    learning_rate: float = 1e-5
    batch_size: int = 10
    max_length: int = 512
    seed: int = 42
    save_every: int = 500
    """Optimizer steps between checkpoints (one is also written at each epoch's end)."""
    device: str = "cpu"


def train_token_classifier(
    examples: Sequence[LabelledText],
    base_model: str,
    output_dir: str | Path,
    config: TrainingConfig,
    *,
    resume: bool = True,
    on_step: Callable[[int, int, float], None] | None = None,
) -> Path:
    """Fine-tune ``base_model`` on ``examples`` and save the result to ``output_dir``.

    Args:
        examples: Texts with word labels.
        base_model: Hub id or folder of any encoder (a token-classification head with 2
            labels is added when it has none).
        output_dir: Where the final model goes; checkpoints go to ``output_dir/checkpoint``.
        config: Hyper-parameters.
        resume: Continue from ``output_dir/checkpoint`` when it exists.
        on_step: Called after each step with ``(step, total_steps, loss)``.

    Returns:
        ``output_dir``, which then loads in ``LLMLingua2Compressor(model=...)``.

    Raises:
        ConfigurationError: No examples, or a base model without a fast tokenizer.
        ModelNotFoundError: The base model cannot be loaded.
    """
    if not examples:
        raise ConfigurationError("no training examples left; label more texts or filter less")
    output = Path(output_dir)
    checkpoint = output / CHECKPOINT_DIR
    state = _read_state(checkpoint) if resume else None
    source = str(checkpoint) if state else base_model
    tokenizer, model = _load(source, config.device)
    encoded = [_encode(tokenizer, ex, config.max_length) for ex in examples]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    if state:
        optimizer.load_state_dict(
            torch.load(checkpoint / _OPTIMIZER_FILE, map_location=config.device, weights_only=True)
        )
    per_epoch = (len(encoded) + config.batch_size - 1) // config.batch_size
    total = per_epoch * config.epochs
    step = int(state["step"]) if state else 0
    model.train()
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        order = list(range(len(encoded)))
        random.Random(config.seed + epoch).shuffle(order)
        for index in range(offset, per_epoch):
            batch = [encoded[i] for i in order[index * config.batch_size :][: config.batch_size]]
            loss = _step(model, optimizer, batch, tokenizer, config.device)
            step += 1
            if on_step is not None:
                on_step(step, total, loss)
            if step % config.save_every == 0 or index == per_epoch - 1:
                _save(model, tokenizer, optimizer, checkpoint, {"step": step, **asdict(config)})
    model.eval()
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    return output


def _load(source: str, device: str) -> tuple[Any, Any]:
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForTokenClassification.from_pretrained(
            source,
            num_labels=2,
            id2label={0: "drop", 1: "keep"},
            label2id={"drop": 0, "keep": 1},
            ignore_mismatched_sizes=True,
        )
    except OSError as exc:
        raise model_not_found(source, exc, what="base model") from exc
    if not getattr(tokenizer, "is_fast", True) and not hasattr(tokenizer, "backend_tokenizer"):
        raise ConfigurationError(f"{source!r} has no fast tokenizer; labels need its offsets")
    return tokenizer, model.to(device)


def _encode(tokenizer: Any, example: LabelledText, max_length: int) -> dict[str, list[int]]:
    encoding = tokenizer(
        example.text,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    labels: list[int] = []
    word = 0
    spans, word_labels = example.spans, example.labels
    for (start, end), special in zip(
        encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True
    ):
        if special or end <= start:
            labels.append(IGNORE_INDEX)
            continue
        while word < len(spans) and spans[word][1] <= start:
            word += 1
        inside = word < len(spans) and spans[word][0] < end
        labels.append(word_labels[word] if inside else IGNORE_INDEX)
    return {
        "input_ids": list(encoding["input_ids"]),
        "attention_mask": list(encoding["attention_mask"]),
        "labels": labels,
    }


def _step(
    model: Any, optimizer: Any, batch: list[dict[str, list[int]]], tokenizer: Any, device: str
) -> float:
    width = max(len(b["input_ids"]) for b in batch)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def padded(key: str, value: int) -> torch.Tensor:
        rows = [b[key] + [value] * (width - len(b[key])) for b in batch]
        return torch.tensor(rows, dtype=torch.long, device=device)

    output = model(
        input_ids=padded("input_ids", pad),
        attention_mask=padded("attention_mask", 0),
        labels=padded("labels", IGNORE_INDEX),
    )
    optimizer.zero_grad()
    output.loss.backward()
    optimizer.step()
    return float(output.loss.detach())


def _save(model: Any, tokenizer: Any, optimizer: Any, folder: Path, state: dict[str, Any]) -> None:
    partial = folder.with_name(folder.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    torch.save(optimizer.state_dict(), partial / _OPTIMIZER_FILE)
    (partial / _STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    # Swap in the new checkpoint only once it is complete: a crash mid-save keeps the old one.
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        partial.rename(folder)
        _remove_tree(old)
    else:
        partial.rename(folder)


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((folder / _STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return state
