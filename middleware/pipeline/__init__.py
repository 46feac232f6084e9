"""The pipeline: retrieval (optional), a chain of compressors, and the cache in between.

* :mod:`~ragpress.middleware.pipeline.core` — :class:`Pipeline` and :class:`Stage`;
* :mod:`~ragpress.middleware.pipeline.cache_policy` — :class:`FailOpenCache`, the cache as the
  pipeline uses it (an outage is a miss);
* :mod:`~ragpress.middleware.pipeline.factory` — :func:`build_pipeline`, the one place that
  turns :class:`~ragpress.config.RagpressSettings` into objects.
"""

from __future__ import annotations

from ragpress.middleware.pipeline.core import Pipeline, PipelineRequest, Stage
from ragpress.middleware.pipeline.factory import build_pipeline

__all__ = ["Pipeline", "PipelineRequest", "Stage", "build_pipeline"]
