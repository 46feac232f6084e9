"""Raster analysis of page-like images: decoding, normalising, blank margins and bands, text size.

Everything here is plain Pillow + numpy and has no notion of token cost; :mod:`.image` builds the
candidates and costs them.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError, RequestValidationError

try:
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "PIL", extra="visual") from exc

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "PageLayout",
    "analyze_layout",
    "collapse_blank_bands",
    "decode_image",
    "ink_mask",
    "normalize_image",
]

DEFAULT_MAX_PIXELS = 50_000_000
"""Images above this many pixels are refused before decoding (decompression bombs)."""
X_HEIGHT_PER_LINE = 0.45
"""x-height as a share of the height of a line of ink (ascender to descender) in Latin text."""


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, param: str = "image"
) -> Image.Image:
    """Decode image bytes, refusing what is not an image or is too large to decode safely.

    Args:
        data: The encoded image (PNG, JPEG, WebP, GIF, ...).
        max_pixels: Largest width x height accepted.
        param: Field name used in error messages.

    Raises:
        RequestValidationError: Not a decodable image, or larger than ``max_pixels``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise RequestValidationError(
                    f"{param} is {width}x{height} = {width * height} pixels, above the limit of "
                    f"{max_pixels}; send a smaller image",
                    param=param,
                )
            image.load()
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
        OSError,
        SyntaxError,
        ValueError,
    ) as exc:
        if isinstance(exc, RequestValidationError):
            raise
        raise RequestValidationError(
            f"{param} could not be decoded as an image ({exc}); send PNG, JPEG, WebP or GIF bytes",
            param=param,
        ) from exc
    return image


def normalize_image(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation, flatten transparency onto white, convert to RGB or L."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        image = flat
    if image.mode in ("1", "L", "I;16", "I", "F"):
        return image.convert("L")
    return image.convert("RGB")


def ink_mask(image: Image.Image, *, tolerance: int = 12) -> npt.NDArray[np.bool_]:
    """Pixels that differ from the background (the median corner colour) by more than ``tolerance``.

    Args:
        image: A normalised ``RGB`` or ``L`` image.
        tolerance: Largest per-channel difference still counted as background.

    Returns:
        A ``(height, width)`` boolean array, ``True`` where there is ink.
    """
    pixels = np.asarray(image, dtype=np.int16)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    corners = np.stack([pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]])
    background = np.median(corners, axis=0)
    diff = np.abs(pixels - background).max(axis=2)
    return np.asarray(diff > tolerance)


@dataclass(frozen=True, slots=True)
class PageLayout:
    """Where the content of an image is, and how large its text is."""

    width: int
    height: int
    content_box: tuple[int, int, int, int] | None
    """``(left, top, right, bottom)`` of everything that is not background; ``None`` if blank."""
    line_height_px: float | None
    """Median height of the text lines, in pixels; ``None`` when no text-like rows were found."""
    ink_share: float
    """Share of pixels that are ink (text pages: ~0.02-0.15; photos: close to 1)."""

    @property
    def blank(self) -> bool:
        """The image holds nothing but background."""
        return self.content_box is None

    @property
    def x_height_px(self) -> float | None:
        """Estimated x-height of the body text, in pixels of this image."""
        if self.line_height_px is None:
            return None
        return self.line_height_px * X_HEIGHT_PER_LINE


def analyze_layout(mask: npt.NDArray[np.bool_]) -> PageLayout:
    """Content box, text line height and ink share of an ink mask.

    Text lines show up as runs of rows with ink separated by blank rows. Their median height is
    the line height, but only when the runs look like text: at least three of them, each far
    shorter than the page. A photo is one tall run, so it has no line height.
    """
    height, width = mask.shape
    rows: npt.NDArray[np.bool_] = np.asarray(mask.any(axis=1), dtype=bool)
    cols: npt.NDArray[np.bool_] = np.asarray(mask.any(axis=0), dtype=bool)
    if not rows.any():
        return PageLayout(width, height, None, None, 0.0)
    top = int(np.argmax(rows))
    bottom = int(height - np.argmax(rows[::-1]))
    left = int(np.argmax(cols))
    right = int(width - np.argmax(cols[::-1]))
    runs = [b - a for a, b in _runs(rows[top:bottom])]
    text_runs = [r for r in runs if 3 <= r <= max(8, height // 8)]
    line = float(np.median(text_runs)) if len(text_runs) >= 3 else None
    return PageLayout(width, height, (left, top, right, bottom), line, float(mask.mean()))


def _runs(flags: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Half-open ``[start, end)`` ranges where ``flags`` is ``True``."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


def collapse_blank_bands(
    image: Image.Image, mask: npt.NDArray[np.bool_], *, max_gap_px: int, keep_px: int
) -> Image.Image:
    """Shorten every horizontal blank band taller than ``max_gap_px`` to ``keep_px`` rows.

    Paragraph and section breaks survive (``keep_px`` of them remain); the empty half of a
    half-filled page does not.
    """
    rows: npt.NDArray[np.bool_] = np.asarray(mask.any(axis=1), dtype=bool)
    blank = _runs(~rows)
    if not any(b - a > max_gap_px for a, b in blank):
        return image
    keep = np.ones(rows.shape[0], dtype=np.bool_)
    for a, b in blank:
        if b - a > max_gap_px:
            middle = a + (b - a - keep_px) // 2
            keep[a:middle] = False
            keep[middle + keep_px : b] = False
    pixels = np.asarray(image)[keep]
    return Image.fromarray(np.ascontiguousarray(pixels))
