"""The API image compressor: cheaper, legible, and never more expensive than the input."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from ragpress.compressors.visual.api.costs import MODEL_FAMILIES, Detail, cost_model_for
from ragpress.compressors.visual.api.image import ImageCompressor
from ragpress.exceptions import ConfigurationError, RequestValidationError


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


MODELS = ["gpt-4o", "o3", "gpt-4.1-mini", "gpt-4.1-nano", "claude-sonnet-4", "gemini-2.0"]


def _decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


@pytest.mark.parametrize("model", MODELS)
def test_shipped_pages_get_cheaper_and_the_output_costs_what_is_reported(
    pages: dict[str, bytes], model: str
) -> None:
    compressor = ImageCompressor(model)
    for name, data in pages.items():
        result = compressor.compress(data)
        out = _decoded(result.data)
        assert out.size == (result.width, result.height)
        assert cost_model_for(model).tokens(*out.size, result.detail) == result.tokens_after
        assert result.tokens_after < result.tokens_before, (name, result)


def test_letter_page_crops_its_margins_and_keeps_text_legible(pages: dict[str, bytes]) -> None:
    result = ImageCompressor("gpt-4o").compress(pages["letter_page.png"])
    assert result.tokens_before == 765 and result.tokens_after == 425
    assert "crop margins" in result.steps
    # 11 pt text at 150 dpi: x-height ~10-12 px; the model sees it at >= 9 px.
    assert result.x_height_px is not None and result.x_height_px > 9
    chosen = next(
        c
        for c in result.candidates
        if (c.seen_width, c.seen_height) == (result.width, result.height)
    )
    assert result.x_height_px * chosen.content_scale >= 9


def test_tile_grid_snapping_example_from_the_spec() -> None:
    # 1100 x 768 costs 1105 on GPT-4o; scaled onto the 2 x 2 grid it costs 765.
    image = Image.new("L", (1100, 768), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=40)
    for y in range(0, 768, 60):
        draw.text((0, y), "x" * 60, fill=0, font=font)
    draw.rectangle((0, 0, 1099, 767), outline=0)  # ink up to the edges: nothing to crop
    result = ImageCompressor("gpt-4o").compress(png(image))
    assert result.tokens_before == 1105
    assert result.tokens_after == 765
    assert (result.width, result.height) == (1024, 714)


def test_cropping_that_raises_tile_cost_is_not_chosen() -> None:
    # Tile cost is not monotone: a 2550 x 3300 page costs 765, its 1816 x 1176 content 1105.
    page = Image.new("L", (2550, 3300), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=60)
    for row in range(14):
        draw.text((367, 1062 + row * 84), "Lorem ipsum dolor " * 5, fill=0, font=font)
    result = ImageCompressor("gpt-4o").compress(png(page))
    assert result.tokens_after <= 765
    cleaned = next(c for c in result.candidates if c.label == "cleaned")
    assert cleaned.tokens > result.tokens_before  # the trap exists ...
    assert result.tokens_after < cleaned.tokens  # ... and was avoided


def test_small_text_is_not_shrunk_below_what_the_provider_does(pages: dict[str, bytes]) -> None:
    result = ImageCompressor("gpt-4o").compress(pages["dense_page.png"])
    source = _decoded(pages["dense_page.png"])
    provider_scale = max(cost_model_for("gpt-4o").seen_size(*source.size)) / max(source.size)
    assert result.x_height_px is not None and result.x_height_px * provider_scale < 9
    chosen = next(
        c
        for c in result.candidates
        if (c.seen_width, c.seen_height) == (result.width, result.height)
    )
    assert chosen.content_scale >= provider_scale - 1e-6


def test_low_detail_is_chosen_for_large_text() -> None:
    image = Image.new("L", (1024, 1024), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=90)
    for row in range(8):
        draw.text((20, 20 + row * 120), "BIG TEXT", fill=0, font=font)
    result = ImageCompressor("gpt-4o").compress(png(image))
    assert result.detail == "low" and result.tokens_after == 85
    assert max(result.width, result.height) <= 512  # no more pixels than the model sees
    strict = ImageCompressor("gpt-4o", allow_low_detail=False).compress(png(image))
    assert strict.detail == "high"


def test_budget_picks_the_most_detailed_version_that_fits(pages: dict[str, bytes]) -> None:
    compressor = ImageCompressor("claude-sonnet-4")
    cheapest = compressor.compress(pages["slide.png"])
    roomy = compressor.compress(pages["slide.png"], budget_tokens=600)
    assert cheapest.tokens_after < roomy.tokens_after <= 600
    tight = compressor.compress(pages["slide.png"], budget_tokens=20)
    assert tight.over_budget and tight.tokens_after == cheapest.tokens_after


def test_blank_image_is_reported_and_left_alone() -> None:
    data = png(Image.new("RGB", (800, 600), (250, 250, 250)))
    result = ImageCompressor("gpt-4o").compress(data)
    assert result.blank and not result.changed and result.data == data


def test_input_bytes_pass_through_when_nothing_is_cheaper() -> None:
    data = png(Image.effect_noise((300, 200), 80).convert("RGB"))
    result = ImageCompressor("gemini-2.0").compress(data)
    assert not result.changed and result.data == data and result.tokens_after == 258


def test_small_photo_goes_low_detail_with_its_own_bytes() -> None:
    # At most 512 px: OpenAI's low-detail view holds every pixel, for 85 tokens instead of 255.
    data = png(Image.effect_noise((300, 200), 80).convert("RGB"))
    result = ImageCompressor("gpt-4o").compress(data)
    assert result.detail == "low" and result.tokens_after == 85 and result.data == data


def test_low_detail_request_is_kept() -> None:
    data = png(Image.effect_noise((2000, 2000), 60))
    result = ImageCompressor("gpt-4o").compress(data, detail="low")
    assert result.tokens_before == result.tokens_after == 85 and not result.changed


def test_transparency_and_exif_are_normalised() -> None:
    image = Image.new("RGBA", (600, 400), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((100, 100, 300, 200), fill=(0, 0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif)
    result = ImageCompressor("gpt-4o").compress(buffer.getvalue())
    assert result.changed and result.tokens_after < result.tokens_before
    out = _decoded(result.data)
    assert out.mode in ("RGB", "L")
    assert out.height > out.width  # EXIF rotation applied before cropping


def test_bad_input_is_refused_with_the_field_name() -> None:
    with pytest.raises(RequestValidationError, match=r"messages\[0\].*could not be decoded"):
        ImageCompressor("gpt-4o").compress(b"not an image", param="messages[0]")
    with pytest.raises(RequestValidationError, match="above the limit"):
        ImageCompressor("gpt-4o", max_pixels=100).compress(png(Image.new("L", (20, 20))))
    with pytest.raises(ConfigurationError, match="min_x_height_px"):
        ImageCompressor("gpt-4o", min_x_height_px=0)


def test_fingerprint_changes_with_configuration() -> None:
    assert ImageCompressor("gpt-4o").fingerprint() != ImageCompressor("gpt-4o-mini").fingerprint()
    assert ImageCompressor("gpt-4o").fingerprint() == ImageCompressor("gpt-4o").fingerprint()


@st.composite
def images(draw: st.DrawFn) -> Image.Image:
    width = draw(st.integers(8, 2600))
    height = draw(st.integers(8, 2600))
    background = draw(st.sampled_from([255, 240, 0]))
    image = Image.new("L", (width, height), background)
    pen = ImageDraw.Draw(image)
    for _ in range(draw(st.integers(0, 6))):
        x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
        x1, y1 = draw(st.integers(x0, width - 1)), draw(st.integers(y0, height - 1))
        pen.rectangle((x0, y0, x1, y1), fill=draw(st.integers(0, 255)))
    if draw(st.booleans()):
        size = draw(st.integers(6, 60))
        font = ImageFont.load_default(size=size)
        for row in range(draw(st.integers(1, 12))):
            pen.text((4, 4 + row * size * 1.5), "text line " * 8, fill=255 - background, font=font)
    return image


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image=images(),
    model=st.sampled_from(sorted(MODEL_FAMILIES)),
    budget=st.one_of(st.none(), st.integers(0, 3000)),
    detail=st.sampled_from(["auto", "high", "low"]),
)
def test_no_result_costs_more_than_the_input(
    image: Image.Image, model: str, budget: int | None, detail: Detail
) -> None:
    result = ImageCompressor(model).compress(png(image), budget_tokens=budget, detail=detail)
    costs = cost_model_for(model)
    assert result.tokens_before == costs.tokens(*image.size, detail)
    out = _decoded(result.data)
    assert costs.tokens(*out.size, result.detail) == result.tokens_after
    assert result.tokens_after <= result.tokens_before
    for candidate in result.candidates:
        assert costs.tokens(candidate.width, candidate.height, candidate.detail) == candidate.tokens
    if budget is not None and not result.over_budget:
        assert result.tokens_after <= budget or result.tokens_after == result.tokens_before
