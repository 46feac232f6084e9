"""ragpress: compress retrieved context before it reaches an LLM.

The stable surface is re-exported here; heavy parts (models, Redis, the proxy) are imported
from their own modules, so ``import ragpress`` stays light.

Example:
    >>> from ragpress import Passage, RagpressSettings, build_pipeline
    >>> pipeline = build_pipeline(RagpressSettings(cache={"backend": "memory"}))  # doctest: +SKIP
    >>> result = pipeline.compress("Who won?", [Passage("...", title="Final")])  # doctest: +SKIP
    >>> print(result.context(), result.ratio)                                     # doctest: +SKIP
"""

from __future__ import annotations

from ragpress.compressors import available_compressors, load_compressor
from ragpress.config import RagpressSettings
from ragpress.exceptions import (
    BudgetError,
    CacheError,
    CacheUnavailableError,
    CompressionError,
    ConfigurationError,
    MissingDependencyError,
    ModelNotFoundError,
    RagpressDeprecationWarning,
    RagpressError,
    RagpressWarning,
    RequestValidationError,
    RetrievalError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ragpress.middleware import Pipeline, Stage, build_pipeline
from ragpress.provenance import join_spans, verify
from ragpress.segmentation import split_sentences
from ragpress.tokens import get_token_counter
from ragpress.types import (
    CompressedPassage,
    CompressionOptions,
    CompressionResult,
    Embedder,
    Passage,
    Retriever,
    SearchHit,
    TextCompressor,
    TokenCounter,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetError",
    "CacheError",
    "CacheUnavailableError",
    "CompressedPassage",
    "CompressionError",
    "CompressionOptions",
    "CompressionResult",
    "ConfigurationError",
    "Embedder",
    "MissingDependencyError",
    "ModelNotFoundError",
    "Passage",
    "Pipeline",
    "RagpressDeprecationWarning",
    "RagpressError",
    "RagpressSettings",
    "RagpressWarning",
    "RequestValidationError",
    "RetrievalError",
    "Retriever",
    "SearchHit",
    "Stage",
    "TextCompressor",
    "TokenCounter",
    "UpstreamError",
    "UpstreamTimeoutError",
    "__version__",
    "available_compressors",
    "build_pipeline",
    "get_token_counter",
    "join_spans",
    "load_compressor",
    "split_sentences",
    "verify",
]
