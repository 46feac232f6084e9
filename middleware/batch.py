"""Batch compression of JSONL records: parse, compress concurrently, write in input order.

Input records are ``{"id", "question"|"query" (optional), "docs": [{"text", "title"?, ...}]}``
or ``{"id", "text"}``. Each input line yields exactly one output line, in the same order, with
the same ``id`` and every other field passed through, plus ``docs`` (compressed text, original
title and metadata, kept ``spans``), ``context``, ``stats`` and ``error``. A bad line becomes
an output line whose ``error`` says what is wrong and where; the run goes on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio

from ragpress.exceptions import RagpressError, RequestValidationError
from ragpress.middleware.pipeline import CompressRequest
from ragpress.types import CompressionOptions, Passage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator

    from ragpress.middleware.pipeline import Pipeline
    from ragpress.types import CompressionResult

__all__ = [
    "BatchItem",
    "BatchReport",
    "NumberedRecord",
    "RawRecord",
    "ResumeSet",
    "error_record",
    "item_from_record",
    "load_record",
    "micro_batches",
    "output_record",
    "parse_record",
    "process_batch",
    "record_key",
    "run_batch",
]

RawRecord: TypeAlias = "bytes | dict[str, Any]"
"""One input record: a JSONL line as read, or a row already decoded (Parquet)."""
NumberedRecord: TypeAlias = "tuple[int, RawRecord]"
"""``(position, record)``: the 1-based line of a JSONL file or row of a Parquet file."""

_RESERVED = ("docs", "text", "context", "stats", "error")


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One parsed input record."""

    line: int
    """1-based line number in the input."""
    record: dict[str, Any]
    query: str | None
    passages: tuple[Passage, ...]
    docs: tuple[dict[str, Any], ...]
    """The input documents as given (for passthrough of title and metadata)."""


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


def record_key(record: dict[str, Any] | None, line: int) -> str:
    """The identity ``--resume`` uses: the record's id, or its line number when it has none."""
    if record is not None and record.get("id") is not None:
        return f"id:{record['id']}"
    return f"line:{line}"


def parse_record(line: int, raw: bytes | str) -> BatchItem:
    """Parse and validate one JSONL line.

    Raises:
        RequestValidationError: The line is not UTF-8, not JSON, or not a valid record; the
            message names the line and the field.
    """
    return item_from_record(line, load_record(line, raw))


def load_record(line: int, raw: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """Decode one JSONL line into a JSON object (a row already decoded is returned as is).

    Raises:
        RequestValidationError: Not UTF-8, not JSON, or not an object; the message names the
            line.
    """
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestValidationError(
                f"line {line}: not valid UTF-8 (byte {exc.start}: {exc.reason}); re-encode the "
                "file as UTF-8",
                param=f"line {line}",
            ) from None
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            f"line {line}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
            'one JSON object such as {"id": "1", "question": "...", "docs": [{"text": "..."}]}',
            param=f"line {line}",
        ) from None
    if not isinstance(record, dict):
        raise RequestValidationError(
            f"line {line}: expected a JSON object, got {type(record).__name__}",
            param=f"line {line}",
        )
    return record


def item_from_record(line: int, record: dict[str, Any]) -> BatchItem:
    """Validate a decoded record and turn its documents into passages.

    Raises:
        RequestValidationError: A field is missing or has the wrong type; the message names it.
    """
    query = record.get("question", record.get("query"))
    if query is not None and not isinstance(query, str):
        field = "question" if "question" in record else "query"
        raise RequestValidationError(
            f"{field} must be a string, not {type(query).__name__}", param=field
        )
    docs = _documents(record)
    passages = tuple(
        Passage(
            d["text"],
            title=d.get("title") if isinstance(d.get("title"), str) else None,
            id=None if d.get("id") is None else str(d["id"]),
            metadata={k: v for k, v in d.items() if k not in ("text", "title", "id")},
        )
        for d in docs
    )
    if not any(p.text.strip() for p in passages):
        field = "text" if "docs" not in record else "docs"
        raise RequestValidationError(
            f"{field}: every document is empty or whitespace, so there is nothing to compress; "
            "give at least one document with text",
            param=field,
        )
    return BatchItem(line=line, record=record, query=query, passages=passages, docs=tuple(docs))


