"""LLMLingua-2: a token classifier decides, word by word, what survives (extra ``llmlingua2``).

Modules:

* :mod:`~ragpress.compressors.llmlingua2.compressor` — :class:`LLMLingua2Compressor`, the
  registry entry (``"llmlingua2"``);
* :mod:`~ragpress.compressors.llmlingua2.model` — loading the classifier and batching its
  forward passes (torch or ONNX Runtime);
* :mod:`~ragpress.compressors.llmlingua2.words` — tokenising, chunking and pooling token
  probabilities into words;
* :mod:`~ragpress.compressors.llmlingua2.compat` — the reference-exact mode
  (``llmlingua==0.2.2``);
* :mod:`~ragpress.compressors.llmlingua2.quantize` — int8 dynamic quantization of the ONNX model;
* :mod:`~ragpress.compressors.llmlingua2.labels` — word labels from (original, compressed) pairs;
* :mod:`~ragpress.compressors.llmlingua2.distill` and
  :mod:`~ragpress.compressors.llmlingua2.training` — ``ragpress distill``: a teacher's
  compressions become labels, and a classifier is trained on them.
"""

from __future__ import annotations

from ragpress.compressors.llmlingua2.compressor import LLMLingua2Compressor

__all__ = ["LLMLingua2Compressor"]
