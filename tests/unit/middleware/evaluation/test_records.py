from __future__ import annotations

import json

import pytest

from ragpress.exceptions import RequestValidationError
from ragpress.middleware.evaluation.records import (
    load_eval_records,
    parse_eval_record,
    render_prompt,
)


def test_gold_flags_accept_booleans_and_the_strings_the_data_sets_use() -> None:
    record = parse_eval_record(
        1,
        {
            "id": 7,
            "question": "q?",
            "answers": ["a"],
            "docs": [{"text": "x", "is_gold": "True"}, {"text": "y", "is_gold": False}],
        },
    )
    assert record.id == "7" and record.gold == (True, False)
    unmarked = parse_eval_record(2, {"question": "q?", "answer": "a", "docs": [{"text": "x"}]})
    assert unmarked.gold is None and unmarked.answers == ("a",) and unmarked.id == "line-2"


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"answers": ["a"], "docs": [{"text": "x"}]}, "question"),
        ({"question": "q", "docs": [{"text": "x"}]}, "answers"),
        ({"question": "q", "answers": [], "docs": [{"text": "x"}]}, "answers"),
        ({"question": "q", "answers": [3], "docs": [{"text": "x"}]}, "answers"),
        ({"question": "q", "answers": ["a"], "docs": "x"}, "docs"),
    ],
)
def test_bad_records_name_the_field(record, field) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_eval_record(3, record)
    assert caught.value.param == field


def test_a_bad_record_is_reported_and_the_rest_load(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    good = {"id": "g", "question": "q?", "answers": ["a"], "docs": [{"text": "x"}]}
    path.write_text("\n".join([json.dumps(good), "{not json", json.dumps({**good, "id": "h"})]))
    records, errors = load_eval_records(str(path))
    assert [r.id for r in records] == ["g", "h"]
    assert errors[0][0] == 2 and "not valid JSON" in errors[0][1]
    assert [r.id for r in load_eval_records(str(path), limit=1)[0]] == ["g"]


def test_prompt_lists_the_kept_documents_and_falls_back_to_closed_book() -> None:
    [message] = render_prompt("Who?", [("A", "first"), ("B", ""), (None, "third")])
    assert message["role"] == "user"
    assert "Document [1](Title: A) first\nDocument [2](Title: ) third" in message["content"]
    assert message["content"].endswith("Question: Who?\nAnswer:")
    [closed] = render_prompt("Who?", [("A", " "), ("B", "")])
    assert "search results" not in closed["content"] and "Question: Who?" in closed["content"]
