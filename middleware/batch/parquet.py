"""Parquet input and output for batch jobs (extra ``parquet``: pyarrow).

Input is read one row group slice at a time. Output is written as *parts*: every checkpoint
writes the rows so far as one complete Parquet file ``OUT.parts/part-NNNNNN.parquet`` (written
under a temporary name, then renamed, so a part is either whole or absent). When the run ends
the parts are concatenated, one at a time, into ``OUT`` (again through a temporary name), and
the folder is removed. A crash leaves the finished parts; ``--resume`` reads their keys and
carries on with the next part.

Column types: a Parquet input lends its own column types to the output; otherwise they are
inferred from the first part. ragpress's own columns (``docs[].spans``, ``context``,
``stats``, ``error``, ``line``, ``ragpress_line``, ``raw``) always have the same types, except
``line`` when the records have a ``line`` field of their own (then their type is kept). A
later record whose field does not fit its column keeps its compression, loses that field in the
output, and gets an ``error`` that names the field (the input still has it; JSONL output keeps
everything).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import MissingDependencyError, RequestValidationError
from ragpress.middleware.batch.records import record_key, record_position

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "pyarrow", extra="parquet") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ragpress.middleware.batch.records import NumberedRecord

__all__ = ["ParquetSink", "ParquetSource", "parquet_completed_keys"]

_READ_ROWS = 1024
_STATS = pa.struct(
    [
        ("tokens_before", pa.int64()),
        ("tokens_after", pa.int64()),
        ("ratio", pa.float64()),
        ("ms", pa.float64()),
        ("cache_hits", pa.int64()),
        ("method", pa.string()),
        ("notes", pa.list_(pa.string())),
    ]
)
_OWN_COLUMNS: dict[str, pa.DataType] = {
    "line": pa.int64(),
    "ragpress_line": pa.int64(),
    "raw": pa.string(),
    "context": pa.string(),
    "stats": _STATS,
    "error": pa.string(),
}
_SPANS = pa.list_(pa.list_(pa.int64()))


class ParquetSource:
    """Rows of a Parquet file as records, ``position`` being the 1-based row number."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._file = pq.ParquetFile(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise RequestValidationError(
                f"{path} is not a readable Parquet file ({exc})", param="IN"
            ) from None
        self.schema: pa.Schema = self._file.schema_arrow

    def records(self) -> Iterator[NumberedRecord]:
        """``(row number, row as a dict)`` pairs, read ``1024`` rows at a time."""
        position = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=_READ_ROWS):
            for row in batch.to_pylist():
                position += 1
                yield position, row

    def count(self) -> int:
        """Rows, from the file's metadata."""
        return int(self._file.metadata.num_rows)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]


def _parts_dir(path: str) -> Path:
    return Path(f"{path}.parts")


def parquet_completed_keys(path: str) -> Counter[str]:
    """Keys in the finished parts of ``path`` (or in ``path`` itself if it is complete).

    Unfinished temporary files are removed. A complete ``OUT`` becomes the first part, so the
    resumed run appends after it.
    """
    parts = _parts_dir(path)
    final = Path(path)
    if final.exists() and not parts.exists():
        parts.mkdir()
        final.rename(parts / "part-000000.parquet")
    keys: Counter[str] = Counter()
    if not parts.exists():
        return keys
    for stray in parts.glob("*.tmp"):
        stray.unlink()
    for part in sorted(parts.glob("part-*.parquet")):
        file = pq.ParquetFile(part)
        names = set(file.schema_arrow.names)
        columns = [c for c in ("id", "line", "ragpress_line") if c in names]
        table = file.read(columns=columns) if columns else None
        values = {c: table.column(c).to_pylist() if table else None for c in columns}
        for row in range(file.metadata.num_rows):
            record = {c: v[row] for c, v in values.items() if v is not None}
            keys[record_key(record, record_position(record) or 0)] += 1
    return keys