def _documents(record: dict[str, Any]) -> list[dict[str, Any]]:
    if "docs" in record:
        docs = record["docs"]
        if not isinstance(docs, list) or not docs:
            raise RequestValidationError(
                'docs must be a non-empty list of objects like {"text": "...", "title": "..."}',
                param="docs",
            )
        for i, doc in enumerate(docs):
            if isinstance(doc, str):
                raise RequestValidationError(
                    f'docs[{i}] is a string; wrap it as {{"text": ...}}', param=f"docs[{i}]"
                )
            if not isinstance(doc, dict):
                raise RequestValidationError(
                    f"docs[{i}] must be an object with a text field", param=f"docs[{i}]"
                )
            if not isinstance(doc.get("text"), str):
                raise RequestValidationError(
                    f"docs[{i}].text is {'missing' if 'text' not in doc else 'not a string'}; "
                    "every document needs its text as a string",
                    param=f"docs[{i}].text",
                )
        return docs
    if isinstance(record.get("text"), str):
        return [{"text": record["text"]}]
    raise RequestValidationError(
        'the record has neither "docs" nor "text"; give "docs": [{"text": "..."}] or "text": "..."',
        param="docs",
    )


def output_record(item: BatchItem, result: CompressionResult, ms: float) -> dict[str, Any]:
    """The output line for a successfully compressed record."""
    out = {k: v for k, v in item.record.items() if k not in _RESERVED}
    if out.get("id") is None:
        out["line"] = item.line  # lets --resume recognise records that have no id
    out["docs"] = [
        {
            **{k: v for k, v in doc.items() if k != "text"},
            "text": cp.text,
            "spans": None if cp.spans is None else [list(s) for s in cp.spans],
        }
        for doc, cp in zip(item.docs, result.passages, strict=True)
    ]
    out["context"] = result.context()
    stats: dict[str, Any] = {
        "tokens_before": result.tokens_before,
        "tokens_after": result.tokens_after,
        "ratio": round(result.ratio, 3) if result.tokens_after else None,
        "ms": round(ms, 1),
        "cache_hits": result.cache_hits,
        "method": result.method,
    }
    if result.notes:
        stats["notes"] = list(result.notes)
    out["stats"] = stats
    out["error"] = None
    return out


def error_record(
    line: int, raw: RawRecord | str | None, record: dict[str, Any] | None, error: str
) -> dict[str, Any]:
    """The output line for a record that failed: everything it had is kept, plus the error."""
    if record is not None:
        out = {k: v for k, v in record.items() if k not in ("context", "stats", "error")}
        out.setdefault("id", None)
    else:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        out = {"id": None, "line": line, "raw": text if isinstance(text, str) else None}
    out["context"] = None
    out["stats"] = None
    out["error"] = error
    return out


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
    results: list[CompressionResult | Exception]
    if len(pending) == 1:
        item = pending[0][1]
        try:
            results = [await pipeline.acompress(item.query, item.passages, options)]
        except Exception as exc:  # noqa: BLE001 - per-record boundary, the error is recorded
            results = [exc]
    elif pending:
        results = await pipeline.acompress_many(
            [CompressRequest(item.query, item.passages, options) for _, item in pending]
        )
    else:
        results = []
    ms = (time.perf_counter() - started) * 1e3 / len(batch)
    for (index, item), result in zip(pending, results, strict=True):
        if isinstance(result, RagpressError):
            out[index] = error_record(item.line, None, item.record, str(result))
        elif isinstance(result, Exception):
            message = f"internal error: {type(result).__name__}: {result}"
            out[index] = error_record(item.line, None, item.record, message)
        else:
            report.tokens_before += result.tokens_before
            report.tokens_after += result.tokens_after
            report.cache_hits += result.cache_hits
            report.cache_misses += result.cache_misses
            out[index] = output_record(item, result, ms)
    records = [record for record in out if record is not None]
    report.records += len(records)
    report.errors += sum(record["error"] is not None for record in records)
    return records


def _quick_key(raw: RawRecord, line: int) -> str:
    if isinstance(raw, dict):
        return record_key(raw, line)
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return record_key(None, line)
    return record_key(record if isinstance(record, dict) else None, line)


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
