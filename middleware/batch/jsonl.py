"""JSONL and gzip-compressed JSONL batch files: streaming reader, checkpointed writer, resume.

* **JSONL**: every record is one line, flushed as it is written; a line cut short by a crash is
  cut off on resume. Every checkpoint the file is also ``fsync``-ed.
* **JSONL.gz**: records go into gzip *members* of at most one checkpoint each. A member that
  was not finished (a crash) fails its CRC check and is cut off on resume with everything after
  it; the members before it are complete gzip streams.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import gzip
import io
import json
import math
import os
import sys
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from ragpress.middleware.batch.records import record_key, record_position

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ragpress.middleware.batch.records import NumberedRecord

__all__ = [
    "DEFAULT_CHECKPOINT_RECORDS",
    "DEFAULT_CHECKPOINT_SECONDS",
    "GZIP_MAGIC",
    "JsonlSource",
    "JsonlWriter",
    "count_lines",
    "iter_lines",
    "json_line",
    "jsonl_completed_keys",
]

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_CHECKPOINT_RECORDS = 1000
"""Records between two checkpoints (an fsync, a finished gzip member, a Parquet part)."""
DEFAULT_CHECKPOINT_SECONDS = 5.0
"""Longest time between two checkpoints."""


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` for every non-blank line of a JSONL or JSONL.gz file.

    Args:
        path: File path (gzip detected from its content, not its name) or ``-`` for stdin.
    """
    if path == "-":
        yield from _numbered_lines(sys.stdin.buffer)
        return
    with Path(path).open("rb") as handle:
        if handle.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=handle) as unzipped:
                yield from _numbered_lines(cast("IO[bytes]", unzipped))
        else:
            yield from _numbered_lines(handle)


