"""What an image costs in prompt tokens at each API provider, computed the way the provider does.

Each cost model answers two questions for an image of ``width`` x ``height`` pixels:

* :meth:`ImageCostModel.tokens` — the prompt tokens the provider bills for it;
* :meth:`ImageCostModel.seen_size` — the pixel size the provider resizes it to before the model
  looks at it (sending more pixels than that costs bytes and gains nothing).

Formulas, with the providers' worked examples that ``tests/unit/compressors/visual/test_costs.py``
checks:

* **OpenAI tile models** (GPT-4o, 4.1, 4.5, o1, o3): ``detail="low"`` costs ``base``; otherwise
  the image is fitted inside 2048 x 2048, its short side scaled down to 768, and it costs
  ``base + tile * ceil(w / 512) * ceil(h / 512)``. 1024 x 1024 -> 765; 2048 x 4096 -> 1105.
* **OpenAI patch models** (GPT-4.1-mini, 4.1-nano, o4-mini): 32-pixel patches, at most 1536 of
  them (the image is scaled down so a whole number of patches fits), times a per-model
  multiplier. 1024 x 1024 -> 1024 patches; 1800 x 2400 -> 1452 patches.
* **Anthropic**: ``ceil(w * h / 750)`` after scaling down to a long edge of 1568 px and about
  1.19 megapixels (1092 x 1092 -> 1590; 1000 x 1000 -> 1334; 200 x 200 -> 54). Anthropic calls
  this an estimate; ``count_tokens`` is exact.
* **Gemini 2.0**: both sides <= 384 px cost 258 tokens; larger images are tiled at 768 x 768,
  258 tokens per tile.

Rates marked "unverified" in :data:`MODEL_FAMILIES` come from third-party calculators, not from
the provider's documentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ragpress.exceptions import RequestValidationError

__all__ = [
    "MODEL_FAMILIES",
    "AnthropicCost",
    "Detail",
    "GeminiCost",
    "ImageCostModel",
    "OpenAIPatchCost",
    "OpenAITileCost",
    "cost_model_for",
]

Detail = Literal["low", "high", "auto"]
"""OpenAI's ``detail`` values; ``"auto"`` is costed as ``"high"`` (the provider may pick it)."""


@runtime_checkable
class ImageCostModel(Protocol):
    """Token cost of one image at one provider."""

    @property
    def provider(self) -> str:
        """``"openai"``, ``"anthropic"`` or ``"gemini"``."""
        ...

    @property
    def supports_low_detail(self) -> bool:
        """Whether ``detail="low"`` changes the cost (OpenAI tile models only)."""
        ...

    def tokens(self, width: int, height: int, detail: Detail = "high") -> int:
        """Prompt tokens billed for an image of ``width`` x ``height`` pixels."""
        ...

    def seen_size(self, width: int, height: int, detail: Detail = "high") -> tuple[int, int]:
        """The size the provider resizes the image to before the model sees it."""
        ...


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise RequestValidationError(
            f"image size {width}x{height} is empty; an image needs at least 1x1 pixels",
            param="image",
        )


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    """``(width, height) * scale``, floored, at least 1 pixel each (scale <= 1).

    The tiny epsilon keeps ``3000 * (1568 / 3000)`` at 1568 despite binary floating point.
    """
    if scale >= 1:
        return width, height
    return (
        max(1, math.floor(width * scale + 1e-6)),
        max(1, math.floor(height * scale + 1e-6)),
    )


@dataclass(frozen=True, slots=True)
class OpenAITileCost:
    """OpenAI's 512-pixel tile formula (GPT-4o, 4.1, 4.5, o1, o3)."""

    base: int = 85
    """Tokens every image pays; the whole cost at ``detail="low"``."""
    tile: int = 170
    """Tokens per 512 x 512 tile at ``detail="high"``."""
    max_side: int = 2048
    short_side: int = 768
    tile_size: int = 512
    low_side: int = 512
    """At ``detail="low"`` the model sees the image fitted inside ``low_side`` squared."""
    provider: str = "openai"
    supports_low_detail: bool = True

    def seen_size(self, width: int, height: int, detail: Detail = "high") -> tuple[int, int]:
        """Fit inside ``max_side``², then scale the short side down to ``short_side``."""
        _check_size(width, height)
        if detail == "low":
            return _scaled(width, height, self.low_side / max(width, height))
        w, h = _scaled(width, height, self.max_side / max(width, height))
        return _scaled(w, h, self.short_side / min(w, h))

    def tokens(self, width: int, height: int, detail: Detail = "high") -> int:
        """``base`` at low detail, else ``base + tile * tiles``."""
        if detail == "low":
            _check_size(width, height)
            return self.base
        w, h = self.seen_size(width, height, detail)
        return self.base + self.tile * math.ceil(w / self.tile_size) * math.ceil(h / self.tile_size)


