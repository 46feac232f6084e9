"""``target_ratio="auto"``: a budget sized to the evidence, between min_ratio and max_ratio."""

from __future__ import annotations

import pytest

from ragpress.exceptions import RequestValidationError
from ragpress.middleware.serving.protocols.openai import RagpressOptions
from ragpress.types import AUTO, CompressionOptions


def test_auto_bounds_default_and_custom() -> None:
    auto = CompressionOptions(target_ratio=AUTO)
    assert auto.adaptive and auto.ratio_bounds == (2.0, 20.0)
    assert auto.budget(1000) == 500  # the ceiling: what a compressor that cannot adapt keeps
    assert auto.auto_bounds(1000) == (50, 500)
    tight = CompressionOptions(target_ratio="auto", min_ratio=4, max_ratio=8)
    assert tight.auto_bounds(800) == (100, 200)
    assert tight.fixed() == CompressionOptions(target_ratio=4.0)
    assert CompressionOptions(target_ratio=3).fixed() == CompressionOptions(target_ratio=3)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"target_ratio": 3, "min_ratio": 2}, "min_ratio"),
        ({"max_ratio": 9}, "max_ratio"),
        ({"target_ratio": "auto", "min_ratio": 0.5}, "min_ratio"),
        ({"target_ratio": "auto", "min_ratio": 9, "max_ratio": 3}, "min_ratio"),
        ({"target_ratio": "often"}, "target_ratio"),
    ],
)
def test_bad_auto_bounds_name_the_field(kwargs, param) -> None:
    with pytest.raises(RequestValidationError) as caught:
        CompressionOptions(**kwargs)
    assert caught.value.param == param


def test_resolve_carries_the_bounds_with_the_budget() -> None:
    defaults = CompressionOptions(target_ratio=AUTO, max_ratio=10)
    assert CompressionOptions().resolve(defaults) == defaults
    assert CompressionOptions(target_ratio=3).resolve(defaults).max_ratio is None


def test_the_wire_accepts_auto_and_names_bad_fields() -> None:
    options = RagpressOptions.model_validate(
        {"target_ratio": "auto", "max_ratio": 12}
    ).to_compression_options(param_prefix="ragpress.")
    assert options.adaptive and options.ratio_bounds == (2.0, 12.0)
    with pytest.raises(RequestValidationError) as caught:
        RagpressOptions.model_validate({"min_ratio": 3}).to_compression_options(
            param_prefix="ragpress."
        )
    assert caught.value.param == "ragpress.min_ratio"
