"""Composition and interfaces: the pipeline, its wiring from settings, batch runs.

The proxy (``ragpress.middleware.proxy``) and the LangChain component
(``ragpress.middleware.langchain``) are imported from their own modules.
"""

from __future__ import annotations

from ragpress.middleware.pipeline import Pipeline, Stage
from ragpress.middleware.wiring import build_pipeline

__all__ = ["Pipeline", "Stage", "build_pipeline"]
