"""``ragpress eval`` end to end: real compressors, a loopback reader, the table shows a loss.

The reader is the loopback stand-in LLM in echo mode: its reply is its prompt, so it answers
correctly exactly when its context still holds the answer. ``LeadCompressor`` (first sentence
of every document) provably drops the answers, which sit later in their documents; the table
must show that loss against the full context.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tests.support.cli import main
from tests.support.fake_llm import FakeLLM

pytestmark = pytest.mark.model  # sentence_selection runs the embedded all-MiniLM-L6-v2

FACTS = [
    ("In which city was the treaty signed?", "Maastricht", "The treaty was signed in {}."),
    ("Which river flows through the old town?", "Vltava", "The {} flows through the old town."),
    ("Who designed the bridge?", "Brunel", "The bridge was designed by Isambard {}."),
    ("What is the name of the ship?", "Endeavour", "The ship was named {} by its owners."),
]
LEAD = "This document was collected for the archive and has been proofread twice."
LEAD_METHOD = "tests.support.fakes:LeadCompressor"


def _write_records(path) -> None:
    with path.open("w") as handle:
        for i, (question, answer, sentence) in enumerate(FACTS):
            docs = [
                {"title": f"Doc {i}", "text": f"{LEAD} {sentence.format(answer)}", "is_gold": True},
                {
                    "title": "Bread",
                    "text": f"{LEAD} Bread is made from flour, water and yeast.",
                    "is_gold": False,
                },
            ]
            handle.write(
                json.dumps({"id": f"q{i}", "question": question, "answers": [answer], "docs": docs})
                + "\n"
            )
        handle.write("{broken\n")


def test_eval_shows_the_loss_of_a_method_that_drops_the_answer(tmp_path) -> None:
    records, out = tmp_path / "records.jsonl", tmp_path / "run"
    _write_records(records)
    args = [
        "eval", str(records), str(out),
        "--methods", f"sentence_selection,{LEAD_METHOD}",
        "--ratios", "2",
    ]  # fmt: skip
    with FakeLLM(echo=True) as llm:
        reader = ["--reader-url", llm.url, "--reader-model", "echo"]
        result = CliRunner().invoke(main, [*args, *reader])
        assert result.exit_code == 0, result.output
        rows = {
            c["condition"]: c for c in json.loads((out / "results.json").read_text())["conditions"]
        }
        assert list(rows) == [
            "full",
            "none",
            "gold",
            "random@2x",
            "naive@2x",
            "sentence_selection@2x",
            f"{LEAD_METHOD}@2x",
        ]
        assert rows["full"]["accuracy"] == rows["gold"]["accuracy"] == 1.0
        assert rows["none"]["accuracy"] == 0.0 and rows["none"]["ratio"] is None
        assert rows[f"{LEAD_METHOD}@2x"]["accuracy"] == 0.0  # the answers were dropped
        assert rows[f"{LEAD_METHOD}@2x"]["retention"] == 0.0
        assert rows["sentence_selection@2x"]["accuracy"] == 1.0
        assert rows["sentence_selection@2x"]["ratio"] >= 1.5
        assert len(rows["full"]["records"]) == len(FACTS)  # the broken line is reported, skipped
        assert "skipped line 5: not valid JSON" in result.output
        table = (out / "results.md").read_text()
        assert f"| {LEAD_METHOD}@2x |" in table and "| 0.000 [0.000, 0.000] |" in table
        assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
        first_requests = len(llm.requests)
        assert first_requests == len(set(_prompts(llm)))  # each distinct prompt asked once

        again = CliRunner().invoke(main, [*args, *reader])
        assert again.exit_code == 2 and "--resume" in again.output
        resumed = CliRunner().invoke(main, [*args, *reader, "--resume"])
        assert resumed.exit_code == 0, resumed.output
        assert len(llm.requests) == first_requests  # every reply came from answers.jsonl
        assert json.loads((out / "results.json").read_text())["answered"] == 0


def test_reader_failures_are_per_record_errors_and_exit_1(tmp_path) -> None:
    records, out = tmp_path / "records.jsonl", tmp_path / "run"
    _write_records(records)
    with FakeLLM(echo=True, fault="status=500") as llm:
        result = CliRunner().invoke(
            main,
            [
                "eval", str(records), str(out), "--methods", LEAD_METHOD, "--ratios", "2",
                "--baselines", "none", "--no-plot", "--reader-url", llm.url,
                "--reader-model", "echo",
            ],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    rows = json.loads((out / "results.json").read_text())["conditions"]
    assert all(row["errors"] == len(FACTS) for row in rows)
    assert "answered 500" in rows[0]["records"][0]["error"]
    assert not (out / "accuracy.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--ratios", "0.5"], "every ratio must be >= 1"),
        (["--baselines", "oracle"], "use random, naive or none"),
        (["--param", "threshold=3"], "METHOD.KEY=VALUE"),
        (["--methods", "full"], "name references or baselines"),
        (["--reader-url", "http://127.0.0.1:9/v1"], "--reader-url needs --reader-model"),
    ],
)
def test_usage_errors_name_the_option(tmp_path, extra, message) -> None:
    records = tmp_path / "records.jsonl"
    _write_records(records)
    result = CliRunner().invoke(main, ["eval", str(records), str(tmp_path / "o"), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output


def _prompts(llm: FakeLLM) -> list[str]:
    return [json.dumps(r.json()["messages"]) for r in llm.requests]