class ParquetSink:
    """Writes output records as Parquet parts, then joins them into one file.

    Args:
        path: The final ``.parquet`` file.
        append: Continue the parts left by an interrupted run.
        input_schema: Column types of a Parquet input, reused for the passthrough columns.
        rows_per_part: Rows per part (one checkpoint).
    """

    def __init__(
        self,
        path: str,
        *,
        append: bool = False,
        input_schema: pa.Schema | None = None,
        rows_per_part: int = 1000,
    ) -> None:
        self.path = path
        self._parts = _parts_dir(path)
        self._input_schema = input_schema
        self._rows_per_part = max(1, rows_per_part)
        self._rows: list[dict[str, Any]] = []
        self._schema: pa.Schema | None = None
        if not append and self._parts.exists():
            shutil.rmtree(self._parts)
        self._parts.mkdir(parents=True, exist_ok=True)
        existing = sorted(self._parts.glob("part-*.parquet"))
        self._next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 1
        if existing:
            self._schema = pq.read_schema(existing[0])

    def write(self, record: dict[str, Any]) -> None:
        """Buffer one record; a full buffer becomes a part on disk."""
        self._rows.append(record)
        if len(self._rows) >= self._rows_per_part:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write the buffered rows as one complete part file (atomically)."""
        if not self._rows:
            return
        try:
            table = self._rows_table()
        except UnicodeEncodeError:  # Parquet strings are UTF-8: lone surrogates cannot go in
            self._rows = [_without_surrogates(row) for row in self._rows]
            table = self._rows_table()
        final = self._parts / f"part-{self._next:06d}.parquet"
        temporary = final.with_suffix(".tmp")
        pq.write_table(table, temporary)
        temporary.replace(final)
        self._next += 1
        self._rows = []

    def _rows_table(self) -> pa.Table:
        if self._schema is None:
            self._schema = self._output_schema(self._rows)
        return self._table(self._rows, self._schema)

    def suspend(self) -> None:
        """Write the buffered rows as a part and leave the parts for ``--resume``."""
        self.checkpoint()
        if not any(self._parts.iterdir()):
            self._parts.rmdir()  # nothing was written: leave no trace that blocks a new run

    def close(self) -> None:
        """Join the parts into the final file and remove them."""
        self.checkpoint()
        parts = sorted(self._parts.glob("part-*.parquet"))
        temporary = Path(f"{self.path}.tmp")
        schema = self._schema or pa.schema([(name, t) for name, t in _OWN_COLUMNS.items()])
        with pq.ParquetWriter(temporary, schema) as writer:
            for part in parts:
                file = pq.ParquetFile(part)
                for group in range(file.num_row_groups):
                    writer.write_table(file.read_row_group(group).cast(schema))
        temporary.replace(self.path)
        shutil.rmtree(self._parts)

    # -- schema ---------------------------------------------------------------------------

    def _output_schema(self, rows: list[dict[str, Any]]) -> pa.Schema:
        inferred = _infer_schema(rows)
        known = self._input_schema
        fields: dict[str, pa.Field] = {}
        for row in rows:
            for name in row:
                if name in fields:
                    continue
                if name == "line" and known is not None and "line" in known.names:
                    fields[name] = known.field(name)  # the records' own line field
                elif name == "line" and _own_line_type(inferred) is not None:
                    fields[name] = pa.field(name, _own_line_type(inferred))
                elif name in _OWN_COLUMNS:
                    fields[name] = pa.field(name, _OWN_COLUMNS[name])
                elif name == "docs":
                    fields[name] = pa.field(name, self._docs_type(inferred, known))
                elif known is not None and name in known.names:
                    fields[name] = known.field(name)
                elif name in inferred.names and not pa.types.is_null(inferred.field(name).type):
                    fields[name] = inferred.field(name)
                else:
                    fields[name] = pa.field(name, pa.string())  # only nulls seen so far
        for name, data_type in _OWN_COLUMNS.items():
            fields.setdefault(name, pa.field(name, data_type))
        return pa.schema(list(fields.values()))

    @staticmethod
    def _docs_type(inferred: pa.Schema, known: pa.Schema | None) -> pa.DataType:
        base: pa.DataType | None = None
        if known is not None and "docs" in known.names:
            base = known.field("docs").type
        elif "docs" in inferred.names:
            base = inferred.field("docs").type
        doc_fields: list[pa.Field] = []
        if base is not None and pa.types.is_list(base) and pa.types.is_struct(base.value_type):
            struct = base.value_type
            doc_fields = [
                struct.field(i)
                for i in range(struct.num_fields)
                if struct.field(i).name not in ("text", "spans")
            ]
        doc_fields = [
            f if not pa.types.is_null(f.type) else pa.field(f.name, pa.string()) for f in doc_fields
        ]
        doc_fields += [pa.field("text", pa.string()), pa.field("spans", _SPANS)]
        return pa.list_(pa.struct(doc_fields))

    def _table(self, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
        """Rows as a table of ``schema``; rows that do not fit lose the misfit fields, noted."""
        try:
            table = pa.Table.from_pylist(rows, schema=schema)
            if table.to_pylist() == [_complete(r, schema) for r in rows]:
                return table
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
            pass
        return pa.Table.from_pylist([_conform(r, schema) for r in rows], schema=schema)


def _own_line_type(inferred: pa.Schema) -> pa.DataType | None:
    """The type of the records' own ``line`` values when they are not our line numbers."""
    if "line" not in inferred.names:
        return None
    data_type = inferred.field("line").type
    return None if pa.types.is_integer(data_type) or pa.types.is_null(data_type) else data_type


