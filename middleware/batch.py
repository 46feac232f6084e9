"""Batch compression of JSONL records: parse, compress concurrently, write in input order.

Input records are ``{"id", "question"|"query" (optional), "docs": [{"text", "title"?, ...}]}``
or ``{"id", "text"}``. Each input line yields exactly one output line, in the same order, with
the same ``id`` and every other field passed through, plus ``docs`` (compressed text, original
title and metadata, kept ``spans``), ``context``, ``stats`` and ``error``. A bad line becomes
an output line whose ``error`` says what is wrong and where; the run goes on.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ragpress.exceptions import RagpressError, RequestValidationError
from ragpress.types import CompressionOptions, Passage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

    from ragpress.middleware.pipeline import Pipeline
    from ragpress.types import CompressionResult

__all__ = [
    "BatchItem",
    "BatchReport",
    "error_record",
    "item_from_record",
    "load_record",
    "output_record",
    "parse_record",
    "record_key",
    "run_batch",
]

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


def load_record(line: int, raw: bytes | str) -> dict[str, Any]:
    """Decode one JSONL line into a JSON object.

    Raises:
        RequestValidationError: Not UTF-8, not JSON, or not an object; the message names the
            line.
    """
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
    line: int, raw: bytes | str | None, record: dict[str, Any] | None, error: str
) -> dict[str, Any]:
    """The output line for a record that failed: everything it had is kept, plus the error."""
    if record is not None:
        out = {k: v for k, v in record.items() if k not in ("context", "stats", "error")}
        out.setdefault("id", None)
    else:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        out = {"id": None, "line": line, "raw": text}
    out["context"] = None
    out["stats"] = None
    out["error"] = error
    return out


async def run_batch(
    lines: Iterable[tuple[int, bytes]],
    pipeline: Pipeline,
    write: Callable[[dict[str, Any]], None],
    *,
    options: CompressionOptions | None = None,
    workers: int = 4,
    skip: Callable[[str], bool] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BatchReport:
    """Compress every record, writing one output record per input line, in input order.

    At most ``2 * workers`` records are held at once, so memory stays flat on any input size.

    Args:
        lines: ``(line number, raw bytes)`` pairs, read lazily.
        pipeline: Does the compression.
        write: Receives each output record, in input order.
        options: Budget for every record (unset fields use the pipeline's defaults).
        workers: Records compressed concurrently.
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

    async def work(slot: _Slot, line: int, raw: bytes) -> None:
        try:
            async with compute:
                slot.record = await _process_one(line, raw, pipeline, options, report)
        finally:
            slot.done.set()

    async def write_in_order() -> None:
        async with receive:
            async for slot in receive:
                await slot.done.wait()
                if slot.record is not None:
                    write(slot.record)
                if on_progress is not None:
                    on_progress(1)

    async with anyio.create_task_group() as group:
        group.start_soon(write_in_order)
        async with send:
            async for line, raw in _read_ahead(lines):
                if skip is not None and skip(_quick_key(raw, line)):
                    report.skipped += 1
                    if on_progress is not None:
                        on_progress(1)
                    continue
                slot = _Slot()
                await send.send(slot)
                group.start_soon(work, slot, line, raw)
    report.seconds = time.perf_counter() - started
    return report


class _Slot:
    __slots__ = ("done", "record")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.record: dict[str, Any] | None = None


async def _process_one(
    line: int,
    raw: bytes,
    pipeline: Pipeline,
    options: CompressionOptions | None,
    report: BatchReport,
) -> dict[str, Any]:
    record: dict[str, Any] | None = None
    started = time.perf_counter()
    try:
        record = load_record(line, raw)
        item = item_from_record(line, record)
        result = await pipeline.acompress(item.query, item.passages, options)
    except RagpressError as exc:
        report.records += 1
        report.errors += 1
        return error_record(line, raw, record, str(exc))
    except Exception as exc:  # noqa: BLE001 - per-record boundary, the error is recorded
        report.records += 1
        report.errors += 1
        return error_record(line, raw, record, f"internal error: {type(exc).__name__}: {exc}")
    ms = (time.perf_counter() - started) * 1e3
    report.records += 1
    report.tokens_before += result.tokens_before
    report.tokens_after += result.tokens_after
    report.cache_hits += result.cache_hits
    report.cache_misses += result.cache_misses
    return output_record(item, result, ms)


def _quick_key(raw: bytes, line: int) -> str:
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return record_key(None, line)
    return record_key(record if isinstance(record, dict) else None, line)


async def _read_ahead(
    lines: Iterable[tuple[int, bytes]], chunk: int = 64
) -> AsyncIterator[tuple[int, bytes]]:
    """Iterate ``lines`` with the (possibly blocking) reads done off the event loop."""
    iterator = iter(lines)
    while True:
        block = await anyio.to_thread.run_sync(lambda: list(itertools.islice(iterator, chunk)))
        if not block:
            return
        for item in block:
            yield item
