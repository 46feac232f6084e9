"""``ragpress train-soft``: distil a CompLLM adapter on QA records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ragpress.cli._common import fail, progress_bar, quiet_third_party
from ragpress.exceptions import RagpressError, RequestValidationError
from ragpress.middleware.batch.jsonl import iter_lines
from ragpress.middleware.batch.records import parse_record

if TYPE_CHECKING:
    from collections.abc import Callable

    from ragpress.compressors.compllm.compressor import CompLLMCompressor
    from ragpress.compressors.compllm.training import StepReport, TrainingExample


@click.command("train-soft")
@click.argument("source", metavar="DATA")
@click.argument("target", metavar="OUT")
@click.option("--model", "-m", metavar="ID|DIR", help="Base LLM (hub id or folder) to train on.")
@click.option("--adapter", metavar="DIR", help="Start from this adapter folder instead of fresh.")
@click.option("--resume", is_flag=True, help="Continue from OUT's latest checkpoint.")
@click.option("--overwrite", is_flag=True, help="Start over even if OUT holds a run.")
@click.option("--rate", type=click.FloatRange(min=1), default=2.0, show_default=True)
@click.option("--segment-tokens", type=click.IntRange(1, 4096), default=20, show_default=True)
@click.option("--lora-rank", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--grad-accum", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--warmup-steps", type=click.IntRange(min=0), default=50, show_default=True)
@click.option("--max-context-tokens", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--max-answer-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--answers",
    type=click.Choice(["gold", "self"]),
    default="gold",
    show_default=True,
    help="Distil on the record's answer, or on the model's own greedy answer.",
)
@click.option("--save-every", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, mps.")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default="auto",
    show_default=True,
    help="Weights of the frozen LLM (auto: bfloat16 on a capable GPU).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
    default="auto",
    show_default=True,
    help="Autocast for training (auto: bf16 on a capable GPU, fp32 on CPU).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Use only the first N records.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def train_soft(source: str, target: str, **opts: Any) -> None:
    """Train a CompLLM soft-compression adapter on the QA records in DATA; write it to OUT.

    \b
    DATA is JSONL or JSONL.gz in the format `ragpress batch` reads, with answers:
      {"question": "...", "answers": ["..."], "docs": [{"title": "...", "text": "..."}]}
    The frozen LLM reads each context once as tokens (teacher) and once as concept
    embeddings (student); the LoRA adapter and projection learn to make the student's hidden
    states on the answer match the teacher's.

    \b
    OUT receives checkpoints/step-N/ every --save-every steps, train_log.jsonl (loss per
    step) and, at the end, the adapter itself. Use it with
      RAGPRESS_COMPRESSION__METHOD=compllm RAGPRESS_COMPRESSION__PARAMS='{"adapter": "OUT"}'

    \b
    Examples:
      ragpress train-soft nq_train.jsonl.gz ./compllm-qwen --model Qwen/Qwen2.5-0.5B-Instruct \\
          --device cuda --steps 2000
      ragpress train-soft nq_train.jsonl.gz ./compllm-qwen --resume --device cuda
    """
    from ragpress.compressors.compllm.training import (
        TrainingOptions,
        latest_checkpoint,
        train,
    )

    out = Path(target)
    checkpoint = latest_checkpoint(out)
    if opts["resume"] and checkpoint is None:
        raise click.UsageError(f"--resume: {out} holds no checkpoint; drop --resume to start")
    if checkpoint is not None and not (opts["resume"] or opts["overwrite"]):
        raise click.UsageError(
            f"{out} already holds a run (last checkpoint {checkpoint.name}); pass --resume to "
            "continue it or --overwrite to start over"
        )
    if checkpoint is None and not (opts["model"] or opts["adapter"]):
        raise click.UsageError("give --model (the base LLM to train on) or --adapter")
    if opts["overwrite"] and not opts["resume"] and out.exists():
        _clear_run(out)
    examples = _read_examples(source, opts["answers"], opts["limit"])
    quiet_third_party()
    try:
        options = TrainingOptions(
            steps=opts["steps"],
            learning_rate=opts["lr"],
            grad_accum=opts["grad_accum"],
            warmup_steps=opts["warmup_steps"],
            max_context_tokens=opts["max_context_tokens"],
            max_answer_tokens=opts["max_answer_tokens"],
            answers=opts["answers"],
            save_every=opts["save_every"],
            precision=opts["precision"],
            seed=opts["seed"],
        )
        resume_from = checkpoint if opts["resume"] else None
        compressor = _compressor(opts, resume_from)
        show = not opts["quiet"] and sys.stderr.isatty()
        with _TrainingProgress(show, options.steps, resume_from) as on_step:
            summary = train(
                compressor, examples, out, options, resume_from=resume_from, on_step=on_step
            )
    except RagpressError as exc:
        fail(exc)
    if not opts["quiet"]:
        losses = summary.losses
        report = {
            "steps": [summary.first_step, summary.last_step],
            "first_loss": round(losses[0], 6) if losses else None,
            "last_loss": round(losses[-1], 6) if losses else None,
            "adapter": str(summary.output),
        }
        click.echo(json.dumps(report), err=True)


def _compressor(opts: dict[str, Any], resume_from: Path | None) -> CompLLMCompressor:
    from ragpress.compressors.compllm.compressor import CompLLMCompressor
    from ragpress.compressors.compllm.model import ConceptEncoder

    start = resume_from or (Path(opts["adapter"]) if opts["adapter"] else None)
    device, dtype = opts["device"], opts["dtype"]
    if start is not None:
        encoder = ConceptEncoder.load(
            start, base_model=opts["model"], device=device, dtype=dtype, trainable=True
        )
        return CompLLMCompressor(encoder=encoder, device=device, dtype=dtype)
    return CompLLMCompressor.create(
        opts["model"],
        rate=opts["rate"],
        segment_tokens=opts["segment_tokens"],
        lora_rank=opts["lora_rank"],
        device=device,
        dtype=dtype,
        seed=opts["seed"],
    )


def _read_examples(source: str, answers: str, limit: int | None) -> list[TrainingExample]:
    from ragpress.compressors.compllm.training import TrainingExample

    if source != "-" and not Path(source).is_file():
        raise click.BadParameter(f"{source!r} is not a file", param_hint="DATA")
    examples: list[TrainingExample] = []
    for line, raw in iter_lines(source):
        try:
            item = parse_record(line, raw)
        except RequestValidationError as exc:
            raise click.BadParameter(f"line {line}: {exc}", param_hint="DATA") from None
        if not (item.query and item.query.strip()):
            raise click.BadParameter(
                f"line {line}: the record has no question; training needs one per record",
                param_hint="DATA",
            )
        answer = _first_answer(item.record)
        if answers == "gold" and answer is None:
            raise click.BadParameter(
                f"line {line}: no answer (give 'answers': [\"...\"] or 'answer': \"...\"), or "
                "train with --answers self",
                param_hint="DATA",
            )
        examples.append(TrainingExample(item.query, item.passages, answer))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise click.BadParameter(f"{source!r} holds no records", param_hint="DATA")
    return examples


def _first_answer(record: dict[str, Any]) -> str | None:
    value = record.get("answers", record.get("answer"))
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    return value if isinstance(value, str) and value.strip() else None


def _clear_run(out: Path) -> None:
    import shutil

    from ragpress.compressors.compllm.training import CHECKPOINTS_DIR, LOG_FILE

    shutil.rmtree(out / CHECKPOINTS_DIR, ignore_errors=True)
    (out / LOG_FILE).unlink(missing_ok=True)


class _TrainingProgress:
    """A rich progress bar with the running loss, fed by ``train(on_step=...)``."""

    def __init__(self, show: bool, total: int, resume_from: Path | None) -> None:
        self._bar = progress_bar("training", disable=not show, fields=("loss",))
        done = 0
        if resume_from is not None:
            done = int(resume_from.name.split("-")[1])
        self._task = self._bar.add_task("train", total=total, completed=done, loss="-")

    def __enter__(self) -> Callable[[StepReport], None]:
        self._bar.__enter__()
        return self._update

    def _update(self, report: StepReport) -> None:
        self._bar.update(self._task, completed=report.step, loss=f"{report.loss:.4f}")

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(None, None, None)
