"""``ragpress train-exit``: build EXIT training data from QA sets and fine-tune with LoRA."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ragpress.cli._common import dumps, fail, progress_bar, quiet_third_party
from ragpress.exceptions import RagpressError, RequestValidationError

if TYPE_CHECKING:
    from ragpress.compressors.exit.data import ExitExample, QARecord
    from ragpress.compressors.exit.training import ExitTrainingConfig, TrainingReport


@click.command("train-exit")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--base-model",
    default="google/gemma-2b-it",
    show_default=True,
    help="Causal LM to adapt: hub id or folder (an adapter folder continues its training).",
)
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder for the adapter, its tokenizer and the training report.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--learning-rate", type=float, default=1e-5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--grad-accum",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Forward passes per optimiser step (effective batch = batch size x this).",
)
@click.option("--lora-r", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--lora-alpha", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-prompt-tokens", type=click.IntRange(min=32), default=2048, show_default=True)
@click.option(
    "--max-records", type=click.IntRange(min=1), help="Use only the first N records of DATA."
)
@click.option(
    "--validation-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Hold out the last N records and report accuracy/F1 on them after training.",
)
@click.option(
    "--random-negatives",
    type=click.Choice(["distractors", "other-queries"]),
    default="distractors",
    show_default=True,
    help="Random negatives from the record's distractor paragraphs, or from other questions.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
)
@click.option("--gradient-checkpointing", is_flag=True, help="Less memory, more compute.")
@click.option(
    "--dump-data",
    type=click.Path(dir_okay=False),
    help="Also write the sampled training examples to this JSONL file.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def train_exit(
    data: tuple[str, ...],
    base_model: str,
    output: str,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    grad_accum: int,
    lora_r: int,
    lora_alpha: int,
    max_prompt_tokens: int,
    max_records: int | None,
    validation_size: int,
    random_negatives: str,
    seed: int,
    device: str,
    dtype: str,
    gradient_checkpointing: bool,
    dump_data: str | None,
    quiet: bool,
) -> None:
    """Fine-tune a causal LM into an EXIT sentence classifier (LoRA adapter in OUTPUT).

    \b
    DATA: QA records with supporting facts, JSON array or JSONL (.gz too):
      HotpotQA: {"question", "context": [[title, [sentences]]], "supporting_facts": [[title, i]]}
      ragpress: {"question", "answers", "docs": [{"title", "text", "is_gold",
                 "supporting_sentences": [i, ...]}]}   (without supporting_sentences, a gold
                 doc's sentences holding an answer string are the positives)
    Examples are sampled 2:1:1 (supporting sentences : other sentences of supporting
    paragraphs : random negatives), as in the EXIT paper. Defaults follow its recipe.

    \b
    Examples:
      ragpress train-exit hotpot_train_v1.1.json -o exit-adapter --validation-size 1000
    Then compress with it:
      export RAGPRESS_COMPRESSION__METHOD=exit
      export RAGPRESS_COMPRESSION__PARAMS='{"model": "exit-adapter"}'
      ragpress compress notes.json
    """
    from ragpress.compressors.exit.data import build_examples
    from ragpress.compressors.exit.training import ExitTrainingConfig

    quiet_third_party()
    records = _read(data, max_records)
    train_records, held_out = _split(records, validation_size)
    try:
        dataset = build_examples(
            train_records,
            seed=seed,
            random_negatives="other_queries"
            if random_negatives == "other-queries"
            else "distractors",
        )
        validation = (
            build_examples(held_out, seed=seed, random_negatives="distractors").examples
            if held_out
            else []
        )
        config = ExitTrainingConfig(
            base_model=base_model,
            output_dir=Path(output),
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            gradient_accumulation=grad_accum,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            max_prompt_tokens=max_prompt_tokens,
            seed=seed,
            device=device,
            dtype=dtype,  # type: ignore[arg-type]
            gradient_checkpointing=gradient_checkpointing,
        )
    except RequestValidationError as exc:
        raise click.UsageError(str(exc)) from exc
    except RagpressError as exc:
        fail(exc)
    if dump_data:
        with Path(dump_data).open("w", encoding="utf-8") as handle:
            for example in dataset.examples:
                handle.write(dumps(example.to_json()) + "\n")
    report = _train(dataset.examples, config, validation, show_progress=not quiet)
    if not quiet:
        summary = {
            "records": len(train_records),
            "weak_label_records": dataset.weak_label_records,
            "examples": dataset.counts,
            "validation_records": len(held_out),
            **asdict(report),
        }
        click.echo(json.dumps(summary), err=True)


def _read(paths: tuple[str, ...], limit: int | None) -> list[QARecord]:
    from ragpress.compressors.exit.data import parse_qa_record, read_qa_records

    records: list[QARecord] = []
    try:
        for path in paths:
            for where, raw in read_qa_records(path):
                records.append(parse_qa_record(raw, f"{path}:{where}"))
                if limit is not None and len(records) >= limit:
                    return records
    except RequestValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="DATA") from exc
    except UnicodeDecodeError as exc:
        raise click.BadParameter(f"not UTF-8 text (byte {exc.start})", param_hint="DATA") from exc
    return records


def _split(records: list[QARecord], validation_size: int) -> tuple[list[QARecord], list[QARecord]]:
    """The last ``validation_size`` records are held out (the paper's HotpotQA split)."""
    if validation_size and validation_size >= len(records):
        raise click.BadParameter(
            f"--validation-size {validation_size} leaves no training records out of "
            f"{len(records)}; lower it",
            param_hint="--validation-size",
        )
    cut = len(records) - validation_size
    return records[:cut], records[cut:]


def _train(
    examples: list[ExitExample],
    config: ExitTrainingConfig,
    validation: list[ExitExample],
    *,
    show_progress: bool,
) -> TrainingReport:
    from ragpress.compressors.exit.training import train_exit as run

    progress = progress_bar(
        "training", disable=not (show_progress and sys.stderr.isatty()), fields=("loss",)
    )
    with progress:
        task = progress.add_task("train", total=None, loss="-")

        def advance(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=f"{loss:.4f}")

        try:
            return run(examples, config, validation=validation, on_progress=advance)
        except RagpressError as exc:
            fail(exc)
