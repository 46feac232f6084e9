"""OCR route: read the text of a page image offline, and decide whether text is cheaper to send.

The engine is RapidOCR 3 (Apache-2.0) on onnxruntime: its PP-OCRv6 detection and recognition
models ship inside the ``rapidocr`` wheel, so nothing is downloaded at run time. Images are
handed to it as Pillow images only — never as strings, which it would treat as paths or URLs.

:func:`ocr_is_cheaper` applies the route's rule (``docs/compressors/visual.md``, "The OCR
route"): send text instead of the image only when the text costs less than ``0.8 x`` the image,
the recognition is confident (mean >= 0.9) and nearly all ink on the page lies inside
recognised text lines (no charts, photos or diagrams that text would lose). The text then goes
through the text compressors as a :class:`~ragpress.types.Passage`
(:meth:`OcrResult.to_passage`).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ragpress.compressors.visual.api.layout import ink_mask, normalize_image
from ragpress.exceptions import MissingDependencyError
from ragpress.types import Passage

try:
    import numpy as np
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "PIL", extra="visual") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from PIL import Image

__all__ = [
    "OcrDecision",
    "OcrEngine",
    "OcrLine",
    "OcrResult",
    "RapidOcrEngine",
    "character_error_rate",
    "ocr_is_cheaper",
    "read_page",
]

DEFAULT_MAX_TEXT_RATIO = 0.8
DEFAULT_MIN_CONFIDENCE = 0.9
DEFAULT_MIN_INK_COVERAGE = 0.9


@dataclass(frozen=True, slots=True)
class OcrLine:
    """One recognised line of text."""

    text: str
    confidence: float
    """Recognition score in [0, 1]."""
    box: tuple[int, int, int, int]
    """``(left, top, right, bottom)`` in pixels of the image given to the engine."""


@runtime_checkable
class OcrEngine(Protocol):
    """Recognises the text lines of an image."""

    name: str
    """Engine and model name; part of cache fingerprints."""

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        """Text lines of ``image``, in any order."""
        ...


class RapidOcrEngine:
    """RapidOCR 3 with its bundled PP-OCRv6 models, loaded on first use (thread-safe).

    The text-angle classifier is off by default: it turns some upright lines of Latin text
    upside down (on the fixtures here it made the character error rate jump from 0 to 0.1-0.15),
    and pages reach it upright anyway, EXIF orientation applied.

    Args:
        threads: onnxruntime intra-op threads; ``-1`` lets onnxruntime decide.
        angle_classifier: Also classify 180-degree rotated lines (for photographed pages).
        params: Extra RapidOCR parameters (its dotted config keys), for experts.
    """

    name = "rapidocr-ppocrv6-small"

    def __init__(
        self,
        *,
        threads: int = -1,
        angle_classifier: bool = False,
        params: dict[str, Any] | None = None,
    ) -> None:
        self._params = {
            "Global.log_level": "error",
            "Global.use_cls": angle_classifier,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            **(params or {}),
        }
        self._engine: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._engine is None:
                try:
                    from rapidocr import RapidOCR
                except ImportError as exc:
                    raise MissingDependencyError(exc.name or "rapidocr", extra="visual") from exc
                self._engine = RapidOCR(params=self._params)
            return self._engine

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        """Run detection and recognition on ``image`` (converted to RGB)."""
        engine = self._load()
        output = engine(image.convert("RGB"))
        if output.boxes is None or output.txts is None:
            return []
        lines = []
        for box, text, score in zip(output.boxes, output.txts, output.scores, strict=True):
            xs = [float(p[0]) for p in box]
            ys = [float(p[1]) for p in box]
            rect = (int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1)
            lines.append(OcrLine(str(text), float(score), rect))
        return lines


@dataclass(frozen=True, slots=True)
class OcrResult:
    """The text of a page in reading order, and how much to trust it."""

    lines: tuple[OcrLine, ...]
    """Recognised lines, in reading order."""
    text: str
    """Lines joined: a space within a row, a newline between rows, a blank line at gaps."""
    mean_confidence: float
    """Character-weighted mean recognition score (0 when nothing was read)."""
    ink_coverage: float
    """Share of the page's ink that lies inside recognised lines (1 for text-only pages)."""
    engine: str

    def to_passage(self, *, title: str | None = None, id: str | None = None) -> Passage:
        """The text as a passage for the text compressors (engine and scores in metadata)."""
        return Passage(
            self.text,
            title=title,
            id=id,
            metadata={
                "source": "ocr",
                "ocr_engine": self.engine,
                "ocr_confidence": round(self.mean_confidence, 4),
            },
        )


