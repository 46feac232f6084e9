"""Batch file formats: JSONL.gz checkpoints, Parquet round trips and resume."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ragpress.config import RagpressSettings
from ragpress.middleware.batch.io import completed_keys, open_source
from ragpress.middleware.batch.job import BatchJob, run_job
from ragpress.middleware.batch.jsonl import JsonlWriter
from ragpress.middleware.pipeline.core import Pipeline
from ragpress.middleware.pipeline.factory import build_pipeline
from tests.support.fakes import HashingEmbedder

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@dataclass(frozen=True)
class Factory:
    def __call__(self, *, device: str | None = None) -> Pipeline:
        settings = RagpressSettings(_env_file=None, cache={"backend": "none"})
        return build_pipeline(settings, embedder=HashingEmbedder())


def records(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "question": "Where is the tower?",
            "answers": ["Paris"],
            "docs": [
                {
                    "title": "Tower",
                    "text": f"The tower is in Paris. It is {i} metres tall. Bread is baked daily.",
                    "score": 0.5 + i,
                },
                {"title": "Bread", "text": "Bread needs flour. Yeast makes dough rise."},
            ],
        }
        for i in range(n)
    ]


def essentials(row: dict[str, Any]) -> tuple[Any, ...]:
    """What compression produced for a row, whatever the file format."""
    docs = row.get("docs") or []
    stats = row.get("stats") or {}
    return (
        row["id"],
        row["error"],
        row.get("context"),
        [(d.get("title"), d["text"], d.get("spans")) for d in docs if not row["error"]],
        stats.get("tokens_before"),
        stats.get("tokens_after"),
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def test_gzip_output_resumes_from_the_last_finished_member(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl.gz"
    writer = JsonlWriter(str(target), checkpoint_records=3)
    for i in range(7):
        writer.write({"id": i})
    writer.close()
    whole = target.read_bytes()
    # A crash in the middle of the third member (records 6.. were being written):
    members_end = len(whole) - 5
    target.write_bytes(whole[:members_end])
    done = completed_keys(str(target))
    assert sorted(done) == [f"id:{i}" for i in range(6)]  # two whole members of three
    writer = JsonlWriter(str(target), append=True, checkpoint_records=3)
    writer.write({"id": 6})
    writer.close()
    assert [r["id"] for r in read_jsonl(target)] == list(range(7))  # a valid gzip file again


def test_torn_jsonl_line_is_cut_and_duplicate_ids_are_counted(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text('{"id": "a"}\n{"id": "a"}\n{"id": "b", "tor')
    done = completed_keys(str(target))
    assert done == {"id:a": 2}
    assert target.read_text() == '{"id": "a"}\n{"id": "a"}\n'


def test_parquet_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    rows = records(9)
    rows[4]["docs"][0]["text"] = " "
    rows[4]["docs"][1]["text"] = ""  # a record that fails: nothing to compress
    pq.write_table(pa.Table.from_pylist(rows), source)
    jsonl_source = tmp_path / "in.jsonl"
    jsonl_source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    target = tmp_path / "out.parquet"
    report = run_job(
        BatchJob(str(source), str(target), batch_size=4, checkpoint_records=4), Factory()
    )
    assert report.records == 9 and report.errors == 1
    assert not Path(f"{target}.parts").exists()
    table = pq.read_table(target)
    assert table.schema.field("id").type == pa.int64()  # the input's types carry over
    assert table.schema.field("stats").type.field("tokens_after").type == pa.int64()
    out = table.to_pylist()
    assert [r["id"] for r in out] == list(range(9))
    assert out[0]["answers"] == ["Paris"] and out[0]["docs"][0]["score"] == 0.5
    assert out[0]["docs"][0]["title"] == "Tower" and out[0]["docs"][0]["spans"]
    assert "nothing to compress" in out[4]["error"]

    # Parquet out is the same data as JSONL out, and Parquet in reads as JSONL in does.
    as_jsonl = tmp_path / "out.jsonl"
    run_job(BatchJob(str(jsonl_source), str(as_jsonl), batch_size=4), Factory())
    assert [essentials(r) for r in out] == [essentials(r) for r in read_jsonl(as_jsonl)]


def test_parquet_output_resumes_from_finished_parts(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records(10)))
    target = tmp_path / "out.parquet"
    parts = Path(f"{target}.parts")
    # An earlier run died after writing two parts of three rows, and while writing a third:
    run_job(BatchJob(str(source), str(target), checkpoint_records=3), Factory())
    full = pq.read_table(target).to_pylist()
    target.unlink()
    parts.mkdir()
    pq.write_table(pa.Table.from_pylist(full[:3]), parts / "part-000001.parquet")
    pq.write_table(pa.Table.from_pylist(full[3:6]), parts / "part-000002.parquet")
    (parts / "part-000003.tmp").write_bytes(b"PAR1 half written")
    report = run_job(
        BatchJob(str(source), str(target), checkpoint_records=3, resume=True), Factory()
    )
    assert report.skipped == 6 and report.records == 4
    assert [r["id"] for r in pq.read_table(target).to_pylist()] == list(range(10))


def test_parquet_rows_that_do_not_fit_keep_their_compression_and_say_why(tmp_path: Path) -> None:
    rows = records(4)
    rows[3]["answers"] = "Paris"  # a string where earlier rows have a list
    rows[3]["docs"][1]["lang"] = "en"  # a document field the first rows did not have
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = tmp_path / "out.parquet"
    run_job(BatchJob(str(source), str(target), checkpoint_records=3), Factory())
    out = pq.read_table(target).to_pylist()
    assert [r["error"] for r in out[:3]] == [None, None, None]
    assert out[3]["answers"] is None and out[3]["docs"][0]["spans"]
    assert "answers (list<item: string>)" in out[3]["error"]
    assert "docs[].lang" in out[3]["error"] and "write JSONL output" in out[3]["error"]


def test_parquet_values_without_json_types_are_written_to_jsonl_readably(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    pq.write_table(
        pa.Table.from_pylist([{"id": "a", "text": "One fact. Two facts.", "at": when}]), source
    )
    assert open_source(str(source)).count() == 1
    target = tmp_path / "out.jsonl"
    run_job(BatchJob(str(source), str(target)), Factory())
    assert read_jsonl(target)[0]["at"] == "2024-05-01T12:30:00+00:00"


@dataclass(frozen=True)
class InterruptedFactory:
    """Ctrl-C arrives while the third micro-batch is being compressed."""

    def __call__(self, *, device: str | None = None) -> Pipeline:
        pipeline = Factory()()
        calls = iter(range(1_000_000))
        real = pipeline.acompress_many

        async def acompress_many(requests):
            if next(calls) == 2:
                raise KeyboardInterrupt
            return await real(requests)

        pipeline.acompress_many = acompress_many  # type: ignore[method-assign]
        return pipeline


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".parquet"])
def test_ctrl_c_leaves_a_resumable_output(tmp_path: Path, suffix: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records(20)))
    target = tmp_path / f"out{suffix}"
    job = BatchJob(str(source), str(target), batch_size=4, concurrency=1, checkpoint_records=3)
    with pytest.raises(KeyboardInterrupt):
        run_job(job, InterruptedFactory())
    done = completed_keys(str(target))
    written = len(done)  # whole micro-batches that reached the file before the interrupt
    assert written in (4, 8) and set(done) == {f"id:{i}" for i in range(written)}
    report = run_job(BatchJob(**{**job.__dict__, "resume": True}), Factory())
    assert report.skipped == written and report.records == 20 - written
    rows = pq.read_table(target).to_pylist() if suffix == ".parquet" else read_jsonl(target)
    assert [r["id"] for r in rows] == list(range(20))