def _numbered_lines(handle: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(handle, start=1):
        line = raw.rstrip(b"\r\n")
        if line.strip():
            yield number, line


def count_lines(path: str) -> int | None:
    """Non-blank lines in a file (for a progress total); ``None`` for stdin."""
    if path == "-":
        return None
    return sum(1 for _ in iter_lines(path))


class JsonlSource:
    """JSONL or JSONL.gz input, one record per non-blank line."""

    def __init__(self, path: str) -> None:
        self.path = path

    def records(self) -> Iterator[NumberedRecord]:
        """``(line number, raw line)`` pairs."""
        return iter_lines(self.path)

    def count(self) -> int | None:
        """Non-blank lines (one pass over the file); ``None`` for stdin."""
        return count_lines(self.path)


def jsonl_completed_keys(path: str) -> Counter[str]:
    """:func:`~ragpress.middleware.batch.io.completed_keys` of a JSONL or JSONL.gz output."""
    file = Path(path)
    if not file.exists():
        return Counter()
    with file.open("rb") as handle:
        gzipped = handle.read(2) == GZIP_MAGIC
    keys, good_bytes = _keys_of_gzip(file) if gzipped else _keys_of_jsonl(file)
    if good_bytes < file.stat().st_size:
        with file.open("r+b") as handle:
            handle.truncate(good_bytes)
    return keys


def _keys_of_jsonl(file: Path) -> tuple[Counter[str], int]:
    keys: Counter[str] = Counter()
    good_bytes = 0
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break  # the line a crash cut short; it is written again
            keys[_output_key(raw, number)] += 1
            good_bytes += len(raw)
    return keys, good_bytes


def _output_key(raw: bytes, number: int) -> str:
    """The :func:`record_key` of one complete output line (the ``number``-th).

    A complete line that does not read as a record (written by something else) is kept and
    keyed by its position rather than cutting the file there.
    """
    try:
        record = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError included
        record = None
    position = record_position(record)
    return record_key(record if isinstance(record, dict) else None, position or number)


def _keys_of_gzip(file: Path, chunk: int = 1 << 20) -> tuple[Counter[str], int]:
    """Keys of the complete gzip members, and the byte offset where the last one ends."""
    keys: Counter[str] = Counter()
    good_bytes = consumed = 0
    number = 0
    member_keys: list[str] = []
    pending = b""
    decoder = zlib.decompressobj(wbits=31)
    with file.open("rb") as handle:
        data = handle.read(chunk)
        while data:
            consumed += len(data)
            text = pending + decoder.decompress(data)
            *lines, pending = text.split(b"\n")
            for raw in lines:
                number += 1
                member_keys.append(_output_key(raw, number))
            if decoder.eof:  # a member ended, its CRC and length checked
                if pending:
                    return keys, good_bytes  # a member must end at a line end
                keys.update(member_keys)
                member_keys = []
                good_bytes = consumed - len(decoder.unused_data)
                data = decoder.unused_data
                consumed -= len(data)
                decoder = zlib.decompressobj(wbits=31)
                if not data:
                    data = handle.read(chunk)
                continue
            data = handle.read(chunk)
    return keys, good_bytes


def _json_default(value: object) -> object:
    """JSON for the non-JSON values a Parquet row can hold."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line (without the newline): compact, strict JSON, always UTF-8 encodable.

    * NaN and infinities (a Parquet row can hold them; JSON cannot) are written as ``null``,
      and the record's ``error`` says which fields (the input keeps them).
    * Lone surrogates (``"\\ud800"`` in the input) cannot be UTF-8 encoded; a record holding
      any is written with ``\\uXXXX`` escapes instead, which reads back to the same string.
    """
    try:
        line = _dumps(record, ensure_ascii=False)
    except ValueError:  # out-of-range float values are not JSON compliant
        record = _without_non_finite(record)
        line = _dumps(record, ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            line = _dumps(record, ensure_ascii=True)
    return line


def _dumps(record: dict[str, Any], *, ensure_ascii: bool) -> str:
    return json.dumps(
        record,
        ensure_ascii=ensure_ascii,
        allow_nan=False,
        separators=(",", ":"),
        default=_json_default,
    )


def _without_non_finite(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with NaN and infinities as ``None``, and a note naming their fields."""
    found: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(path)
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    out: dict[str, Any] = clean(record, "")
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    note = (
        f"JSON output: {shown} held NaN or Infinity, which JSON cannot represent; written as "
        "null (the input keeps the values); write Parquet output to keep them"
    )
    previous = out.get("error")
    out["error"] = f"{previous}; {note}" if previous else note
    return out


class JsonlWriter:
    """Writes one JSON object per line; gzip when the path ends in ``.gz``; ``-`` is stdout.

    Args:
        path: Output file or ``-``.
        append: Continue the file instead of replacing it.
        checkpoint_records: Records per checkpoint (fsync; a finished gzip member).
        checkpoint_seconds: Longest time between checkpoints.
    """

    def __init__(
        self,
        path: str,
        *,
        append: bool = False,
        checkpoint_records: int = DEFAULT_CHECKPOINT_RECORDS,
        checkpoint_seconds: float = DEFAULT_CHECKPOINT_SECONDS,
    ) -> None:
        self.path = path
        self._checkpoint_records = max(1, checkpoint_records)
        self._checkpoint_seconds = checkpoint_seconds
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._raw: IO[bytes] | None = None
        self._member: IO[str] | None = None
        if path == "-":
            self._handle: IO[str] | None = sys.stdout
        elif path.endswith(".gz"):
            self._raw = Path(path).open("ab" if append else "wb")  # noqa: SIM115
            self._handle = None  # a gzip member is opened on the first write
        else:
            self._handle = Path(path).open("a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it, so a crash loses at most the line being written."""
        handle = self._handle
        if handle is None:
            assert self._raw is not None
            member = gzip.GzipFile(fileobj=self._raw, mode="wb")
            self._member = io.TextIOWrapper(member, encoding="utf-8")
            handle = self._handle = self._member
        handle.write(json_line(record) + "\n")
        if self._member is None:
            handle.flush()
        self._since_checkpoint += 1
        if (
            self._since_checkpoint >= self._checkpoint_records
            or time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
        ):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make everything written so far durable (and finish the current gzip member)."""
        if self._member is not None:
            self._member.close()  # finishes the member; the file itself stays open
            self._member = self._handle = None
        target = self._raw if self._raw is not None else self._handle
        if target is not None and target is not sys.stdout:
            target.flush()
            os.fsync(target.fileno())
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

    def close(self) -> None:
        """Checkpoint and close the file (not stdout)."""
        self.checkpoint()
        if self._raw is not None:
            self._raw.close()
        elif self._handle is not None and self._handle is not sys.stdout:
            self._handle.close()

    def suspend(self) -> None:
        """Same as :meth:`close`: everything written is complete and resumable."""
        self.close()
