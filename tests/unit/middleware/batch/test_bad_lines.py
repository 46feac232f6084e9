"""Issue 21: one odd line never stops a batch run, never breaks --resume, never breaks the JSON.

Every case here once ended the run with a traceback, crashed ``--resume``, replaced a user's
field, or wrote output that is not JSON.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragpress.config import RagpressSettings
from ragpress.middleware.batch.io import completed_keys
from ragpress.middleware.batch.job import BatchJob, run_job
from ragpress.middleware.batch.jsonl import json_line
from ragpress.middleware.pipeline.core import Pipeline
from ragpress.middleware.pipeline.factory import build_pipeline
from tests.support.fakes import HashingEmbedder

GOOD = {"id": "good", "question": "Where?", "docs": [{"text": "Paris is in France. It is big."}]}
DEEP = b'{"id": "deep", "text": "x", "n": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NESTED = b'{"id": "nested", "text": "x", "n": ' + b"[" * 500 + b"]" * 500 + b"}"
BIG_INT = b'{"id": "big", "text": "x", "n": ' + b"7" * 5000 + b"}"
NAN = b'{"id": "nan", "text": "Paris is big.", "score": NaN}'
HUGE_FLOAT = b'{"id": "inf", "text": "Paris is big.", "score": 1e999}'
SURROGATE_ID = b'{"id": "s\\ud800", "text": "Paris is big.", "note": "\\udfff!"}'
SURROGATE_TEXT = b'{"id": "st", "text": "Paris \\ud800 is big."}'
OWN_LINE = b'{"text": "Paris is big.", "line": "chapter 3"}'
OWN_INT_LINE = b'{"text": "Rome is old.", "line": 99}'


@dataclass(frozen=True)
class Factory:
    def __call__(self, *, device: str | None = None) -> Pipeline:
        settings = RagpressSettings(_env_file=None, cache={"backend": "none"})
        return build_pipeline(settings, embedder=HashingEmbedder())


def strict_loads(line: str | bytes) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def read(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        return [strict_loads(line) for line in handle]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


LINES = [
    json.dumps(GOOD).encode(),
    DEEP,
    NESTED,
    BIG_INT,
    NAN,
    HUGE_FLOAT,
    SURROGATE_ID,
    SURROGATE_TEXT,
    OWN_LINE,
    OWN_INT_LINE,
    json.dumps({**GOOD, "id": "last"}).encode(),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_odd_lines_become_error_lines_and_the_run_goes_on(tmp_path: Path, suffix: str) -> None:
    source = write_lines(tmp_path / "in.jsonl", LINES)
    target = tmp_path / f"out{suffix}"
    report = run_job(BatchJob(str(source), str(target), batch_size=3), Factory())
    out = read(target)  # strict JSON: no NaN, no Infinity, every line parses
    assert len(out) == len(LINES) == report.records
    by_id = {r["id"]: r for r in out if r.get("id") is not None}
    assert by_id["good"]["error"] is None and by_id["last"]["error"] is None
    assert by_id["good"]["stats"]["tokens_before"] > 0
    errors = {r.get("line"): r["error"] for r in out if r.get("id") is None}
    assert "nested too deeply" in errors[2] and "flatten" in errors[2]
    assert "nested more than 100 levels" in errors[3]
    assert "more than the 4,300 digits" in errors[4] and "as strings" in errors[4]
    assert "NaN is not a JSON value" in errors[5]
    assert "1e999 is beyond the range" in errors[6]
    # A lone surrogate in a passthrough field is kept, escaped; in the text it is an error.
    surrogate = by_id["s\ud800"]
    assert surrogate["error"] is None and surrogate["note"] == "\udfff!"
    assert "lone surrogate (U+D800" in by_id["st"]["error"]
    # The record's own line field is kept; the position goes beside it.
    own = [r for r in out if r.get("line") == "chapter 3"]
    assert len(own) == 1 and own[0]["ragpress_line"] == 9 and own[0]["error"] is None
    own_int = [r for r in out if r.get("text") is None and r.get("ragpress_line") == 10]
    assert len(own_int) == 1 and own_int[0]["line"] == 99
    assert report.errors == 6


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_resume_goes_past_odd_lines_without_duplicates(tmp_path: Path, suffix: str) -> None:
    source = write_lines(tmp_path / "in.jsonl", LINES)
    target = tmp_path / f"out{suffix}"
    run_job(BatchJob(str(source), str(target), batch_size=3), Factory())
    first = read(target)
    report = run_job(BatchJob(str(source), str(target), resume=True), Factory())
    assert report.skipped == len(LINES) and report.records == 0
    assert read(target) == first


def test_resume_reads_an_output_whose_line_fields_are_not_numbers(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text(
        '{"id": null, "line": "chapter 3", "error": null}\n'
        '{"id": null, "line": {"a": 1}, "ragpress_line": 4, "error": null}\n'
        '["not", "a", "record"]\n'
        '{"id": "x", "line": true, "error": null}\n'
    )
    assert completed_keys(str(target)) == {"line:1": 1, "line:4": 1, "line:3": 1, "id:x": 1}
    assert target.read_text().count("\n") == 4  # nothing was cut


def test_a_complete_line_that_is_not_json_is_kept_not_cut(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"id": "a", "error": null}\nnot json\n{"id": "b", "error": null}\n')
    assert completed_keys(str(target)) == {"id:a": 1, "line:2": 1, "id:b": 1}
    assert target.read_text().count("\n") == 3


def test_json_lines_are_strict_and_encodable() -> None:
    line = json_line({"id": "a", "x": math.nan, "y": [1.0, -math.inf], "error": None})
    record = strict_loads(line)
    assert record["x"] is None and record["y"] == [1.0, None]
    assert "x, y[1] held NaN or Infinity" in record["error"]
    escaped = json_line({"id": "\ud800é", "error": None})
    escaped.encode("utf-8")
    assert strict_loads(escaped)["id"] == "\ud800é"
    assert json_line({"id": "é"}) == '{"id":"é"}'  # UTF-8 kept as is when it can be


def test_parquet_rows_with_nan_write_strict_jsonl(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "in.parquet"
    rows = [{**GOOD, "id": "n", "score": math.nan}, {**GOOD, "id": "ok", "score": 1.5}]
    pq.write_table(pa.Table.from_pylist(rows), source)
    target = tmp_path / "out.jsonl"
    run_job(BatchJob(str(source), str(target)), Factory())
    out = {r["id"]: r for r in read(target)}
    assert out["n"]["score"] is None and "score held NaN" in out["n"]["error"]
    assert out["n"]["context"]  # compressed all the same
    assert out["ok"]["score"] == 1.5 and out["ok"]["error"] is None


def test_parquet_output_takes_lone_surrogates_with_a_note(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = write_lines(tmp_path / "in.jsonl", [SURROGATE_ID, json.dumps(GOOD).encode()])
    target = tmp_path / "out.parquet"
    run_job(BatchJob(str(source), str(target)), Factory())
    rows = pq.read_table(target).to_pylist()
    assert [r["id"] for r in rows] == ["s?", "good"]
    assert rows[0]["note"] == "?!" and "id, note held lone surrogates" in rows[0]["error"]
    assert rows[1]["error"] is None


def test_parquet_output_keeps_a_records_own_line_field(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    source = write_lines(tmp_path / "in.jsonl", [OWN_LINE, json.dumps(GOOD).encode()])
    target = tmp_path / "out.parquet"
    run_job(BatchJob(str(source), str(target)), Factory())
    rows = pq.read_table(target).to_pylist()
    assert rows[0]["line"] == "chapter 3" and rows[0]["ragpress_line"] == 1
    assert rows[0]["error"] is None and rows[1]["error"] is None
    assert completed_keys(str(target)) == {"line:1": 1, "id:good": 1}
