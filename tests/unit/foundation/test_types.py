from __future__ import annotations

import math
from typing import Any

import pytest

from ragpress.exceptions import RequestValidationError
from ragpress.types import CompressedPassage, CompressionOptions, CompressionResult, Passage


def test_passage_metadata_is_read_only_and_survives() -> None:
    meta = {"source": "a.pdf", "page": 3}
    passage = Passage("text", title="T", id="7", metadata=meta)
    meta["page"] = 99  # the caller's dict changing later does not leak in
    assert passage.metadata == {"source": "a.pdf", "page": 3}
    with pytest.raises(TypeError):
        passage.metadata["page"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        passage.text = "other"  # type: ignore[misc]


def test_passage_rejects_non_string_text() -> None:
    with pytest.raises(TypeError, match=r"Passage\.text must be str"):
        Passage(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"target_ratio": 0.5}, "target_ratio"),
        ({"target_ratio": math.nan}, "target_ratio"),
        ({"rate": 0}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"target_tokens": -1}, "target_tokens"),
        ({"target_tokens": 2.5}, "target_tokens"),
        ({"target_ratio": 3, "rate": 0.3}, "rate"),
        ({"keep": "ACME"}, "keep"),
        ({"keep": ("ok", "")}, "keep[1]"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestValidationError) as info:
        CompressionOptions(**kwargs)
    assert info.value.param == param
    assert param.split("[")[0] in str(info.value)


def test_budget_from_each_kind() -> None:
    assert CompressionOptions(target_ratio=4).budget(1000) == 250
    assert CompressionOptions(rate=0.3).budget(1000) == 300
    assert CompressionOptions(target_tokens=120).budget(1000) == 120
    assert CompressionOptions().budget(1000) is None


def test_resolve_takes_the_budget_as_a_whole_and_merges_keep() -> None:
    defaults = CompressionOptions(target_ratio=3, keep=("a",))
    request = CompressionOptions(rate=0.5, keep=("b", "a"))
    resolved = request.resolve(defaults)
    assert (resolved.target_ratio, resolved.rate) == (None, 0.5)
    assert resolved.keep == ("a", "b")
    assert CompressionOptions().resolve(defaults).target_ratio == 3


def test_result_ratio_and_context() -> None:
    p1, p2 = Passage("a b"), Passage("c")
    result = CompressionResult(
        passages=(
            CompressedPassage(p1, "a", ((0, 1),), 2, 1),
            CompressedPassage(p2, "", (), 1, 0),
        ),
        method="m",
        tokens_before=3,
        tokens_after=1,
    )
    assert result.ratio == 3
    assert result.context() == "a"
    assert result.passages[1].source is p2  # empty passages stay in the result
