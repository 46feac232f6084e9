"""The REST proxy (extra ``proxy``): OpenAI- and Anthropic-compatible, compressing in flight.

Example:
    >>> from ragpress.middleware.proxy import create_app
    >>> app = create_app(settings)   # serve with uvicorn or granian  # doctest: +SKIP
"""

from __future__ import annotations

from ragpress.middleware.proxy.app import create_app
from ragpress.middleware.proxy.plugin import RagpressPlugin

__all__ = ["RagpressPlugin", "create_app"]
