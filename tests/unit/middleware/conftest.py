"""Fixtures for the middleware tests."""

from __future__ import annotations

import pytest

from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions


@pytest.fixture
def selection_pipeline(fake_embedder):
    """Make sentence-selection pipelines on the hashing embedder; closed after the test."""
    made: list[Pipeline] = []

    def make(target_ratio: float = 2) -> Pipeline:
        pipeline = Pipeline(
            [Stage(SentenceSelectionCompressor(fake_embedder))],
            defaults=CompressionOptions(target_ratio=target_ratio),
            token_counter=get_token_counter(),
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.close()
