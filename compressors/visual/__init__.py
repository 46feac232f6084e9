"""Visual compressors for multimodal documents, in two subpackages (see ``docs/guides/visual.md``).

* :mod:`ragpress.compressors.visual.api` — **images sent to API LLMs**: exact token costs, the
  image compressor, the OCR route, PDF rendering and the chat-part policy the proxy calls.
  Extra: ``visual``.
* :mod:`ragpress.compressors.visual.vlm` — **visual tokens inside local VLMs**: token reducers
  and Hugging Face LLaVA / LLaVA-NeXT / Qwen2-VL hooks. Extra: ``vlm``.
"""

from __future__ import annotations

__all__: list[str] = []
