"""A whole batch job: open the input and output, resume, pick the engine, run, finish the file.

Engines: ``local`` runs in this process (``workers=1``) or on worker processes
(:mod:`ragpress.middleware.batch.pool`); ``ray`` runs on Ray Data
(:mod:`ragpress.middleware.batch.ray`). All of them compress the same micro-batches with the
same code and write through the same writers, so they give the same output.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ragpress.middleware.batch.io import completed_keys, open_sink, open_source
from ragpress.middleware.batch.runner import BatchReport, ResumeSet, run_batch
from ragpress.middleware.pipeline.factory import build_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable

    from ragpress.config import RagpressSettings
    from ragpress.middleware.batch.pool import PipelineFactory
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import CompressionOptions

__all__ = ["DEFAULT_BATCH_SIZE", "BatchJob", "SettingsPipelineFactory", "run_job"]

DEFAULT_BATCH_SIZE = 16
"""Records per micro-batch: enough passages for a full model batch on most corpora."""


@dataclass(frozen=True)
class SettingsPipelineFactory:
    """Builds the pipeline that ``settings`` describe, in whichever process calls it."""

    settings: RagpressSettings

    def __call__(self, *, device: str | None = None) -> Pipeline:
        """A new pipeline; ``device`` overrides the embedder's device (GPU workers)."""
        settings = self.settings
        if device is not None:
            embedder = settings.embedder.model_copy(update={"device": device})
            settings = settings.model_copy(update={"embedder": embedder})
        return build_pipeline(settings)


@dataclass(frozen=True)
class BatchJob:
    """What to compress, where to, and how.

    Attributes:
        source: Input file (JSONL, JSONL.gz or Parquet) or ``-`` for stdin.
        target: Output file (``.parquet``, ``.gz`` or JSONL) or ``-`` for stdout.
        options: Budget for every record.
        engine: ``local`` or ``ray``.
        workers: Processes (local) or actors (ray); local ``1`` runs in this process.
        batch_size: Records per micro-batch.
        resume: Continue ``target`` instead of replacing it.
        concurrency: Micro-batches in flight in one process (overlaps cache I/O and compute).
        checkpoint_records: Records between two checkpoints of the output.
        ray_address: Ray cluster to join (``None``: ``RAY_ADDRESS`` or a local Ray).
        gpus_per_worker: GPUs per Ray actor (``None``: 1 when the cluster has GPUs).
    """

    source: str
    target: str
    options: CompressionOptions | None = None
    engine: Literal["local", "ray"] = "local"
    workers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    resume: bool = False
    concurrency: int = 2
    checkpoint_records: int = 1000
    ray_address: str | None = None
    gpus_per_worker: float | None = None


def run_job(
    job: BatchJob,
    factory: PipelineFactory,
    *,
    on_total: Callable[[int | None], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Run ``job`` to the end, or until it is interrupted, leaving the output resumable.

    Args:
        job: What to do.
        factory: Builds a pipeline (once per process or actor).
        on_total: Called once with the number of input records (``None`` when unknown); it
            costs a pass over a JSONL input, so it is only done when this is given.
        on_progress: Called with the number of records finished since the last call.

    Returns:
        Totals for the run.

    Raises:
        RagpressError: The pipeline cannot be built, or a worker died.
        KeyboardInterrupt: Ctrl-C; everything written is complete and ``--resume`` continues.
    """
    source = open_source(job.source)
    done = ResumeSet(completed_keys(job.target) if job.resume and job.target != "-" else ())
    if on_total is not None:
        on_total(source.count())
    sink = open_sink(
        job.target,
        append=job.resume,
        source=source,
        checkpoint_records=job.checkpoint_records,
    )
    skip = done if done else None
    shared: dict[str, Any] = {
        "options": job.options,
        "workers": job.workers,
        "batch_size": job.batch_size,
        "skip": skip,
        "on_progress": on_progress,
    }
    try:
        if job.engine == "ray":
            from ragpress.middleware.batch.ray import run_ray

            report = run_ray(
                source,
                factory,
                sink.write,
                skipped=done.total,
                address=job.ray_address,
                gpus_per_worker=job.gpus_per_worker,
                **shared,
            )
        elif job.workers > 1:
            from ragpress.middleware.batch.pool import run_processes

            report = run_processes(source.records(), factory, sink.write, **shared)
        else:
            report = anyio.run(
                functools.partial(_run_here, job, factory, source.records(), sink.write),
                skip,
                on_progress,
            )
    except BaseExceptionGroup as group:
        sink.suspend()
        # A task group wraps what one task raised; the caller wants that error itself
        # (a KeyboardInterrupt above all, which the CLI turns into a clean stop).
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    except BaseException:
        sink.suspend()
        raise
    sink.close()
    return report


async def _run_here(
    job: BatchJob,
    factory: PipelineFactory,
    lines: Any,
    write: Callable[[dict[str, Any]], None],
    skip: Callable[[str], bool] | None,
    on_progress: Callable[[int], None] | None,
) -> BatchReport:
    pipeline = factory()
    try:
        return await run_batch(
            lines,
            pipeline,
            write,
            options=job.options,
            workers=job.concurrency,
            batch_size=job.batch_size,
            skip=skip,
            on_progress=on_progress,
        )
    finally:
        await pipeline.aclose()
