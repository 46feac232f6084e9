"""Run a batch: parse, compress micro-batches concurrently, write in input order, resume.

See :mod:`ragpress.middleware.batch.records` for the record format. One bad record becomes an
output record whose ``error`` says what is wrong and where; the run goes on.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import anyio

from ragpress.exceptions import RagpressError
from ragpress.middleware.batch.records import (
    BatchItem,
    error_record,
    item_from_record,
    load_record,
    output_record,
    record_key,
)
from ragpress.middleware.pipeline.core import PipelineRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator

    from ragpress.middleware.batch.records import NumberedRecord, RawRecord
    from ragpress.middleware.pipeline.core import Pipeline
    from ragpress.types import CompressionOptions

__all__ = [
    "BatchReport",
    "ResumeSet",
    "micro_batches",
    "process_batch",
    "run_batch",
]


@dataclass
class BatchReport:
    """Totals of a batch run."""

    records: int = 0
    errors: int = 0
    skipped: int = 0
    """Records already present in the output (``--resume``)."""
    tokens_before: int = 0
    tokens_after: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        """Tokens before / after over the successful records."""
        return self.tokens_before / self.tokens_after if self.tokens_after else 0.0

    @property
    def records_per_second(self) -> float:
        """Throughput."""
        return self.records / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        """Input tokens compressed per second of wall time."""
        return self.tokens_before / self.seconds if self.seconds else 0.0

    def merge(self, other: BatchReport) -> None:
        """Add the counts of ``other`` (a worker's share of the run); ``seconds`` is kept."""
        for f in fields(self):
            if f.name != "seconds":
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary."""
        return {
            "records": self.records,
            "errors": self.errors,
            "skipped": self.skipped,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "ratio": round(self.ratio, 3),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 2),
            "tokens_per_second": round(self.tokens_per_second, 1),
        }


class ResumeSet:
    """Record keys already in the output, each usable once: what ``--resume`` skips.

    Keys are counted, so an input that repeats an id skips only as many of its records as the
    output already holds.
    """

    def __init__(self, keys: Counter[str] | Iterable[str] = ()) -> None:
        self._counts = keys if isinstance(keys, Counter) else Counter(keys)
        self.total = sum(self._counts.values())

    def __call__(self, key: str) -> bool:
        """True (and the key is used up) when a record with this key is already done."""
        if self._counts[key] > 0:
            self._counts[key] -= 1
            return True
        return False

    def __bool__(self) -> bool:
        return self.total > 0


def micro_batches(
    lines: Iterable[NumberedRecord],
    batch_size: int,
    *,
    skip: Callable[[str], bool] | None = None,
    on_skip: Callable[[], None] | None = None,
) -> Iterator[list[NumberedRecord]]:
    """Group records into micro-batches aligned on their ordinal in the input.

    Record ``k`` (0-based, skipped records included) always lands in batch ``k // batch_size``,
    so a resumed run and every engine see the same batches, and so the same model batches.

    Args:
        lines: The input records.
        batch_size: Records per batch.
        skip: True for the :func:`record_key` of a record already done (``--resume``).
        on_skip: Called once per skipped record.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    batch: list[NumberedRecord] = []
    current = 0
    for ordinal, (line, raw) in enumerate(lines):
        if ordinal // batch_size != current:
            if batch:
                yield batch
            batch = []
            current = ordinal // batch_size
        if skip is not None and skip(_quick_key(raw, line)):
            if on_skip is not None:
                on_skip()
            continue
        batch.append((line, raw))
    if batch:
        yield batch


async def run_batch(
    lines: Iterable[NumberedRecord],
    pipeline: Pipeline,
    write: Callable[[dict[str, Any]], None],
    *,
    options: CompressionOptions | None = None,
    workers: int = 4,
    batch_size: int = 1,
    skip: Callable[[str], bool] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Compress every record, writing one output record per input line, in input order.

    Records are compressed in micro-batches of ``batch_size`` (one model pass over all their
    passages, see :meth:`Pipeline.acompress_many`). At most ``2 * workers`` batches are held at
    once, so memory stays flat on any input size.

    Args:
        lines: ``(position, raw record)`` pairs, read lazily.
        pipeline: Does the compression.
        write: Receives each output record, in input order.
        options: Budget for every record (unset fields use the pipeline's defaults).
        workers: Micro-batches compressed concurrently in this process.
        batch_size: Records per micro-batch.
        skip: Returns true for :func:`record_key` values already done (``--resume``).
        on_progress: Called with the number of records finished since the last call.

    Returns:
        Totals for the run.
    """
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1")
    report = BatchReport()
    started = time.perf_counter()
    compute = anyio.Semaphore(workers)
    # Finished-or-not slots in input order; the bounded buffer is what keeps memory flat.
    send, receive = anyio.create_memory_object_stream[_Slot](max_buffer_size=2 * workers)

    def skipped() -> None:
        report.skipped += 1
        if on_progress is not None:
            on_progress(1)

    async def work(slot: _Slot, batch: list[NumberedRecord]) -> None:
        try:
            async with compute:
                slot.records = await process_batch(batch, pipeline, options, report)
        finally:
            slot.done.set()

    async def write_in_order() -> None:
        async with receive:
            async for slot in receive:
                await slot.done.wait()
                for record in slot.records:
                    write(record)
                if on_progress is not None and slot.records:
                    on_progress(len(slot.records))

    async with anyio.create_task_group() as group:
        group.start_soon(write_in_order)
        async with send:
            async for batch in _read_ahead(
                micro_batches(lines, batch_size, skip=skip, on_skip=skipped)
            ):
                slot = _Slot()
                await send.send(slot)
                group.start_soon(work, slot, batch)
    report.seconds = time.perf_counter() - started
    return report


class _Slot:
    __slots__ = ("done", "records")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.records: list[dict[str, Any]] = []


async def process_batch(
    batch: list[NumberedRecord],
    pipeline: Pipeline,
    options: CompressionOptions | None,
    report: BatchReport,
) -> list[dict[str, Any]]:
    """Parse, compress and format one micro-batch; every record gets its output record.

    Args:
        batch: The records, in input order.
        pipeline: Does the compression.
        options: Budget for every record.
        report: Updated with this batch's counts.

    Returns:
        One output record per input record, in order; bad records carry their ``error``.
    """
    started = time.perf_counter()
    out: list[dict[str, Any] | None] = [None] * len(batch)
    pending: list[tuple[int, BatchItem]] = []
    for index, (line, raw) in enumerate(batch):
        record: dict[str, Any] | None = None
        try:
            record = load_record(line, raw)
            pending.append((index, item_from_record(line, record)))
        except RagpressError as exc:
            out[index] = error_record(line, raw, record, str(exc))
        except Exception as exc:  # noqa: BLE001 - one odd line never stops the run
            message = f"line {line}: internal error: {type(exc).__name__}: {exc}"
            out[index] = error_record(line, raw, record, message)
    results = (
        await pipeline.acompress_many(
            [PipelineRequest(item.query, item.passages, options) for _, item in pending]
        )
        if pending
        else []
    )
    ms = (time.perf_counter() - started) * 1e3 / len(batch)
    for (index, item), result in zip(pending, results, strict=True):
        if isinstance(result, RagpressError):
            out[index] = error_record(item.line, None, item.record, str(result))
        elif isinstance(result, Exception):
            message = f"internal error: {type(result).__name__}: {result}"
            out[index] = error_record(item.line, None, item.record, message)
        else:
            try:
                out[index] = output_record(item, result, ms)
            except Exception as exc:  # noqa: BLE001 - one odd record never stops the run
                message = f"internal error: {type(exc).__name__}: {exc}"
                out[index] = error_record(item.line, None, item.record, message)
                continue
            report.tokens_before += result.tokens_before
            report.tokens_after += result.tokens_after
            report.cache_hits += result.cache_hits
            report.cache_misses += result.cache_misses
    records = [record for record in out if record is not None]
    report.records += len(records)
    report.errors += sum(record["error"] is not None for record in records)
    return records


def _quick_key(raw: RawRecord, line: int) -> str:
    """The key the output of this line has: decoded exactly as :func:`process_batch` does."""
    try:
        record = load_record(line, raw)
    except Exception:  # noqa: BLE001 - an unreadable line is keyed by its position, as output
        return record_key(None, line)
    return record_key(record, line)


async def _read_ahead(
    batches: Iterator[list[NumberedRecord]], records: int = 64
) -> AsyncIterator[list[NumberedRecord]]:
    """Iterate ``batches`` with the (possibly blocking) reads done off the event loop.

    Each hop to the reading thread fetches batches until they hold ``records`` records.
    """

    def fetch() -> list[list[NumberedRecord]]:
        block: list[list[NumberedRecord]] = []
        count = 0
        for batch in batches:
            block.append(batch)
            count += len(batch)
            if count >= records:
                break
        return block

    while True:
        block = await anyio.to_thread.run_sync(fetch)
        if not block:
            return
        for batch in block:
            yield batch
