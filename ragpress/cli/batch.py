"""``ragpress batch``: compress a corpus (JSONL, JSONL.gz or Parquet) record by record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ragpress.cli._common import (
    budget_options,
    check_input_file,
    check_output_file,
    fail,
    options_from,
    pipeline_options,
    progress_bar,
    quiet_third_party,
    require_text_method,
)
from ragpress.exceptions import RagpressError
from ragpress.middleware.batch.job import (
    DEFAULT_BATCH_SIZE,
    BatchJob,
    SettingsPipelineFactory,
    run_job,
)

if TYPE_CHECKING:
    from ragpress.config import RagpressSettings
    from ragpress.middleware.batch.runner import BatchReport


@click.command()
@click.argument("source", metavar="IN")
@click.argument("target", metavar="OUT")
@pipeline_options
@budget_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes (local) or actors (ray), each with its own model.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Records per micro-batch (one model pass over all their documents).",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine; ray: Ray Data (extra ray), local or a cluster.",
)
@click.option("--ray-address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS).")
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    help="GPUs per Ray actor (default: 1 when the cluster has GPUs, else 0).",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Records between checkpoints of OUT (fsync, gzip member, Parquet part).",
)
@click.option("--resume", is_flag=True, help="Skip records whose id is already in OUT; append.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def batch(
    source: str,
    target: str,
    settings: RagpressSettings,
    target_ratio: float | str | None,
    min_ratio: float | None,
    max_ratio: float | None,
    rate: float | None,
    target_tokens: int | None,
    keep: tuple[str, ...],
    workers: int,
    batch_size: int,
    engine: str,
    ray_address: str | None,
    gpus_per_worker: float | None,
    checkpoint_every: int,
    resume: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Compress every record of IN (JSONL, JSONL.gz or Parquet; - for stdin) into OUT.

    \b
    Input lines are records such as
      {"id": "q1", "question": "...", "docs": [{"title": "...", "text": "..."}]}
      {"id": "d7", "text": "..."}
    Every input line gives one output line, in order, with the same id and fields,
    plus "docs" (compressed text, title and metadata kept, "spans" of the original),
    "context", "stats" and "error" (null, or what was wrong with that record).
    OUT is JSONL, JSONL.gz when it ends in .gz, Parquet when it ends in .parquet.

    \b
    Examples:
      ragpress batch nq.jsonl.gz out.jsonl --target-ratio 3
      ragpress batch big.parquet out.parquet --workers 4 --resume
      ragpress batch big.jsonl out.jsonl --cache redis://127.0.0.1:6379/0 --engine ray

    Ctrl-C stops cleanly; --resume continues where it stopped, as after a crash.
    Exit status: 0 when every record compressed, 1 when some records have errors,
    130 when interrupted.
    """
    check_input_file(source, param_hint="IN")
    if _same_file(source, target):
        raise click.UsageError(
            f"IN and OUT are the same file ({_describe(source)} and {_describe(target)}): "
            "writing OUT would destroy the input before it is read, with --overwrite and "
            "--resume alike; write OUT to another file, e.g. "
            f"{_sibling(target)!r}"
        )
    check_output_file(target, param_hint="OUT")
    out_exists = target != "-" and (
        (Path(target).exists() and Path(target).stat().st_size > 0)
        or Path(f"{target}.parts").exists()
    )
    if out_exists and not (resume or overwrite):
        raise click.UsageError(
            f"{target} already exists; pass --resume to continue it or --overwrite to replace it"
        )
    if engine == "ray" and source == "-":
        raise click.BadParameter("--engine ray reads files, not stdin", param_hint="IN")
    options = options_from(
        target_ratio, rate, target_tokens, keep, min_ratio=min_ratio, max_ratio=max_ratio
    )
    require_text_method(settings)
    quiet_third_party()
    job = BatchJob(
        source=source,
        target=target,
        options=options,
        engine="ray" if engine == "ray" else "local",
        workers=workers,
        batch_size=batch_size,
        resume=resume,
        checkpoint_records=checkpoint_every,
        ray_address=ray_address,
        gpus_per_worker=gpus_per_worker,
    )
    show_progress = not quiet and sys.stderr.isatty()
    try:
        report = _run(job, SettingsPipelineFactory(settings), show_progress)
    except KeyboardInterrupt:
        click.echo(
            f"interrupted; every record in {target} is complete: run the same command with "
            "--resume to continue",
            err=True,
        )
        sys.exit(130)
    except RagpressError as exc:
        fail(exc)
    except OSError as exc:  # a disk that fills up or a file that vanishes while running
        raise click.ClickException(
            f"{exc.filename or target}: {exc.strerror or exc}; every record already in "
            f"{target} is complete: fix the cause and run the same command with --resume"
        ) from exc
    if not quiet:
        summary = {**report.as_dict(), "engine": engine, "workers": workers}
        click.echo(json.dumps(summary), err=True)
    if report.errors:
        sys.exit(1)


def _same_file(source: str, target: str) -> bool:
    """Whether OUT is IN, through links too, or would be once created."""
    if source == "-" or target == "-":
        return False
    try:
        if Path(target).exists():
            return Path(source).samefile(target)
        return Path(target).resolve() == Path(source).resolve()
    except OSError:
        return False


def _describe(path: str) -> str:
    resolved = Path(path).resolve()
    return path if Path(path).absolute() == resolved else f"{path} -> {resolved}"


def _sibling(target: str) -> str:
    """A suggested output name next to ``target``: ``in.jsonl`` -> ``in.out.jsonl``."""
    file = Path(target)
    suffixes = "".join(file.suffixes)
    stem = file.name[: len(file.name) - len(suffixes)] if suffixes else file.name
    return str(file.with_name(f"{stem}.out{suffixes}"))


def _run(job: BatchJob, factory: SettingsPipelineFactory, show_progress: bool) -> BatchReport:
    progress = progress_bar("compressing", disable=not show_progress)
    with progress:
        task = progress.add_task("batch", total=None)
        return run_job(
            job,
            factory,
            on_total=(lambda n: progress.update(task, total=n)) if show_progress else None,
            on_progress=lambda n: progress.advance(task, n),
        )
