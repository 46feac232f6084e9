"""Reading and writing batch files: JSONL or gzip-compressed JSONL, files or standard streams."""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from ragpress.middleware.batch import record_key

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["JsonlWriter", "completed_keys", "count_lines", "iter_lines"]

_GZIP_MAGIC = b"\x1f\x8b"


def _open_binary(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    handle = Path(path).open("rb")  # noqa: SIM115 - handed to the caller, closed by it
    if handle.peek(2)[:2] == _GZIP_MAGIC:
        return cast("IO[bytes]", gzip.GzipFile(fileobj=handle))
    return handle


def iter_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes)`` for every non-blank line of a JSONL or JSONL.gz file.

    Args:
        path: File path (gzip detected from its content, not its name) or ``-`` for stdin.
    """
    handle = _open_binary(path)
    try:
        for number, raw in enumerate(handle, start=1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()


def count_lines(path: str) -> int | None:
    """Non-blank lines in a file (for a progress total); ``None`` for stdin."""
    if path == "-":
        return None
    return sum(1 for _ in iter_lines(path))


def completed_keys(path: str) -> set[str]:
    """Record keys already written to an output file, for ``--resume``.

    A last line cut short by a crash is removed from the file first, so the resumed run
    writes that record again, whole.
    """
    file = Path(path)
    if not file.exists():
        return set()
    if file.suffix == ".gz":
        return _keys_of_gzip(file)
    keys: set[str] = set()
    good_bytes = 0
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.endswith(b"\n"):
                break
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                break
            keys.add(record_key(record, int(record.get("line") or number)))
            good_bytes += len(raw)
    if good_bytes < file.stat().st_size:
        with file.open("r+b") as handle:
            handle.truncate(good_bytes)
    return keys


def _keys_of_gzip(file: Path) -> set[str]:
    keys: set[str] = set()
    try:
        with gzip.open(file, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                record = json.loads(raw)
                keys.add(record_key(record, int(record.get("line") or number)))
    except (EOFError, OSError, json.JSONDecodeError):
        pass  # a truncated gzip member: the records before it count as done
    return keys


class JsonlWriter:
    """Writes one JSON object per line; gzip when the path ends in ``.gz``; ``-`` is stdout."""

    def __init__(self, path: str, *, append: bool = False) -> None:
        if path == "-":
            self._handle: IO[str] = sys.stdout
        elif path.endswith(".gz"):
            raw = gzip.open(path, "ab" if append else "wb")  # noqa: SIM115
            self._handle = io.TextIOWrapper(raw, encoding="utf-8")
        else:
            self._handle = Path(path).open("a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        """Append one record and flush it, so a crash loses at most the line being written."""
        self._handle.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file (not stdout)."""
        if self._handle is not sys.stdout:
            self._handle.close()
