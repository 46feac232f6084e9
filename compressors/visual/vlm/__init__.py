"""Visual tokens inside local vision-language models: pruned or merged (extra ``vlm``).

* :mod:`~ragpress.compressors.visual.vlm.reducers` — token reducers as plain torch functions
  (DivPrune, VTC-CLS, VisionZip, ToMe-style merging, pooling);
* :mod:`~ragpress.compressors.visual.vlm.budgets` — splitting a token budget over images/crops;
* :mod:`~ragpress.compressors.visual.vlm.hooks` — :func:`prune_vlm_inputs` for Hugging Face
  LLaVA and Qwen2-VL, between the vision tower and the language model;
* :mod:`~ragpress.compressors.visual.vlm.llava_next` — the LLaVA-NeXT (AnyRes) path.
"""

from __future__ import annotations

__all__: list[str] = []
