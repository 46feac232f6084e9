from __future__ import annotations

from ragpress.middleware.evaluation.contexts import (
    Condition,
    pipeline_contexts,
    random_contexts,
    reference_contexts,
)
from ragpress.middleware.evaluation.records import parse_eval_record
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.tokens import get_token_counter
from tests.support.fakes import LeadCompressor

COUNTER = get_token_counter()
TEXT = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(30))


def _records(n: int = 3):
    return [
        parse_eval_record(
            i,
            {
                "id": f"r{i}",
                "question": "Which topic?",
                "answers": ["topic 7"],
                "docs": [
                    {"title": "T", "text": TEXT, "is_gold": True},
                    {"title": "U", "text": "Unrelated words here. More of them.", "is_gold": False},
                ],
            },
        )
        for i in range(n)
    ]


def test_references_keep_everything_nothing_or_the_gold_passages() -> None:
    records = _records(1)
    full, none, gold = (reference_contexts(records, m, COUNTER) for m in ("full", "none", "gold"))
    assert full is not None and none is not None and gold is not None
    assert full[0].tokens_after == full[0].tokens_before > gold[0].tokens_after > 0
    assert none[0].tokens_after == 0 and none[0].text == ""
    assert [t for _, t in gold[0].documents] == [TEXT, ""]
    unmarked = [parse_eval_record(1, {"question": "q", "answers": ["a"], "text": "x"})]
    assert reference_contexts(unmarked, "gold", COUNTER) is None


def test_random_baseline_keeps_whole_sentences_within_budget_deterministically() -> None:
    records = _records()
    first = random_contexts(records, 4, COUNTER, seed=1)
    again = random_contexts(records, 4, COUNTER, seed=1)
    other = random_contexts(records, 4, COUNTER, seed=2)
    assert [(c.documents, c.tokens_after) for c in first] == [
        (c.documents, c.tokens_after) for c in again
    ]
    assert [c.documents for c in first] != [c.documents for c in other]
    for context in first:
        assert 0 < context.tokens_after <= round(context.tokens_before / 4)
        for sentence in context.documents[0][1].split(". "):
            assert sentence.rstrip(".") + "." in TEXT  # whole sentences, never cut


def test_pipeline_contexts_record_a_failing_record_and_go_on() -> None:
    records = _records(2)
    good = pipeline_contexts(records, Pipeline([Stage(LeadCompressor())]), 3, chunk=1)
    assert [c.documents[0][1] for c in good] == ["Sentence number 0 talks about topic 0."] * 2
    assert all(c.error is None and c.tokens_after < c.tokens_before for c in good)

    class Broken(LeadCompressor):
        def compress(self, query, passages, options, *, analyses=None):
            raise RuntimeError("model fell over")

    failed = pipeline_contexts(records, Pipeline([Stage(Broken())]), 3)
    assert [c.error for c in failed] == ["RuntimeError: model fell over"] * 2
    assert Condition("lead", 3).label == "lead@3x" and Condition("full").label == "full"
