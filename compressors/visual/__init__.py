"""Visual compressors for multimodal documents.

Two cases (see ``shared/docs/visual.md``):

* **Images sent to API LLMs** — exact token costs (:mod:`.costs`, pure Python and re-exported
  here), the image compressor (:mod:`.image`), the OCR route (:mod:`.ocr`), PDF rendering
  (:mod:`.pdf`) and the chat-part policy the proxy calls (:mod:`.parts`). Extra: ``visual``.
* **Visual tokens inside local VLMs** — token reducers as plain torch functions
  (:mod:`.reducers`, :mod:`.budgets`) and Hugging Face LLaVA / LLaVA-NeXT / Qwen2-VL hooks that
  prune between the vision tower and the language model (:mod:`.hooks`,
  :mod:`.hooks_llava_next`). Extra: ``vlm``.

Heavy modules are imported by name, e.g.
``from ragpress.compressors.visual.image import ImageCompressor``.
"""

from __future__ import annotations

from ragpress.compressors.visual.costs import (
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
