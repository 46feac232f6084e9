"""Test doubles shared by test modules (import as ``from tests.support.fakes import ...``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ragpress.compressors.base import BaseCompressor


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


class EchoPipeline:
    """A pipeline that keeps every document whole: the batch framework's cost with no model.

    The class itself is a picklable pipeline factory (``EchoPipeline(device=...)``), so worker
    processes can build one.
    """

    def __init__(self, *, device: str | None = None) -> None:
        self.device = device

    async def acompress_many(self, requests):
        return [self._echo(r.passages) for r in requests]

    async def acompress(self, query, passages, options=None):
        return self._echo(passages)

    async def aclose(self) -> None:
        pass

    @staticmethod
    def _echo(passages):
        from ragpress.types import CompressedPassage, CompressionResult

        n = sum(len(p.text) // 4 for p in passages)  # a rough count: no tokenizer cost
        return CompressionResult(
            passages=tuple(
                CompressedPassage(p, p.text, ((0, len(p.text)),), 1, 1) for p in passages
            ),
            method="echo",
            tokens_before=n,
            tokens_after=n,
        )


class LeadCompressor(BaseCompressor):
    """Keeps the first sentence of every document, whatever the question and the budget.

    A real (if crude) extractive compressor for evaluation tests: on records whose answer sits
    later in the document, it provably drops the answer.
    """

    name = "lead"

    def compress(self, query, passages, options, *, analyses=None):
        from ragpress.segmentation import split_sentences
        from ragpress.types import CompressedPassage, CompressionResult

        out = []
        for passage in passages:
            spans = split_sentences(passage.text)[:1]
            text = passage.text[spans[0][0] : spans[0][1]] if spans else ""
            before, after = len(passage.text.split()), len(text.split())
            out.append(CompressedPassage(passage, text, tuple(spans), before, after))
        return CompressionResult(
            passages=tuple(out),
            method=self.name,
            tokens_before=sum(p.tokens_before for p in out),
            tokens_after=sum(p.tokens_after for p in out),
        )
