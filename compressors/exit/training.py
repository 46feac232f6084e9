"""Fine-tune a causal LM into an EXIT classifier with LoRA (peft).

The recipe follows the paper (``train/train.py`` of the authors' code): a LoRA adapter on every
linear layer (r=64, alpha=32), learning rate 1e-5, one epoch, effective batch 64, and a loss on
the answer only: cross-entropy of the "Yes"/"No" token at the position after
``<start_of_turn>model\\n``. Prompts are built exactly as at inference
(:meth:`ExitClassifier.fit`, context cut first when too long), so training and scoring never
drift apart. (The authors load the base model in 4-bit, QLoRA; that needs bitsandbytes and a
GPU, and is not done here: the base stays in bf16 on GPU, fp32 on CPU.)

The result is a peft adapter folder (``adapter_config.json`` + ``adapter_model.safetensors`` +
tokenizer) that :class:`~ragpress.compressors.exit.compressor.ExitCompressor` loads like the
published one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragpress.compressors.exit.model import ExitClassifier, FittedPrompts, load_causal_lm
from ragpress.compressors.exit.scoring import ScoringLimits
from ragpress.exceptions import (
    ConfigurationError,
    MissingDependencyError,
    RequestValidationError,
)

try:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "peft", extra="exit") from exc

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ragpress.compressors.exit.data import ExitExample
    from ragpress.compressors.exit.model import DType

__all__ = ["REPORT_FILE", "ExitTrainingConfig", "TrainingReport", "train_exit"]

logger = logging.getLogger("ragpress.compressors.exit")

REPORT_FILE = "ragpress_exit_training.json"


@dataclass(frozen=True, slots=True)
class ExitTrainingConfig:
    """How to fine-tune (defaults: the paper's recipe)."""

    base_model: str
    """Hub id or folder of the causal LM to adapt (the paper: google/gemma-2b-it)."""
    output_dir: Path
    """Where the adapter, tokenizer and report are written."""
    epochs: int = 1
    learning_rate: float = 1e-5
    batch_size: int = 4
    """Examples per forward pass."""
    gradient_accumulation: int = 16
    """Forward passes per optimiser step (effective batch = batch_size x this)."""
    lora_r: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    warmup_ratio: float = 0.03
    """Share of the steps with a linearly rising learning rate."""
    max_prompt_tokens: int = 2048
    """Longest training prompt; only the context is cut."""
    seed: int = 42
    device: str = "cpu"
    dtype: DType = "auto"
    gradient_checkpointing: bool = False
    """Trade compute for memory on long prompts."""

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "learning_rate": math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "batch_size": self.batch_size >= 1,
            "gradient_accumulation": self.gradient_accumulation >= 1,
            "lora_r": self.lora_r >= 1,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "max_prompt_tokens": self.max_prompt_tokens >= 32,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise ConfigurationError(
                f"invalid training settings: {values} (epochs, batch sizes and lora_r >= 1; "
                "learning_rate and lora_alpha > 0; dropout and warmup_ratio in [0, 1); "
                "max_prompt_tokens >= 32)"
            )


@dataclass(frozen=True, slots=True)
class TrainingReport:
    """What a training run did, written beside the adapter as JSON."""

    examples: int
    """Examples trained on."""
    skipped_examples: int
    """Examples whose query and sentence alone exceed ``max_prompt_tokens``."""
    steps: int
    loss_first: float
    """Mean loss over the first tenth of the optimiser steps."""
    loss_last: float
    """Mean loss over the last tenth of the optimiser steps."""
    seconds: float
    validation: dict[str, float] | None
    """Accuracy, precision, recall and F1 at P(Yes) >= 0.5 on the held-out examples."""
    output_dir: str


def train_exit(
    train: Sequence[ExitExample],
    config: ExitTrainingConfig,
    *,
    validation: Sequence[ExitExample] = (),
    on_progress: Callable[[int, int, float], None] | None = None,
) -> TrainingReport:
    """Fine-tune ``config.base_model`` on ``train`` with LoRA and save the adapter.

    Args:
        train: Training examples (see :func:`ragpress.compressors.exit.data.build_examples`).
        config: Model, recipe and output folder.
        validation: Held-out examples, scored after training.
        on_progress: Called after each optimiser step with ``(step, total steps, loss)``.

    Returns:
        The run's statistics (also written to ``output_dir/ragpress_exit_training.json``).

    Raises:
        ModelNotFoundError: The base model cannot be loaded.
        ConfigurationError: No training examples.
    """
    if not train:
        raise ConfigurationError("no training examples; give QA records with supporting facts")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    base = _absolute_if_local(config.base_model)
    model: Any
    model, tokenizer, revision = load_causal_lm(
        base,
        device=config.device,
        dtype=config.dtype,
        merge_adapter=False,
        trainable_adapter=True,
    )
    if not isinstance(model, PeftModel):
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    classifier = ExitClassifier(model, tokenizer, name=base, revision=revision)
    prompts, answers = _encode(classifier, train, config.max_prompt_tokens)
    if not prompts:
        raise ConfigurationError(
            f"none of the {len(train)} training examples fits max_prompt_tokens="
            f"{config.max_prompt_tokens} even without context; raise max_prompt_tokens"
        )
    labels = [classifier.yes_id if answer else classifier.no_id for answer in answers]
    losses = _fit(model, classifier.pad_id, prompts, labels, config, on_progress)
    metrics = None
    if validation:
        model.train(False)
        metrics = _evaluate(classifier, validation, config.max_prompt_tokens)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tokenizer.save_pretrained(output)
    tenth = max(1, len(losses) // 10)
    report = TrainingReport(
        examples=len(prompts),
        skipped_examples=len(train) - len(prompts),
        steps=len(losses),
        loss_first=sum(losses[:tenth]) / tenth,
        loss_last=sum(losses[-tenth:]) / tenth,
        seconds=round(time.perf_counter() - started, 2),
        validation=metrics,
        output_dir=str(output),
    )
    payload = {"report": asdict(report), "config": {**asdict(config), "base_model": base}}
    (output / REPORT_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return report


def _absolute_if_local(name: str) -> str:
    """Local folders are recorded as absolute paths, so the adapter finds its base anywhere."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name


def _encode(
    classifier: ExitClassifier, examples: Sequence[ExitExample], max_prompt_tokens: int
) -> tuple[list[tuple[int, ...]], list[bool]]:
    """Prompt ids and labels; examples whose query and sentence alone overflow are skipped."""
    prompts: list[tuple[int, ...]] = []
    labels: list[bool] = []
    for example in examples:
        try:
            fitted = classifier.fit(
                example.query,
                example.context,
                [example.sentence],
                max_prompt_tokens=max_prompt_tokens,
            )
        except RequestValidationError as exc:
            logger.warning("skipping a training example: %s", exc)
            continue
        prompts.append(fitted.ids[0])
        labels.append(example.label)
    return prompts, labels


def _fit(
    model: Any,
    pad_id: int,
    prompts: Sequence[tuple[int, ...]],
    labels: Sequence[int],
    config: ExitTrainingConfig,
    on_progress: Callable[[int, int, float], None] | None,
) -> list[float]:
    """The training loop; returns the loss of every optimiser step."""
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    per_epoch = math.ceil(len(prompts) / (config.batch_size * config.gradient_accumulation))
    total = per_epoch * config.epochs
    warmup = int(total * config.warmup_ratio)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / (warmup + 1)
            if step < warmup
            else max(0.0, (total - step) / max(1, total - warmup))
        ),
    )
    rng = random.Random(config.seed)
    losses: list[float] = []
    model.train()
    for _ in range(config.epochs):
        order = list(range(len(prompts)))
        rng.shuffle(order)
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
        ]
        for start in range(0, len(batches), config.gradient_accumulation):
            group = batches[start : start + config.gradient_accumulation]
            step_loss = 0.0
            for batch in group:
                loss = _batch_loss(
                    model, pad_id, [prompts[i] for i in batch], [labels[i] for i in batch], device
                )
                (loss * len(batch) / sum(map(len, group))).backward()  # type: ignore[no-untyped-call]
                step_loss += float(loss.detach()) * len(batch) / sum(map(len, group))
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if on_progress is not None:
                on_progress(len(losses), total, step_loss)
    return losses


def _batch_loss(
    model: Any,
    pad_id: int,
    prompts: Sequence[tuple[int, ...]],
    labels: Sequence[int],
    device: torch.device,
) -> torch.Tensor:
    """Cross-entropy of the answer token after each (left-padded) prompt."""
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, prompt in enumerate(prompts):
        ids[r, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[r, width - len(prompt) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        logits_to_keep=1,
    ).logits[:, -1]
    target = torch.tensor(list(labels), dtype=torch.long, device=device)
    return torch.nn.functional.cross_entropy(logits.float(), target)


def _evaluate(
    classifier: ExitClassifier, examples: Sequence[ExitExample], max_prompt_tokens: int
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of P(Yes) >= 0.5 on ``examples``."""
    prompts, truth = _encode(classifier, examples, max_prompt_tokens)
    groups = [FittedPrompts(texts=("",), ids=(ids,)) for ids in prompts]
    scores = [s[0] for s in classifier.score(groups, limits=ScoringLimits(batch_size=16))]
    predicted = [p >= 0.5 for p in scores]
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "examples": float(len(truth)),
        "accuracy": sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    }
