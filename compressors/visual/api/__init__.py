"""Images sent to API LLMs: exact token costs, image compression, PDFs, OCR (extra ``visual``).

:mod:`~ragpress.compressors.visual.api.costs` is pure Python and re-exported here; the others
are imported by name, e.g. ``from ragpress.compressors.visual.api.image import ImageCompressor``:

* :mod:`~ragpress.compressors.visual.api.image` — resize / crop / re-encode within a budget;
* :mod:`~ragpress.compressors.visual.api.ocr` — the OCR route (RapidOCR, offline);
* :mod:`~ragpress.compressors.visual.api.layout` — text-region geometry for crops;
* :mod:`~ragpress.compressors.visual.api.pdf` — PDF pages to images (PDFium);
* :mod:`~ragpress.compressors.visual.api.documents` — whole documents (PDF or images);
* :mod:`~ragpress.compressors.visual.api.parts` — the chat-part policy the proxy calls.
"""

from __future__ import annotations

from ragpress.compressors.visual.api.costs import (
    MODEL_FAMILIES,
    AnthropicCost,
    GeminiCost,
    ImageCostModel,
    OpenAIPatchCost,
    OpenAITileCost,
    cost_model_for,
)

__all__ = [
    "MODEL_FAMILIES",
    "AnthropicCost",
    "GeminiCost",
    "ImageCostModel",
    "OpenAIPatchCost",
    "OpenAITileCost",
    "cost_model_for",
]