def _without_surrogates(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with lone surrogates replaced by U+FFFD, and a note naming their fields."""
    found: list[str] = []

    def clean(value: Any, path: str) -> Any:
        if isinstance(value, str):
            fixed = value.encode("utf-8", "replace").decode("utf-8")
            if fixed != value:
                found.append(path)
            return fixed
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    out: dict[str, Any] = clean(row, "")
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        note = (
            f"Parquet output: {shown} held lone surrogates (not Unicode text), written with "
            "'?' in their place (the input keeps them); write JSONL output to keep them"
        )
        previous = out.get("error")
        out["error"] = f"{previous}; {note}" if previous else note
    return out


def _infer_schema(rows: list[dict[str, Any]]) -> pa.Schema:
    """Column types from the rows; a column whose values disagree follows the good records."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    fields = []
    for name in names:
        values = [r[name] for r in rows if r.get(name) is not None]
        good = [r[name] for r in rows if r.get(name) is not None and r.get("error") is None]
        for candidates in (values, good, values[:1]):
            try:
                fields.append(pa.field(name, pa.array(candidates).type))
                break
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
                continue
        else:
            fields.append(pa.field(name, pa.null()))
    return pa.schema(fields)


def _complete(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """What ``row`` reads back as from a table of ``schema`` when nothing is lost."""
    return {
        name: _with_struct_nulls(row.get(name), schema.field(name).type) for name in schema.names
    }


def _with_struct_nulls(value: Any, data_type: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_struct(data_type) and isinstance(value, dict):
        # Keys with no struct field stay in, so that losing them shows as a difference.
        return {
            **value,
            **{
                data_type.field(i).name: _with_struct_nulls(
                    value.get(data_type.field(i).name), data_type.field(i).type
                )
                for i in range(data_type.num_fields)
            },
        }
    if pa.types.is_list(data_type) and isinstance(value, list | tuple):
        return [_with_struct_nulls(v, data_type.value_type) for v in value]
    if pa.types.is_floating(data_type) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _fits(value: Any, data_type: pa.DataType) -> bool:
    try:
        stored = pa.array([value], type=data_type).to_pylist()[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        return False
    return bool(stored == _with_struct_nulls(value, data_type))


def _conform(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """The row with every field that its column cannot hold exactly set to null, noted."""
    out: dict[str, Any] = {}
    misfits = [name for name in row if name not in schema.names]
    for name in schema.names:
        value = row.get(name)
        data_type = schema.field(name).type
        if _fits(value, data_type):
            out[name] = value
            continue
        if name == "docs" and isinstance(value, list):
            # Keep the compressed documents; drop only the document fields with no column.
            doc_type = data_type.value_type
            allowed = {doc_type.field(i).name for i in range(doc_type.num_fields)}
            extra = sorted({k for d in value if isinstance(d, dict) for k in d} - allowed)
            trimmed = [{k: v for k, v in d.items() if k in allowed} for d in value]
            if extra and _fits(trimmed, data_type):
                out[name] = trimmed
                misfits.extend(f"docs[].{k}" for k in extra)
                continue
        out[name] = None
        misfits.append(name)
    if misfits:
        columns = ", ".join(
            f"{n} ({schema.field(n).type})" if n in schema.names else f"{n} (no such column)"
            for n in misfits
        )
        note = (
            f"Parquet output: {columns} did not fit the column types set by the first rows; "
            "the value is left out of this row (the input keeps it); write JSONL output to "
            "keep every field"
        )
        previous = out.get("error")
        out["error"] = f"{previous}; {note}" if previous else note
    return out
