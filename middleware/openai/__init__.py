"""The OpenAI side of the wire: models, the error table, and compression in flight.

Nothing here imports a web framework; ``ragpress.middleware.proxy`` serves it.
"""

from __future__ import annotations

from ragpress.middleware.openai.errors import to_error_response
from ragpress.middleware.openai.protocol import RagpressOptions
from ragpress.middleware.openai.service import ChatService

__all__ = ["ChatService", "RagpressOptions", "to_error_response"]
