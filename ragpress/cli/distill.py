"""``ragpress distill``: train an LLMLingua-2 token classifier from a teacher LLM's compressions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ragpress.cli._common import fail, quiet_third_party
from ragpress.exceptions import RagpressError

if TYPE_CHECKING:
    from ragpress.compressors.llmlingua2.distill import DistilledPair


@click.command()
@click.argument("source", metavar="TEXTS", type=click.Path(exists=True, dir_okay=False))
@click.argument("output", metavar="OUT_DIR", type=click.Path(file_okay=False))
@click.option(
    "--base-model",
    required=True,
    metavar="PATH_OR_ID",
    help="Encoder to fine-tune (hub id or folder), e.g. xlm-roberta-large.",
)
@click.option("--teacher-url", metavar="URL", help="OpenAI-compatible base URL of the teacher.")
@click.option("--teacher-model", metavar="NAME", help="Model name the teacher endpoint serves.")
@click.option(
    "--api-key",
    envvar="OPENAI_API_KEY",
    show_envvar=True,
    help="Key for the teacher endpoint.",
)
@click.option(
    "--pairs",
    is_flag=True,
    help='TEXTS already holds {"original", "compressed"} pairs: skip the teacher.',
)
@click.option(
    "--instruction-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Teacher prompt with a {text} slot (default: the LLMLingua-2 paper's).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", "learning_rate", type=float, default=1e-5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Torch device for training.")
@click.option(
    "--filter",
    "filter_share",
    type=click.FloatRange(0, 0.9),
    default=0.1,
    show_default=True,
    help="Share dropped by variation rate, then by alignment gap.",
)
@click.option("--fresh", is_flag=True, help="Ignore an existing checkpoint in OUT_DIR.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def distill(
    source: str,
    output: str,
    base_model: str,
    teacher_url: str | None,
    teacher_model: str | None,
    api_key: str | None,
    pairs: bool,
    instruction_file: str | None,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    save_every: int,
    device: str,
    filter_share: float,
    fresh: bool,
    quiet: bool,
) -> None:
    """Distil a compressor: teacher compressions -> word labels -> a token classifier.

    \b
    TEXTS is JSONL with a "text" field per line (or, with --pairs, "original" and
    "compressed"). Labelled pairs go to OUT_DIR/pairs.jsonl as they arrive and the model
    to OUT_DIR/model; checkpoints in OUT_DIR/model/checkpoint make a rerun resume.

    \b
    Examples:
      ragpress distill docs.jsonl out --teacher-url https://api.openai.com/v1 \\
          --teacher-model gpt-4o --base-model FacebookAI/xlm-roberta-large
      ragpress distill pairs.jsonl out --pairs --base-model ./minilm --epochs 3
      ragpress compress notes.txt -m llmlingua2 --model out/model --rate 0.4
    """
    from ragpress.compressors.llmlingua2 import distill as d
    from ragpress.compressors.llmlingua2.training import TrainingConfig, train_token_classifier

    quiet_third_party()
    out = Path(output)
    store = out / "pairs.jsonl"
    show = not quiet and sys.stderr.isatty()
    try:
        if pairs:
            collected = d.read_pairs(source)
        else:
            if not (teacher_url and teacher_model):
                raise click.UsageError(
                    "--teacher-url and --teacher-model are required (or pass --pairs)"
                )
            instruction = (
                Path(instruction_file).read_text(encoding="utf-8")
                if instruction_file
                else d.PAPER_INSTRUCTION
            )
            teacher = d.OpenAITeacher(
                teacher_model, base_url=teacher_url, api_key=api_key, instruction=instruction
            )
            try:
                collected = d.distill_pairs(
                    _texts(source),
                    teacher,
                    store,
                    on_pair=_announce if show else None,
                )
            finally:
                teacher.close()
        kept = d.filter_pairs(collected, variation_quantile=filter_share, gap_quantile=filter_share)
        config = TrainingConfig(
            epochs=epochs,
            learning_rate=learning_rate,
            batch_size=batch_size,
            save_every=save_every,
            device=device,
        )
        model_dir = _train(
            train_token_classifier,
            [p.labelled() for p in kept],
            base_model,
            out / "model",
            config,
            resume=not fresh,
            show=show,
        )
    except RagpressError as exc:
        fail(exc)
    if not quiet:
        summary = {"pairs": len(collected), "kept": len(kept), "model": str(model_dir)}
        click.echo(json.dumps(summary), err=True)


def _announce(pair: DistilledPair) -> None:
    click.echo(
        f"labelled chunk {pair.key[:8]} ({sum(pair.labels)}/{len(pair.labels)} kept)", err=True
    )


def _texts(source: str) -> list[str]:
    texts = []
    for number, line in enumerate(Path(source).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(
                f"line {number}: not JSON ({exc.msg})", param_hint="TEXTS"
            ) from None
        text = record.get("text") if isinstance(record, dict) else None
        if not isinstance(text, str):
            raise click.BadParameter(f'line {number}: needs a string "text"', param_hint="TEXTS")
        texts.append(text)
    return texts


def _train(train, examples, base_model, folder, config, *, resume: bool, show: bool):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        disable=not show,
    )
    with progress:
        task = progress.add_task("train", total=None, loss=float("nan"))

        def on_step(step: int, total: int, loss: float) -> None:
            progress.update(task, completed=step, total=total, loss=loss)

        return train(examples, base_model, folder, config, resume=resume, on_step=on_step)
