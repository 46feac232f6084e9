"""Compressors: the base class and the registry.

Each family is a subpackage (:mod:`~ragpress.compressors.llmlingua2`,
:mod:`~ragpress.compressors.exit`, :mod:`~ragpress.compressors.compllm`,
:mod:`~ragpress.compressors.visual`); the training-free default is
:mod:`~ragpress.compressors.sentence_selection`. Heavy implementations are imported from their
own module, e.g.
``from ragpress.compressors.sentence_selection import SentenceSelectionCompressor``, or by name
through :func:`load_compressor`.
"""

from __future__ import annotations

from ragpress.compressors.base import BaseCompressor
from ragpress.compressors.registry import (
    available_compressors,
    compressor_class,
    load_compressor,
)

__all__ = ["BaseCompressor", "available_compressors", "compressor_class", "load_compressor"]
