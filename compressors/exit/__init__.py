"""EXIT: context-aware extractive compression by a small LM's yes/no judgement (extra ``exit``).

Modules:

* :mod:`~ragpress.compressors.exit.compressor` — :class:`ExitCompressor`, the registry entry
  (``"exit"``);
* :mod:`~ragpress.compressors.exit.model` — the classifier LM (base model + LoRA adapter);
* :mod:`~ragpress.compressors.exit.scoring` — the "Yes"/"No" probability of each sentence;
* :mod:`~ragpress.compressors.exit.prompt` — the paper's prompt;
* :mod:`~ragpress.compressors.exit.data` and :mod:`~ragpress.compressors.exit.training` —
  ``ragpress train-exit``: examples from QA records, and LoRA fine-tuning.
"""

from __future__ import annotations

from ragpress.compressors.exit.compressor import ExitCompressor

__all__ = ["ExitCompressor"]
