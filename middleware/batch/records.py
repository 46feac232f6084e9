"""The batch record format: parse and validate input records, build output and error records.

Input records are ``{"id", "question"|"query" (optional), "docs": [{"text", "title"?, ...}]}``
or ``{"id", "text"}``. Each input line yields exactly one output line, with the same ``id`` and
every other field passed through, plus ``docs`` (compressed text, original title and metadata,
kept ``spans``), ``context``, ``stats`` and ``error``; a record without an ``id`` also gets its
input position, in ``line`` (or in ``ragpress_line`` when it has a ``line`` field of its own). A
bad line becomes an output line whose ``error`` says what is wrong and where, including lines
that Python's JSON reader cannot take or takes although JSON does not (deep nesting, huge
integers, ``NaN``, ``Infinity``).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ragpress.exceptions import RequestValidationError
from ragpress.types import Passage

if TYPE_CHECKING:
    from ragpress.types import CompressionResult

__all__ = [
    "MAX_DEPTH",
    "BatchItem",
    "NumberedRecord",
    "RawRecord",
    "error_record",
    "item_from_record",
    "load_record",
    "output_record",
    "parse_record",
    "record_key",
    "record_position",
]

RawRecord: TypeAlias = "bytes | dict[str, Any]"
"""One input record: a JSONL line as read, or a row already decoded (Parquet)."""


NumberedRecord: TypeAlias = "tuple[int, RawRecord]"
"""``(position, record)``: the 1-based line of a JSONL file or row of a Parquet file."""


_RESERVED = ("docs", "text", "context", "stats", "error")
_LINE = "line"
"""Where an output record without an id keeps its input position, for ``--resume``."""
_OWN_LINE = "ragpress_line"
"""The same, for a record that has a ``line`` field of its own (which is kept as it is)."""

MAX_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in a record; deeper records are errors
(Python's JSON reader and writer recurse, so unbounded depth would crash the run)."""


class _NotJsonError(ValueError):
    """Something Python's JSON reader accepts but JSON does not (NaN, Infinity, 1e999)."""


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


def record_key(record: dict[str, Any] | None, line: int) -> str:
    """The identity ``--resume`` uses: the record's id, or its line number when it has none."""
    if isinstance(record, dict) and record.get("id") is not None:
        return f"id:{record['id']}"
    return f"line:{line}"


def record_position(record: object) -> int | None:
    """The input position an output record carries (``ragpress_line``, else ``line``), if any.

    Only whole numbers count: a record's own ``line`` field may hold anything.
    """
    if not isinstance(record, dict):
        return None
    for name in (_OWN_LINE, _LINE):
        value = record.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _with_position(out: dict[str, Any], record: dict[str, Any], line: int) -> None:
    """Record the input position in ``out`` when it has no id, never over the record's own."""
    if out.get("id") is None:
        out[_OWN_LINE if _LINE in record else _LINE] = line


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
        _check_depth(line, raw)
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
        record = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            f"line {line}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
            'one JSON object such as {"id": "1", "question": "...", "docs": [{"text": "..."}]}',
            param=f"line {line}",
        ) from None
    except _NotJsonError as exc:
        raise RequestValidationError(
            f"line {line}: not valid JSON ({exc})", param=f"line {line}"
        ) from None
    except RecursionError:
        raise RequestValidationError(
            f"line {line}: nested too deeply to read (more than {MAX_DEPTH} levels are refused); "
            "flatten the record",
            param=f"line {line}",
        ) from None
    except ValueError:  # an integer literal longer than sys.get_int_max_str_digits()
        raise RequestValidationError(
            f"line {line}: an integer has more than the {sys.get_int_max_str_digits():,} digits "
            "Python reads as a number; write such numbers as strings",
            param=f"line {line}",
        ) from None
    if not isinstance(record, dict):
        raise RequestValidationError(
            f"line {line}: expected a JSON object, got {type(record).__name__}",
            param=f"line {line}",
        )
    _check_depth(line, record)
    return record


def _reject_constant(name: str) -> Any:
    raise _NotJsonError(f"{name} is not a JSON value; write null or a string")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotJsonError(f"{text} is beyond the range of a double; write it as a string")
    return value


def _check_depth(line: int, record: dict[str, Any]) -> None:
    """Refuse records nested deeper than :data:`MAX_DEPTH` (without recursing)."""
    stack: list[tuple[Any, int]] = [(record, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestValidationError(
                f"line {line}: nested more than {MAX_DEPTH} levels deep; flatten the record",
                param=f"line {line}",
            )
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


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
    _with_position(out, item.record, item.line)  # lets --resume recognise records with no id
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
        _with_position(out, record, line)
    else:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        out = {"id": None, "line": line, "raw": text if isinstance(text, str) else None}
    out["context"] = None
    out["stats"] = None
    out["error"] = error
    return out
