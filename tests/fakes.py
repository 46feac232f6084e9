"""Test doubles shared by test modules (import as ``from fakes import ...``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np


class HashingEmbedder:
    """Bag-of-words hashing embedder: same words, similar vectors; no model, no download."""

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.fingerprint = f"hashing-{dimension}"
        self.calls: list[int] = []

    def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage"
    ) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, h % self.dimension] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out
