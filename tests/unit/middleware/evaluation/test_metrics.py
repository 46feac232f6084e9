from __future__ import annotations

import pytest

from ragpress.middleware.evaluation.metrics import (
    bootstrap_interval,
    exact_match,
    has_answer,
    normalize_answer,
    token_f1,
)


def test_normalization_is_squads() -> None:
    assert normalize_answer("The  Eiffel-Tower, in PARIS!") == "eiffeltower in paris"


@pytest.mark.parametrize(
    ("reply", "answers", "expected"),
    [
        ("It was Wilhelm Conrad Röntgen, in 1901.", ["Wilhelm Conrad Röntgen"], True),
        ("Röntgen", ["Wilhelm Conrad Röntgen"], False),  # a part of the answer is not it
        ("The answer is 19011", ["1901"], True),  # substring, as Lost in the Middle counts
        ("No idea.", ["Paris", "paris, france"], False),
        ("paris", ["", "Paris"], True),  # an empty gold answer never matches by itself
        ("anything", [""], False),
    ],
)
def test_accuracy_is_lost_in_the_middles_subspan_match(reply, answers, expected) -> None:
    assert has_answer(reply, answers) is expected


def test_exact_match_and_f1_take_the_best_gold_answer() -> None:
    assert exact_match("the Paris", ["London", "Paris"])
    assert not exact_match("Paris, France", ["Paris"])
    assert token_f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert token_f1("Paris France", ["London", "Paris France"]) == 1.0
    assert token_f1("", ["Paris"]) == 0.0


def test_bootstrap_interval_brackets_the_mean_and_is_deterministic() -> None:
    values = [1.0] * 30 + [0.0] * 70
    low, high = bootstrap_interval(values)
    assert low < 0.3 < high
    assert low > 0.15 and high < 0.45
    assert bootstrap_interval(values) == (low, high)
    assert bootstrap_interval([1.0] * 10) == (1.0, 1.0)
    assert bootstrap_interval([]) != bootstrap_interval([])  # NaN: no records, no interval
