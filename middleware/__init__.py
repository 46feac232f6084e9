"""Everything between retrievers and LLMs, one subpackage per part.

* :mod:`~ragpress.middleware.pipeline` — the pipeline and its wiring from settings;
* :mod:`~ragpress.middleware.batch` — batch compression of corpora;
* :mod:`~ragpress.middleware.serving` — framework-free request rewriting per API;
* :mod:`~ragpress.middleware.proxy` — the Litestar proxy (extra ``proxy``);
* :mod:`~ragpress.middleware.generation` — answering from CompLLM concept embeddings;
* :mod:`~ragpress.middleware.langchain` — the LangChain components (extra ``langchain``).
"""

from __future__ import annotations

from ragpress.middleware.pipeline import Pipeline, Stage, build_pipeline

__all__ = ["Pipeline", "Stage", "build_pipeline"]
