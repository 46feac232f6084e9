"""EXIT training data: supporting facts in, 2:1:1 positives / hard / random negatives out."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from typing import Any

import pytest

from ragpress.compressors.exit.data import (
    build_examples,
    parse_qa_record,
    read_qa_records,
)
from ragpress.exceptions import RequestValidationError


def hotpot(i: int) -> dict[str, Any]:
    """A HotpotQA-format record: 2 supporting paragraphs, 2 distractors, 4 sentences each."""
    return {
        "_id": f"q{i}",
        "question": f"Question {i}?",
        "answer": "x",
        "supporting_facts": [[f"Gold A{i}", 0], [f"Gold A{i}", 2], [f"Gold B{i}", 1]],
        "context": [
            [f"Gold A{i}", [f" A{i} sentence {k}." for k in range(4)]],
            [f"Distractor C{i}", [f"C{i} sentence {k}." for k in range(4)]],
            [f"Gold B{i}", [f"B{i} sentence {k}." for k in range(4)]],
            [f"Distractor D{i}", [f"D{i} sentence {k}." for k in range(4)]],
        ],
    }


def records(n: int = 4):
    return [parse_qa_record(hotpot(i), f"test:{i}") for i in range(n)]


def test_hotpot_examples_are_sampled_two_one_one() -> None:
    dataset = build_examples(records())
    kinds = Counter(e.kind for e in dataset.examples)
    # 12 positives, 20 hard negatives, 32 distractor sentences -> n = 6.
    assert kinds == {"positive": 12, "hard_negative": 6, "random_negative": 6}
    assert dataset.counts == dict(kinds) and dataset.records == 4
    for e in dataset.examples:
        i = e.record_id[1:]
        assert e.query == f"Question {i}?"
        assert e.label == (e.kind == "positive")
        title, text = e.context.split("\n", 1)
        assert e.sentence in text and text == " ".join(
            f"{title[-2:]} sentence {k}." for k in range(4)
        )
        supporting = {(f"Gold A{i}", 0), (f"Gold A{i}", 2), (f"Gold B{i}", 1)}
        fact = (title, int(e.sentence[-2]))
        if e.kind == "positive":
            assert fact in supporting
        elif e.kind == "hard_negative":
            assert title.startswith("Gold") and fact not in supporting
        else:
            assert title.startswith("Distractor")


def test_sampling_is_seeded() -> None:
    one = build_examples(records(), seed=1).examples
    assert build_examples(records(), seed=1).examples == one
    assert build_examples(records(), seed=2).examples != one


def test_random_negatives_from_other_questions() -> None:
    dataset = build_examples(records(), random_negatives="other_queries")
    randoms = [e for e in dataset.examples if e.kind == "random_negative"]
    assert len(randoms) == 6
    for e in randoms:
        assert e.query == f"Question {e.record_id[1:]}?"
        assert not e.context.split("\n", 1)[0].endswith(e.record_id[1:])  # another record's text


def test_ragpress_records_with_given_and_weak_labels() -> None:
    given = {
        "id": "r1",
        "question": "Who founded the club?",
        "docs": [
            {
                "title": "Club",
                "text": "The club is old. Anna Berg founded it. It has 40 members.",
                "supporting_sentences": [1],
            },
            {"title": "Other", "text": "Rivers are long. Mountains are high."},
        ],
    }
    weak = {
        "id": "r2",
        "question": "Which river flows through the capital city?",
        "answers": ["Danube"],
        "docs": [
            {
                "title": "Capital",
                "text": "The capital is large. The Danube flows through it.",
                "is_gold": True,
            },
            {
                "title": "Bridge",
                "text": "A bridge was built. It crosses the river in the capital.",
                "is_gold": True,
            },
            {"title": "Noise", "text": "Cats sleep a lot. Dogs bark.", "is_gold": False},
        ],
    }
    r1 = parse_qa_record(given, "t:1")
    r2 = parse_qa_record(weak, "t:2")
    assert not r1.weak_labels and r2.weak_labels
    assert r1.paragraphs[0].supporting == {1} and r1.paragraphs[0].gold
    assert r2.paragraphs[0].supporting == {1}  # holds the answer string
    assert r2.paragraphs[1].supporting == {1}  # no answer: most question words (river, capital)
    assert r2.paragraphs[2].supporting == frozenset() and not r2.paragraphs[2].gold
    dataset = build_examples([r1, r2])
    positives = {e.sentence for e in dataset.examples if e.kind == "positive"}
    assert positives <= {
        "Anna Berg founded it.",
        "The Danube flows through it.",
        "It crosses the river in the capital.",
    }
    assert dataset.weak_label_records == 1


def test_too_little_data_is_a_clear_error() -> None:
    record = parse_qa_record(
        {"question": "q?", "docs": [{"text": "One. Two.", "supporting_sentences": [0]}]}, "t:1"
    )
    with pytest.raises(RequestValidationError, match="2:1:1"):
        build_examples([record])


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"docs": []}, "question"),
        ({"question": "q?"}, "docs"),
        ({"question": "q?", "docs": [{"title": "t"}]}, "docs[0].text"),
        ({"question": "q?", "context": [], "supporting_facts": [["t"]]}, "supporting_facts"),
    ],
)
def test_bad_records_name_the_field(raw, field) -> None:
    with pytest.raises(RequestValidationError) as info:
        parse_qa_record(raw, "data.jsonl:7")
    assert info.value.param == f"data.jsonl:7.{field}"
    assert "data.jsonl:7" in str(info.value)


def test_reads_json_arrays_jsonl_and_gzip(tmp_path) -> None:
    rows = [hotpot(0), hotpot(1)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows))
    for name in ("a.json", "b.jsonl", "c.jsonl.gz"):
        assert [r["_id"] for _, r in read_qa_records(tmp_path / name)] == ["q0", "q1"]
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n{oops\n')
    with pytest.raises(RequestValidationError, match="line 2"):
        list(read_qa_records(tmp_path / "bad.jsonl"))
