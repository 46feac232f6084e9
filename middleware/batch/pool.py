"""Batch compression on several worker processes of one machine.

The parent reads the input and groups it into micro-batches; each worker process holds one
pipeline (its model loaded once, when the worker starts) and compresses whole micro-batches;
the parent writes their output in input order. At most ``2 * workers`` micro-batches are in
flight, so memory stays flat. Workers ignore Ctrl-C: the parent stops them and leaves the
output resumable.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import anyio.from_thread

from ragpress.exceptions import WorkerFailedError
from ragpress.middleware.batch.runner import BatchReport, micro_batches, process_batch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from anyio.from_thread import BlockingPortal

    from ragpress.middleware.batch.records import NumberedRecord
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import CompressionOptions

__all__ = ["PipelineFactory", "WorkerFailedError", "run_processes", "threads_per_worker"]


class PipelineFactory(Protocol):
    """Builds the pipeline a worker uses; picklable, so it can travel to worker processes.

    ``device`` overrides the model device (a GPU actor passes ``"cuda"``).
    """

    def __call__(self, *, device: str | None = None) -> Pipeline:
        """A new pipeline, its model on ``device`` when given."""
        ...


def threads_per_worker(workers: int) -> int:
    """Compute threads each worker may use so that ``workers`` of them share the cores."""
    return max(1, (os.cpu_count() or 1) // workers)


@dataclass
class _Worker:
    portal_cm: Any
    portal: BlockingPortal
    pipeline: Pipeline | None
    options: CompressionOptions | None
    error: BaseException | None


_worker: _Worker | None = None


def _start_worker(
    factory: PipelineFactory, options: CompressionOptions | None, threads: int
) -> None:
    """Process initializer: load the pipeline once; keep a start-up error for the first task."""
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    portal_cm = anyio.from_thread.start_blocking_portal()
    portal = portal_cm.__enter__()
    pipeline: Pipeline | None = None
    error: BaseException | None = None
    try:
        pipeline = factory()
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    except Exception as exc:  # noqa: BLE001 - reported by the first task, in the parent
        error = exc
    _worker = _Worker(portal_cm, portal, pipeline, options, error)


def _exit_with_parent(parent: int, every_seconds: float = 1.0) -> None:
    """A parent killed with SIGKILL cannot stop its workers: they notice and exit."""
    while os.getppid() == parent:
        time.sleep(every_seconds)
    os._exit(1)


def _compress(batch: list[NumberedRecord]) -> tuple[list[dict[str, Any]], BatchReport]:
    """Task: one micro-batch, in a worker."""
    assert _worker is not None
    if _worker.error is not None:
        raise _worker.error
    assert _worker.pipeline is not None
    report = BatchReport()
    records = _worker.portal.call(process_batch, batch, _worker.pipeline, _worker.options, report)
    return records, report


def run_processes(
    lines: Iterable[NumberedRecord],
    factory: PipelineFactory,
    write: Callable[[dict[str, Any]], None],
    *,
    options: CompressionOptions | None = None,
    workers: int = 2,
    batch_size: int = 16,
    skip: Callable[[str], bool] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Compress every record on ``workers`` processes, writing output in input order.

    Args:
        lines: ``(position, raw record)`` pairs, read lazily.
        factory: Builds each worker's pipeline (called once per worker).
        write: Receives each output record, in input order.
        options: Budget for every record.
        workers: Worker processes.
        batch_size: Records per micro-batch.
        skip: Returns true for record keys already done (``--resume``).
        on_progress: Called with the number of records finished since the last call.

    Returns:
        Totals for the run.

    Raises:
        WorkerFailedError: A worker died; what was written is complete and resumable.
        RagpressError: The pipeline could not be built in a worker (bad settings).
    """
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    report = BatchReport()
    started = time.perf_counter()

    def skipped() -> None:
        report.skipped += 1
        if on_progress is not None:
            on_progress(1)

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),  # fork and torch threads do not mix
        initializer=_start_worker,
        initargs=(factory, options, threads_per_worker(workers)),
    )
    pending: deque[Future[tuple[list[dict[str, Any]], BatchReport]]] = deque()

    def drain_one() -> None:
        try:
            records, part = pending.popleft().result()
        except BrokenProcessPool as exc:
            raise WorkerFailedError(
                "a worker process died (killed, or out of memory?); every record written "
                "so far is complete: rerun with --resume to continue"
            ) from exc
        for record in records:
            write(record)
        report.merge(part)
        if on_progress is not None and records:
            on_progress(len(records))

    try:
        for batch in micro_batches(lines, batch_size, skip=skip, on_skip=skipped):
            pending.append(pool.submit(_compress, batch))
            while len(pending) >= 2 * workers:
                drain_one()
        while pending:
            drain_one()
    except BaseException:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    report.seconds = time.perf_counter() - started
    return report
