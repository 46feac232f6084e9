"""``ragpress batch``: compress a JSONL corpus record by record."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click

from ragpress.commands._common import (
    budget_options,
    fail,
    load_settings,
    options_from,
    pipeline_options,
    quiet_third_party,
)
from ragpress.exceptions import RagpressError
from ragpress.middleware.batch import BatchReport, run_batch
from ragpress.middleware.batch_io import JsonlWriter, completed_keys, count_lines, iter_lines
from ragpress.middleware.wiring import build_pipeline

if TYPE_CHECKING:
    from ragpress.middleware.pipeline import Pipeline
    from ragpress.types import CompressionOptions


@click.command()
@click.argument("source", metavar="IN")
@click.argument("target", metavar="OUT")
@pipeline_options
@budget_options
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Records compressed concurrently.",
)
@click.option("--resume", is_flag=True, help="Skip records whose id is already in OUT; append.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
def batch(
    source: str,
    target: str,
    method: str | None,
    model: str | None,
    params: tuple[str, ...],
    cache: str | None,
    max_document_chars: int | None,
    env_file: str | None,
    verbose: bool,
    target_ratio: float | None,
    rate: float | None,
    target_tokens: int | None,
    keep: tuple[str, ...],
    workers: int,
    resume: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Compress every record of IN (JSONL or JSONL.gz, - for stdin) into OUT.

    \b
    Input lines are records such as
      {"id": "q1", "question": "...", "docs": [{"title": "...", "text": "..."}]}
      {"id": "d7", "text": "..."}
    Every input line gives one output line, in order, with the same id and fields,
    plus "docs" (compressed text, title and metadata kept, "spans" of the original),
    "context", "stats" and "error" (null, or what was wrong with that record).

    \b
    Examples:
      ragpress batch nq.jsonl.gz out.jsonl --target-ratio 3
      ragpress batch big.jsonl out.jsonl --cache redis://127.0.0.1:6379/0 --resume

    Exit status: 0 when every record compressed, 1 when some records have errors.
    """
    if source != "-" and not Path(source).is_file():
        raise click.BadParameter(f"{source!r} is not a file", param_hint="IN")
    out_exists = target != "-" and Path(target).exists() and Path(target).stat().st_size > 0
    if out_exists and not (resume or overwrite):
        raise click.UsageError(
            f"{target} already exists; pass --resume to continue it or --overwrite to replace it"
        )
    options = options_from(target_ratio, rate, target_tokens, keep)
    settings = load_settings(
        env_file=env_file,
        method=method,
        cache=cache,
        max_document_chars=max_document_chars,
        verbose=verbose,
        model=model,
        params=params,
    )
    quiet_third_party()
    try:
        pipeline = build_pipeline(settings)
    except RagpressError as exc:
        fail(exc)
    done = completed_keys(target) if resume and target != "-" else set()
    writer = JsonlWriter(target, append=resume)
    show_progress = not quiet and sys.stderr.isatty()
    try:
        report = _run(pipeline, source, writer, options, workers, done, show_progress)
    finally:
        writer.close()
    if not quiet:
        summary = report.as_dict()
        if pipeline.cache is not None:
            summary["cache_errors"] = pipeline.cache.counters.errors
        click.echo(json.dumps(summary), err=True)
    if report.errors:
        sys.exit(1)


def _run(
    pipeline: Pipeline,
    source: str,
    writer: JsonlWriter,
    options: CompressionOptions,
    workers: int,
    done: set[str],
    show_progress: bool,
) -> BatchReport:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]compressing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not show_progress,
    )

    async def go() -> BatchReport:
        try:
            return await run_batch(
                iter_lines(source),
                pipeline,
                writer.write,
                options=options,
                workers=workers,
                skip=(lambda key: key in done) if done else None,
                on_progress=lambda n: progress.advance(task, n),
            )
        finally:
            await pipeline.aclose()

    with progress:
        task = progress.add_task("batch", total=count_lines(source) if show_progress else None)
        return anyio.run(go)