def read_page(image: Image.Image, engine: OcrEngine, *, tolerance: int = 12) -> OcrResult:
    """OCR ``image`` and put the lines in reading order (rows top to bottom, left to right).

    Args:
        image: The page.
        engine: The OCR engine, e.g. :class:`RapidOcrEngine`.
        tolerance: Background tolerance for measuring which ink the lines cover.
    """
    page = normalize_image(image)
    lines = engine.recognize(page)
    ordered = _reading_order(lines)
    text = _join(ordered)
    chars = sum(len(line.text) for line in ordered)
    confidence = sum(line.confidence * len(line.text) for line in ordered) / chars if chars else 0.0
    mask = ink_mask(page, tolerance=tolerance)
    covered = np.zeros_like(mask)
    pad = 3
    for line in ordered:
        left, top, right, bottom = line.box
        covered[max(0, top - pad) : bottom + pad, max(0, left - pad) : right + pad] = True
    ink = int(mask.sum())
    coverage = float((mask & covered).sum() / ink) if ink else 1.0
    return OcrResult(tuple(ordered), text, confidence, coverage, engine.name)


def _reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Group lines into rows by vertical overlap, then sort rows by top and lines by left."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda item: (item.box[1] + item.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if rows:
            top = min(item.box[1] for item in rows[-1])
            bottom = max(item.box[3] for item in rows[-1])
            if top <= centre <= bottom:
                rows[-1].append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda item: item.box[0])]


def _join(lines: Sequence[OcrLine]) -> str:
    """Join ordered lines; a vertical gap taller than a line becomes a paragraph break."""
    if not lines:
        return ""
    heights = sorted(line.box[3] - line.box[1] for line in lines)
    typical = heights[len(heights) // 2]
    parts = [lines[0].text]
    for previous, line in itertools.pairwise(lines):
        same_row = line.box[1] < (previous.box[1] + previous.box[3]) / 2 < line.box[3]
        if same_row:
            parts.append(" ")
        elif line.box[1] - previous.box[3] > typical:
            parts.append("\n\n")
        else:
            parts.append("\n")
        parts.append(line.text)
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class OcrDecision:
    """Whether to send the OCR text instead of the image, and why."""

    use_text: bool
    reason: str
    text_tokens: int
    image_tokens: int


def ocr_is_cheaper(
    result: OcrResult,
    *,
    text_tokens: int,
    image_tokens: int,
    max_ratio: float = DEFAULT_MAX_TEXT_RATIO,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    min_ink_coverage: float = DEFAULT_MIN_INK_COVERAGE,
) -> OcrDecision:
    """Apply the OCR route's rule: cheaper by a margin, confident, and nothing but text.

    Args:
        result: The page's OCR.
        text_tokens: Tokens of ``result.text`` for the target model.
        image_tokens: Tokens of the best image version for the target model.
        max_ratio: Text must cost less than ``max_ratio x image_tokens``.
        min_confidence: Smallest acceptable mean recognition score.
        min_ink_coverage: Smallest share of ink inside recognised lines.
    """

    def decide(use: bool, reason: str) -> OcrDecision:
        return OcrDecision(use, reason, text_tokens, image_tokens)

    if not result.text.strip():
        return decide(False, "no text recognised")
    if result.mean_confidence < min_confidence:
        return decide(False, f"confidence {result.mean_confidence:.2f} < {min_confidence}")
    if result.ink_coverage < min_ink_coverage:
        return decide(
            False,
            f"{1 - result.ink_coverage:.0%} of the ink is outside text (chart, photo or drawing)",
        )
    if text_tokens >= max_ratio * image_tokens:
        return decide(False, f"text {text_tokens} tokens >= {max_ratio} x image {image_tokens}")
    return decide(True, f"text {text_tokens} tokens < {max_ratio} x image {image_tokens}")


def character_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over characters / reference length, whitespace runs collapsed.

    ``0.0`` is a perfect transcription; values can exceed 1 for long garbage hypotheses.
    """
    ref = " ".join(reference.split())
    hyp = " ".join(hypothesis.split())
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)
