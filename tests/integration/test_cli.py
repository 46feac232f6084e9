"""The ``ragpress`` command line, run as users run it."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.support.cli import main

RECORDS: list[dict[str, Any]] = [
    {
        "id": f"q{i}",
        "question": "Which city hosts the tower?",
        "answers": ["Paris"],
        "docs": [
            {
                "title": "Eiffel Tower",
                "text": "The Eiffel Tower is in Paris. It opened in 1889. "
                f"It is {300 + i} metres tall.",
                "is_gold": True,
            },
            {"title": "Bread", "text": "Bread needs flour. Yeast makes dough rise. Ovens bake."},
            {"title": "Rivers", "text": "The Seine flows through Paris. The Rhine is longer."},
        ],
    }
    for i in range(6)
]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    with path.open("w") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ragpress(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ragpress", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.model
def test_batch_compresses_in_order_and_records_bad_lines(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*RECORDS[:3], "{broken", RECORDS[3]])
    target = tmp_path / "out.jsonl"
    done = ragpress("batch", str(source), str(target), "--target-ratio", "2")
    assert done.returncode == 1, done.stderr  # one bad line
    out = read_jsonl(target)
    assert [r["id"] for r in out] == ["q0", "q1", "q2", None, "q3"]
    assert out[3]["error"].startswith("line 4: not valid JSON") and out[3]["raw"] == "{broken"
    first = out[0]
    assert first["error"] is None and first["answers"] == ["Paris"]
    assert [d["title"] for d in first["docs"]] == ["Eiffel Tower", "Bread", "Rivers"]
    assert first["docs"][0]["is_gold"] is True
    assert first["stats"]["ratio"] >= 1.7
    assert set(first["stats"]) >= {"tokens_before", "tokens_after", "ratio", "ms", "cache_hits"}
    original = RECORDS[0]["docs"][0]["text"]
    for start, end in first["docs"][0]["spans"]:
        assert original[start:end] in first["docs"][0]["text"]
    summary = json.loads(done.stderr.strip().splitlines()[-1])
    assert summary["records"] == 5 and summary["errors"] == 1


@pytest.mark.model
def test_resume_after_a_crash_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    target = tmp_path / "out.jsonl"
    assert ragpress("batch", str(source), str(target)).returncode == 0
    full = target.read_text().splitlines()
    # A crash after two records, in the middle of writing the third:
    target.write_text(full[0] + "\n" + full[1] + "\n" + full[2][:40])
    done = ragpress("batch", str(source), str(target), "--resume")
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in read_jsonl(target)] == [r["id"] for r in RECORDS]


@pytest.mark.model
def test_gzip_input_and_stdin(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl.gz"
    with gzip.open(source, "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in RECORDS[:2]) + "\n")
    target = tmp_path / "out.jsonl"
    assert ragpress("batch", str(source), str(target), "-q").returncode == 0
    assert len(read_jsonl(target)) == 2


@pytest.mark.model
def test_compress_a_text_file(tmp_path: Path) -> None:
    doc = tmp_path / "notes.txt"
    doc.write_text(
        "The contract was signed on May 3. Lunch was pasta. The weather was fine. "
        "Payment is due in 30 days. Everyone went home."
    )
    done = ragpress("compress", str(doc), "-q", "When was the contract signed?", "-r", "3")
    assert done.returncode == 0, done.stderr
    assert "signed on May 3." in done.stdout
    assert "tokens" in done.stderr
    as_json = ragpress("compress", str(doc), "-q", "payment", "--json", "--target-tokens", "12")
    record = json.loads(as_json.stdout)
    assert record["stats"]["tokens_after"] <= 12 and record["docs"][0]["spans"]
    auto = ragpress(
        "compress", str(doc), "-q", "payment", "--json", "-r", "auto", "--max-ratio", "4"
    )
    stats = json.loads(auto.stdout)["stats"]
    assert auto.returncode == 0, auto.stderr
    assert 2 <= stats["ratio"] <= 4.5  # the achieved ratio, reported per record


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target-ratio", "0.5"], "target_ratio=0.5 must be a number >= 1"),
        (["--rate", "2"], "rate=2.0 must be in (0, 1]"),
        (["--target-ratio", "3", "--rate", "0.3"], "give only one budget"),
        (["--method", "nope"], "unknown compressor 'nope'"),
        (["--cache", "memcached://x"], "use memory, none, or a redis:// URL"),
        (["--target-ratio", "lots"], "neither a number such as 3 nor 'auto'"),
        (["--target-ratio", "3", "--min-ratio", "2"], 'min_ratio bounds target_ratio="auto"'),
    ],
)
def test_bad_options_fail_with_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    result = CliRunner().invoke(main, ["batch", str(source), str(tmp_path / "o.jsonl"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_existing_output_is_never_clobbered_by_accident(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS[:1])
    target = tmp_path / "out.jsonl"
    target.write_text('{"id": "precious"}\n')
    result = CliRunner().invoke(main, ["batch", str(source), str(target)])
    assert result.exit_code == 2 and "--resume" in result.output
    assert target.read_text() == '{"id": "precious"}\n'


def test_help_teaches_the_record_format() -> None:
    result = CliRunner().invoke(main, ["batch", "--help"])
    assert result.exit_code == 0
    assert '"docs": [{"title": "...", "text": "..."}]' in result.output
    assert "--resume" in result.output and "--target-ratio" in result.output


def test_config_env_lists_variables() -> None:
    result = CliRunner().invoke(main, ["config", "env"])
    assert "RAGPRESS_CACHE__BACKEND" in result.output
    assert "RAGPRESS_COMPRESSION__TARGET_RATIO" in result.output


@pytest.mark.redis
@pytest.mark.model
def test_batch_with_redis_cache_reuses_analyses(tmp_path: Path, redis_url: str) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS[:2])
    env_file = tmp_path / ".env"
    env_file.write_text(f"RAGPRESS_CACHE__NAMESPACE=test-cli-{tmp_path.name}\n")
    args = ["--cache", redis_url, "--env-file", str(env_file)]
    first = ragpress("batch", str(source), str(tmp_path / "a.jsonl"), *args)
    second = ragpress("batch", str(source), str(tmp_path / "b.jsonl"), *args)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert json.loads(second.stderr.strip().splitlines()[-1])["cache_hits"] >= 4
