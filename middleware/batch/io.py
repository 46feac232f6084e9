"""Batch files by format: JSONL, gzip-compressed JSONL or Parquet, files or streams.

Everything streams: readers yield one record at a time and writers hold at most one checkpoint's
worth of records, so memory does not grow with the corpus. Crash safety (``--resume``) comes
from checkpoints that are atomic on disk; each format says how
(:mod:`ragpress.middleware.batch.jsonl`, :mod:`ragpress.middleware.batch.parquet`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ragpress.middleware.batch.jsonl import (
    DEFAULT_CHECKPOINT_RECORDS,
    DEFAULT_CHECKPOINT_SECONDS,
    JsonlSource,
    JsonlWriter,
    jsonl_completed_keys,
)

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterator

    from ragpress.middleware.batch.records import NumberedRecord

__all__ = [
    "RecordSink",
    "RecordSource",
    "completed_keys",
    "is_parquet",
    "open_sink",
    "open_source",
]

_PARQUET_MAGIC = b"PAR1"


class RecordSource(Protocol):
    """Where the input records come from."""

    path: str

    def records(self) -> Iterator[NumberedRecord]:
        """``(position, raw record)`` for every record, in order."""
        ...

    def count(self) -> int | None:
        """Number of records (for a progress total), or ``None`` when unknown."""
        ...


class RecordSink(Protocol):
    """Where the output records go, in input order."""

    def write(self, record: dict[str, Any]) -> None:
        """Append one output record."""
        ...

    def close(self) -> None:
        """Finish the output (the run is complete)."""
        ...

    def suspend(self) -> None:
        """Stop writing but keep what is written resumable (the run was interrupted)."""
        ...


def is_parquet(path: str) -> bool:
    """Whether ``path`` is a Parquet file (by content when it exists, else by its name)."""
    if path == "-":
        return False
    file = Path(path)
    if file.is_file() and file.stat().st_size >= 4:
        with file.open("rb") as handle:
            return handle.read(4) == _PARQUET_MAGIC
    return file.suffix == ".parquet"


def open_source(path: str) -> RecordSource:
    """A reader for JSONL, JSONL.gz (detected from the content) or Parquet; ``-`` is stdin."""
    if is_parquet(path):
        from ragpress.middleware.batch.parquet import ParquetSource

        return ParquetSource(path)
    return JsonlSource(path)


def open_sink(
    path: str,
    *,
    append: bool = False,
    source: RecordSource | None = None,
    checkpoint_records: int = DEFAULT_CHECKPOINT_RECORDS,
    checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
) -> RecordSink:
    """A writer chosen by the output name: ``.parquet``, ``.gz`` (JSONL.gz), else JSONL.

    Args:
        path: Output file, or ``-`` for stdout (JSONL).
        append: Continue an interrupted output (``--resume``) instead of starting it anew.
        source: The input; a Parquet input lends its column types to a Parquet output.
        checkpoint_records: Records between two checkpoints.
        checkpoint_seconds: Longest time between two checkpoints.
    """
    if path != "-" and Path(path).suffix == ".parquet":
        from ragpress.middleware.batch.parquet import ParquetSink

        return ParquetSink(
            path,
            append=append,
            input_schema=getattr(source, "schema", None),
            rows_per_part=checkpoint_records,
        )
    return JsonlWriter(
        path,
        append=append,
        checkpoint_records=checkpoint_records,
        checkpoint_seconds=checkpoint_seconds,
    )


def completed_keys(path: str) -> Counter[str]:
    """Record keys already written to an output file, for ``--resume``.

    Whatever a crash left unfinished at the end of the file (a cut line, an unfinished gzip
    member, an unfinished Parquet part) is removed first, so the resumed run writes those
    records again, whole.

    Returns:
        How many times each :func:`~ragpress.middleware.batch.runner.record_key` occurs.
    """
    if path != "-" and Path(path).suffix == ".parquet":
        from ragpress.middleware.batch.parquet import parquet_completed_keys

        return parquet_completed_keys(path)
    return jsonl_completed_keys(path)
