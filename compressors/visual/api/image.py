"""The API image compressor: the cheapest legible version of an image for one provider's model.

For a target model (and optionally a token budget) :class:`ImageCompressor`:

1. normalises the image (EXIF orientation, transparency flattened onto white, RGB or L);
2. crops blank margins (background from the corners, a small pad kept) and collapses tall blank
   bands (the empty half of a page); a page with nothing on it is reported as blank;
3. builds candidates: the cleaned image as is, every scale that lands the provider's view exactly
   on a smaller tile grid (tile-grid snapping: 1100 x 768 costs 1105 on GPT-4o, 1024 x 714 costs
   765), scales down to the legibility floor and to the budget, and ``detail="low"``;
4. re-costs every candidate with the model's own formula (:mod:`.costs`) — tile cost is not
   monotone, so cropping can *raise* it — drops the illegible ones (text x-height below
   ``min_x_height_px`` after the provider's own resize) and those that cost more than the
   input, and keeps the cheapest (or, under a budget, the largest that fits);
5. sends no more pixels than the model will see.

The input as sent is always a candidate, so the result never costs more than the input; when it
wins, the original bytes go out untouched.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from ragpress.compressors.visual.api.costs import Detail, ImageCostModel, cost_model_for
from ragpress.compressors.visual.api.layout import (
    DEFAULT_MAX_PIXELS,
    PageLayout,
    analyze_layout,
    collapse_blank_bands,
    decode_image,
    ink_mask,
    normalize_image,
)
from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.hashing import fingerprint_of

try:
    from PIL import Image
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "PIL", extra="visual") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import numpy.typing as npt

__all__ = ["ImageCandidate", "ImageCompressionResult", "ImageCompressor"]

_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True, slots=True)
class ImageCandidate:
    """One version of the image that was costed."""

    label: str
    """How it was made: ``input``, ``cleaned``, ``grid 2x2``, ``floor``, ``budget``, ``low``."""
    width: int
    height: int
    detail: Detail
    tokens: int
    legible: bool
    seen_width: int
    seen_height: int
    content_scale: float
    """Model-seen pixels per input pixel of content: higher keeps more detail."""


@dataclass(frozen=True, slots=True)
class ImageCompressionResult:
    """The chosen image and the numbers behind the choice."""

    data: bytes
    """Encoded image to send (the input bytes themselves when the input won)."""
    media_type: str
    """``image/png``, ``image/jpeg``, ... of :attr:`data`."""
    width: int
    height: int
    detail: Detail
    """``detail`` to send to OpenAI tile models (others ignore it)."""
    tokens_before: int
    """Cost of the input as sent, with its requested detail."""
    tokens_after: int
    blank: bool
    """The image holds nothing but background; callers may drop it."""
    over_budget: bool
    """No legible candidate met the budget; the cheapest legible one was chosen."""
    changed: bool
    """``False`` when :attr:`data` is the input, byte for byte."""
    steps: tuple[str, ...]
    """What was done, e.g. ``("crop margins", "collapse blank bands", "resize 0.62")``."""
    candidates: tuple[ImageCandidate, ...] = field(default=(), hash=False)
    x_height_px: float | None = None
    """Estimated body-text x-height in the input, in pixels (``None``: no text found)."""

    @property
    def saved_tokens(self) -> int:
        """``tokens_before - tokens_after`` (never negative)."""
        return self.tokens_before - self.tokens_after


class ImageCompressor:
    """Cheapest legible image for an API model (crop, collapse, snap, resize, pick ``detail``).

    Args:
        model: Target API model, e.g. ``"gpt-4o"``, ``"claude-sonnet-4-5"``, ``"gemini-2.0-flash"``.
        min_x_height_px: Legibility floor: body-text x-height, in pixels, after the provider's own
            resize (8-10 keeps small print readable).
        min_photo_side_px: For images without detected text lines, the smallest long side the
            model may see (768 keeps photos at OpenAI's high-detail resolution).
        tolerance: Largest per-channel difference from the background counted as blank.
        margin_px: Blank margin left around the content after cropping.
        allow_low_detail: Whether ``detail="low"`` may be chosen (OpenAI tile models only).
        max_pixels: Largest input accepted (decompression-bomb guard).

    Example:
        >>> from ragpress.compressors.visual.api.image import ImageCompressor
        >>> result = ImageCompressor("gpt-4o").compress(png_bytes)  # doctest: +SKIP
        >>> result.tokens_before, result.tokens_after  # doctest: +SKIP
        (765, 425)
    """

    name: ClassVar[str] = "visual_image"
    version: ClassVar[str] = "1"
    config_keys: ClassVar[tuple[str, ...]] = (
        "model",
        "min_x_height_px",
        "min_photo_side_px",
        "tolerance",
        "margin_px",
        "allow_low_detail",
        "max_pixels",
    )

    def __init__(
        self,
        model: str,
        *,
        min_x_height_px: float = 9.0,
        min_photo_side_px: int = 768,
        tolerance: int = 12,
        margin_px: int = 8,
        allow_low_detail: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not min_x_height_px > 0:
            raise ConfigurationError(f"min_x_height_px={min_x_height_px} must be > 0, e.g. 9")
        if not 0 <= tolerance < 255:
            raise ConfigurationError(f"tolerance={tolerance} must be in [0, 255), e.g. 12")
        self.model = model
        self.cost_model: ImageCostModel = cost_model_for(model)
        self.min_x_height_px = min_x_height_px
        self.min_photo_side_px = min_photo_side_px
        self.tolerance = tolerance
        self.margin_px = margin_px
        self.allow_low_detail = allow_low_detail
        self.max_pixels = max_pixels

    def fingerprint(self) -> str:
        """Hash of name, version and configuration (for cache keys)."""
        config = {key: getattr(self, key) for key in self.config_keys}
        return fingerprint_of({"name": self.name, "version": self.version, "config": config})

    def compress(
        self,
        data: bytes,
        *,
        budget_tokens: int | None = None,
        detail: Detail = "auto",
        param: str = "image",
    ) -> ImageCompressionResult:
        """Choose the cheapest legible version of the encoded image ``data``.

        Args:
            data: The encoded input image.
            budget_tokens: Most tokens the image may cost; ``None`` asks for the cheapest
                legible version.
            detail: The ``detail`` the caller asked for; ``"high"`` and ``"auto"`` allow
                ``"low"`` to be chosen when it stays legible, ``"low"`` is kept.
            param: Field name used in error messages.

        Raises:
            RequestValidationError: ``data`` is not a decodable image or is too large.
        """
        source = decode_image(data, max_pixels=self.max_pixels, param=param)
        media_type = Image.MIME.get(source.format or "", "image/png")
        costs = self.cost_model
        tokens_before = costs.tokens(source.width, source.height, detail)
        keep_input = ImageCompressionResult(
            data,
            media_type,
            source.width,
            source.height,
            detail,
            tokens_before,
            tokens_before,
            blank=False,
            over_budget=False,
            changed=False,
            steps=(),
        )
        if getattr(source, "n_frames", 1) > 1 or detail == "low":
            return keep_input  # animations and low-detail requests are left alone
        image = normalize_image(source)
        mask = ink_mask(image, tolerance=self.tolerance)
        layout = analyze_layout(mask)
        if layout.blank:
            return _replace(keep_input, blank=True)
        cleaned, steps = self._clean(image, mask, layout)
        candidates = list(
            self._candidates(
                source.size, layout, cleaned.size, tokens_before, budget_tokens, detail
            )
        )
        best = _choose(candidates, budget_tokens)
        over_budget = budget_tokens is not None and best.tokens > budget_tokens
        if best.label == "input":
            return _replace(
                keep_input,
                candidates=tuple(candidates),
                x_height_px=layout.x_height_px,
                over_budget=over_budget,
            )
        out = cleaned
        if (best.seen_width, best.seen_height) != cleaned.size:
            out = cleaned.resize(
                (best.seen_width, best.seen_height), Image.Resampling.LANCZOS, reducing_gap=3.0
            )
            steps.append(f"resize to {best.seen_width}x{best.seen_height}")
        if best.detail == "low":
            steps.append('detail "low"')
        tokens_after = costs.tokens(out.width, out.height, best.detail)
        if tokens_after > tokens_before:  # a provider resize that is not idempotent; keep input
            return _replace(
                keep_input, candidates=tuple(candidates), x_height_px=layout.x_height_px
            )
        oriented = source.getexif().get(_EXIF_ORIENTATION, 1) != 1
        if steps in ([], ['detail "low"']) and out.size == source.size and not oriented:
            # Same pixels, only the detail changed: send the input bytes themselves.
            encoded, out_type = data, media_type
        else:
            encoded, out_type = _encode(out, text_like=layout.line_height_px is not None)
        return ImageCompressionResult(
            encoded,
            out_type,
            out.width,
            out.height,
            best.detail,
            tokens_before,
            tokens_after,
            blank=False,
            over_budget=over_budget,
            changed=True,
            steps=tuple(steps),
            candidates=tuple(candidates),
            x_height_px=layout.x_height_px,
        )

    def _clean(
        self, image: Image.Image, mask: npt.NDArray[np.bool_], layout: PageLayout
    ) -> tuple[Image.Image, list[str]]:
        """Crop the blank margins and collapse tall blank bands."""
        steps: list[str] = []
        assert layout.content_box is not None
        left, top, right, bottom = layout.content_box
        pad = self.margin_px
        box = (
            max(0, left - pad),
            max(0, top - pad),
            min(image.width, right + pad),
            min(image.height, bottom + pad),
        )
        if box != (0, 0, image.width, image.height):
            image = image.crop(box)
            mask = ink_mask(image, tolerance=self.tolerance)
            steps.append("crop margins")
        line = layout.line_height_px or 20.0
        collapsed = collapse_blank_bands(
            image,
            mask,
            max_gap_px=max(24, round(2 * line)),
            keep_px=max(12, round(line)),
        )
        if collapsed.size != image.size:
            steps.append("collapse blank bands")
        return collapsed, steps

    def _legible(
        self,
        layout: PageLayout,
        input_size: tuple[int, int],
        seen_long_side: float,
        long_side: int,
        input_detail: Detail,
    ) -> bool:
        """Whether text (or, without text, the picture) stays large enough at ``seen_long_side``.

        ``long_side`` is the long side of the image the candidate was made from (its text has the
        input's size). Text already below the floor in the input may not shrink further than the
        provider would shrink the input itself.
        """
        input_seen = self.cost_model.seen_size(*input_size, input_detail)
        input_scale = max(input_seen) / max(input_size)
        scale = seen_long_side / long_side
        x_height = layout.x_height_px
        if x_height is None:
            floor = min(self.min_photo_side_px, max(input_seen))
            return seen_long_side >= floor or scale >= input_scale - 1e-9
        return x_height * scale >= self.min_x_height_px or scale >= input_scale - 1e-9

    def _candidates(
        self,
        input_size: tuple[int, int],
        layout: PageLayout,
        size: tuple[int, int],
        tokens_before: int,
        budget: int | None,
        detail: Detail,
    ) -> Iterator[ImageCandidate]:
        """Every costed version: input, cleaned, grid-snapped, floor, budget and low detail."""
        costs = self.cost_model
        w, h = size
        input_seen = costs.seen_size(*input_size, detail)
        yield ImageCandidate(
            "input",
            *input_size,
            detail,
            tokens_before,
            True,
            *input_seen,
            max(input_seen) / max(input_size),
        )
        long_side = max(w, h)

        def make(label: str, scale: float, cand_detail: Detail = "high") -> ImageCandidate:
            cw, ch = max(1, math.floor(w * scale + 1e-6)), max(1, math.floor(h * scale + 1e-6))
            sw, sh = costs.seen_size(cw, ch, cand_detail)
            legible = self._legible(layout, input_size, max(sw, sh), long_side, detail)
            return ImageCandidate(
                label,
                cw,
                ch,
                cand_detail,
                costs.tokens(cw, ch, cand_detail),
                legible,
                sw,
                sh,
                max(sw, sh) / long_side,
            )

        yield make("cleaned", 1.0)
        scales = {1.0}
        # Tile-grid snapping: the largest scale whose provider view fits a smaller tile grid.
        tile = getattr(costs, "tile_size", None)
        if tile:
            sw, sh = costs.seen_size(w, h)
            view = min(1.0, sw / w)
            for cols in range(1, math.ceil(sw / tile) + 1):
                for rows in range(1, math.ceil(sh / tile) + 1):
                    scale = view * min(1.0, cols * tile / sw, rows * tile / sh)
                    if scale not in scales:
                        scales.add(scale)
                        yield make(f"grid {cols}x{rows}", scale)
        # The legibility floor, and a geometric sweep down to it.
        floor = self._floor_scale(layout, input_size, long_side, detail)
        yield make("floor", floor)
        scale = 1.0
        while scale * 0.85 > floor:
            scale *= 0.85
            yield make(f"scale {scale:.2f}", scale)
        if budget is not None:
            fitted = self._budget_scale(size, budget)
            if fitted is not None:
                yield make("budget", fitted)
        if self.allow_low_detail and costs.supports_low_detail and detail != "low":
            yield make("low", 1.0, "low")

    def _floor_scale(
        self, layout: PageLayout, input_size: tuple[int, int], long_side: int, detail: Detail
    ) -> float:
        """Smallest scale of the cleaned image that stays legible after the provider's resize.

        Text that is already below the floor in the input may shrink only as far as the
        provider would shrink the input itself.
        """
        seen = self.cost_model.seen_size(*input_size, detail)
        input_scale = max(seen) / max(input_size)
        if layout.x_height_px is None:
            target = min(self.min_photo_side_px, max(seen)) / long_side
        else:
            target = self.min_x_height_px / layout.x_height_px
        return min(1.0, target, max(input_scale, 1e-3)) if target > input_scale else target

    def _budget_scale(self, size: tuple[int, int], budget: int) -> float | None:
        """Largest scale (to 1/256) whose cost fits ``budget``; ``None`` if even tiny does not."""
        w, h = size
        costs = self.cost_model

        def cost(scale: float) -> int:
            return costs.tokens(max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))

        if cost(1.0) <= budget:
            return 1.0
        low, high = 0.0, 1.0
        for _ in range(8):
            mid = (low + high) / 2
            low, high = (mid, high) if cost(mid) <= budget else (low, mid)
        return low if low > 0 and cost(low) <= budget else None


def _choose(candidates: list[ImageCandidate], budget: int | None) -> ImageCandidate:
    """The cheapest legible candidate; under a budget, the most detailed one that fits.

    Ties go to more detail, then fewer tokens, then the input itself. Candidates that cost
    more than the input are never chosen, and the input always qualifies.
    """
    ceiling = candidates[0].tokens
    legible = [c for c in candidates if c.legible and c.tokens <= ceiling]
    if budget is not None:
        fitting = [c for c in legible if c.tokens <= budget]
        if fitting:
            return max(
                fitting, key=lambda c: (round(c.content_scale, 6), -c.tokens, c.label == "input")
            )
    return min(legible, key=lambda c: (c.tokens, -round(c.content_scale, 6), c.label != "input"))


def _replace(result: ImageCompressionResult, **changes: object) -> ImageCompressionResult:
    from dataclasses import replace

    return replace(result, **changes)  # type: ignore[arg-type]


def _encode(image: Image.Image, *, text_like: bool) -> tuple[bytes, str]:
    """PNG for text and line art (sharp edges, few colours), JPEG q85 for photos."""
    buffer = io.BytesIO()
    if text_like or image.mode == "L":
        image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue(), "image/png"
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue(), "image/jpeg"