@dataclass(frozen=True, slots=True)
class OpenAIPatchCost:
    """OpenAI's 32-pixel patch formula (GPT-4.1-mini, 4.1-nano, o4-mini); ``detail`` is ignored."""

    multiplier: float
    """Tokens per patch for the model (e.g. 1.62 for GPT-4.1-mini)."""
    patch: int = 32
    max_patches: int = 1536
    provider: str = "openai"
    supports_low_detail: bool = False

    def patches(self, width: int, height: int) -> int:
        """Patches the model sees after OpenAI's scale-down."""
        w, h = self.seen_size(width, height)
        return math.ceil(w / self.patch) * math.ceil(h / self.patch)

    def seen_size(self, width: int, height: int, detail: Detail = "high") -> tuple[int, int]:
        """Scale down so that at most ``max_patches`` whole patches cover the image."""
        _check_size(width, height)
        p = self.patch
        if math.ceil(width / p) * math.ceil(height / p) <= self.max_patches:
            return width, height
        # OpenAI's recipe: shrink to the patch budget by area, then shrink a little more so a
        # whole number of patches fits along the tighter side.
        shrink = math.sqrt(p * p * self.max_patches / (width * height))
        shrink *= min(
            math.floor(width * shrink / p) / (width * shrink / p),
            math.floor(height * shrink / p) / (height * shrink / p),
        )
        return _scaled(width, height, shrink)

    def tokens(self, width: int, height: int, detail: Detail = "high") -> int:
        """``ceil(patches * multiplier)``."""
        return math.ceil(self.patches(width, height) * self.multiplier)


@dataclass(frozen=True, slots=True)
class AnthropicCost:
    """Anthropic's area formula: about ``w * h / 750`` tokens after its scale-down."""

    pixels_per_token: int = 750
    max_long_edge: int = 1568
    max_pixels: int = 1092 * 1092
    """Area above which Anthropic scales images down (1092² ≈ 1590 tokens, its 1:1 maximum)."""
    provider: str = "anthropic"
    supports_low_detail: bool = False

    def seen_size(self, width: int, height: int, detail: Detail = "high") -> tuple[int, int]:
        """Scale down to ``max_long_edge`` and ``max_pixels``, keeping the aspect ratio."""
        _check_size(width, height)
        scale = min(
            1.0,
            self.max_long_edge / max(width, height),
            math.sqrt(self.max_pixels / (width * height)),
        )
        return _scaled(width, height, scale)

    def tokens(self, width: int, height: int, detail: Detail = "high") -> int:
        """``ceil(w * h / 750)`` of the scaled size."""
        w, h = self.seen_size(width, height)
        return math.ceil(w * h / self.pixels_per_token)


@dataclass(frozen=True, slots=True)
class GeminiCost:
    """Gemini 2.0: 258 tokens for a small image, else 258 per 768 x 768 tile."""

    tile_tokens: int = 258
    small_side: int = 384
    tile_size: int = 768
    provider: str = "gemini"
    supports_low_detail: bool = False

    def seen_size(self, width: int, height: int, detail: Detail = "high") -> tuple[int, int]:
        """Gemini does not publish a scale-down; the image is costed as sent."""
        _check_size(width, height)
        return width, height

    def tokens(self, width: int, height: int, detail: Detail = "high") -> int:
        """258 when both sides are <= 384 px, else 258 per started 768 x 768 tile."""
        _check_size(width, height)
        if width <= self.small_side and height <= self.small_side:
            return self.tile_tokens
        tiles = math.ceil(width / self.tile_size) * math.ceil(height / self.tile_size)
        return self.tile_tokens * tiles


_GPT4O = OpenAITileCost(base=85, tile=170)
_O_SERIES = OpenAITileCost(base=75, tile=150)

MODEL_FAMILIES: dict[str, ImageCostModel] = {
    # Longest matching prefix wins, so "gpt-4o-mini" beats "gpt-4o" and "gpt-4.1-mini" beats
    # "gpt-4.1".
    "gpt-4o": _GPT4O,
    "chatgpt-4o": _GPT4O,
    "gpt-4.1": _GPT4O,
    "gpt-4.5": _GPT4O,
    "o1": _O_SERIES,
    "o3": _O_SERIES,
    "gpt-5": OpenAITileCost(base=70, tile=140),  # unverified (calculators)
    "gpt-4o-mini": OpenAITileCost(base=2833, tile=5667),  # unverified (calculators)
    "gpt-4.1-mini": OpenAIPatchCost(multiplier=1.62),
    "gpt-4.1-nano": OpenAIPatchCost(multiplier=2.46),
    "o4-mini": OpenAIPatchCost(multiplier=1.72),
    "claude": AnthropicCost(),
    "anthropic": AnthropicCost(),
    "gemini": GeminiCost(),
}
"""Model-name prefix -> cost model. Dated snapshots (``gpt-4o-2024-08-06``) match by prefix."""


def cost_model_for(model: str) -> ImageCostModel:
    """The cost model of ``model``, matched by the longest known name prefix.

    Args:
        model: An API model name such as ``"gpt-4o-2024-08-06"``, ``"claude-sonnet-4-5"`` or
            ``"gemini-2.0-flash"``; a ``provider/`` prefix (``"openai/gpt-4o"``) is ignored.

    Raises:
        RequestValidationError: No known family matches ``model``.
    """
    name = model.strip().lower().rsplit("/", 1)[-1]
    matches = [prefix for prefix in MODEL_FAMILIES if name.startswith(prefix)]
    if not matches:
        raise RequestValidationError(
            f"no image cost model for model={model!r}; known model families: "
            f"{sorted(MODEL_FAMILIES)} (pass one of them, or a dated snapshot of one)",
            param="model",
        )
    return MODEL_FAMILIES[max(matches, key=len)]
