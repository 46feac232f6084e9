"""Image token costs against the providers' own worked examples."""

from __future__ import annotations

import pytest

from ragpress.compressors.visual.api.costs import (
    AnthropicCost,
    Detail,
    GeminiCost,
    OpenAIPatchCost,
    OpenAITileCost,
    cost_model_for,
)
from ragpress.exceptions import RequestValidationError


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        # OpenAI vision guide, GPT-4o: "a 1024 x 1024 square image in detail: high mode costs 765".
        ((1024, 1024), "high", 765),
        # "a 2048 x 4096 image in detail: high mode costs 1105".
        ((2048, 4096), "high", 1105),
        # "a 4096 x 8192 image in detail: low most costs 85 tokens".
        ((4096, 8192), "low", 85),
        # Tile-grid snapping: 1100 x 768 costs 1105, snapped to 1024 x 714 it costs 765.
        ((1100, 768), "high", 1105),
        ((1024, 714), "high", 765),
        # A page scan, and the crop that costs more (tile cost is not monotone).
        ((2550, 3300), "high", 765),
        ((1816, 1176), "high", 1105),
        ((512, 512), "high", 255),
        ((100, 80), "auto", 255),
    ],
)
def test_openai_tile_examples(size: tuple[int, int], detail: Detail, tokens: int) -> None:
    assert cost_model_for("gpt-4o").tokens(*size, detail) == tokens


def test_openai_tile_seen_size_follows_the_documented_steps() -> None:
    gpt4o = OpenAITileCost()
    assert gpt4o.seen_size(2048, 4096) == (768, 1536)
    assert gpt4o.seen_size(1024, 1024) == (768, 768)
    assert gpt4o.seen_size(300, 200) == (300, 200)  # never scaled up
    assert gpt4o.seen_size(4096, 2048, "low") == (512, 256)


def test_o_series_rates() -> None:
    assert cost_model_for("o1").tokens(1024, 1024) == 75 + 150 * 4
    assert cost_model_for("o3-2025-04-16").tokens(1024, 1024, "low") == 75


@pytest.mark.parametrize(
    ("size", "patches"),
    [
        # OpenAI vision guide: "1024 x 1024 image is 1024 tokens" (patches) ...
        ((1024, 1024), 1024),
        # ... "1800 x 2400 image ... resized to 1056 x 1408 ... 1452 tokens" (patches).
        ((1800, 2400), 1452),
        ((32, 32), 1),
        ((33, 1), 2),
    ],
)
def test_openai_patch_examples(size: tuple[int, int], patches: int) -> None:
    assert OpenAIPatchCost(multiplier=1.0).patches(*size) == patches


def test_openai_patch_multipliers_by_model() -> None:
    assert cost_model_for("gpt-4.1-mini").tokens(1024, 1024) == 1659  # ceil(1024 * 1.62)
    assert cost_model_for("gpt-4.1-nano-2025-04-14").tokens(1024, 1024) == 2520  # * 2.46
    assert cost_model_for("o4-mini").tokens(1800, 2400) == 2498  # ceil(1452 * 1.72)
    assert OpenAIPatchCost(multiplier=1.0).seen_size(1800, 2400) in {(1055, 1407), (1056, 1408)}


@pytest.mark.parametrize(
    ("size", "tokens"),
    [
        # Anthropic vision docs' table: 200x200 ~54, 1000x1000 ~1334, 1092x1092 ~1590.
        ((200, 200), 54),
        ((1000, 1000), 1334),
        ((1092, 1092), 1590),
    ],
)
def test_anthropic_examples(size: tuple[int, int], tokens: int) -> None:
    assert cost_model_for("claude-sonnet-4-5").tokens(*size) == tokens


def test_anthropic_scales_large_images_down() -> None:
    claude = AnthropicCost()
    w, h = claude.seen_size(4000, 3000)
    assert max(w, h) <= 1568 and w * h <= 1092 * 1092
    assert claude.tokens(4000, 3000) <= 1590
    assert claude.seen_size(3000, 200) == (1568, 104)  # long-edge limit


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((384, 384), 258), ((200, 300), 258), ((768, 768), 258), ((1000, 1000), 4 * 258)],
)
def test_gemini_examples(size: tuple[int, int], tokens: int) -> None:
    assert GeminiCost().tokens(*size) == tokens
    assert cost_model_for("gemini-2.0-flash").tokens(*size) == tokens


def test_longest_prefix_wins_and_provider_prefix_is_ignored() -> None:
    assert cost_model_for("gpt-4o-mini").tokens(10, 10, "low") == 2833
    assert cost_model_for("openai/gpt-4o").tokens(10, 10, "low") == 85
    assert isinstance(cost_model_for("GPT-4.1-mini"), OpenAIPatchCost)


def test_unknown_model_names_the_known_families() -> None:
    with pytest.raises(RequestValidationError, match="known model families") as info:
        cost_model_for("llama-3")
    assert info.value.param == "model"


def test_empty_image_is_rejected() -> None:
    with pytest.raises(RequestValidationError, match="0x5"):
        cost_model_for("gpt-4o").tokens(0, 5)
