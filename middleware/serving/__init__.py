"""Framework-free request rewriting for each API the proxy speaks, with the wire protocols.

Nothing here imports a web framework; :mod:`ragpress.middleware.proxy` serves it.

* :mod:`~ragpress.middleware.serving.protocols` — the wire models: OpenAI chat completions,
  Anthropic messages, and ragpress's own ``/v1/compress``, Headroom and guardrail bodies;
* :mod:`~ragpress.middleware.serving.chat` — :class:`ChatService`: compression in flight for
  chat completions and messages (text, marked context, images);
* :mod:`~ragpress.middleware.serving.messages` and :mod:`~ragpress.middleware.serving.context` —
  which parts of a conversation are compressed, and the ``<ragpress>`` markers;
* :mod:`~ragpress.middleware.serving.parts` and :mod:`~ragpress.middleware.serving.images` —
  non-text parts (images, PDFs);
* :mod:`~ragpress.middleware.serving.compress` — :class:`CompressService` behind
  ``/v1/compress`` and the Headroom / LiteLLM guardrail contracts;
* :mod:`~ragpress.middleware.serving.soft` — answering with CompLLM concept embeddings;
* :mod:`~ragpress.middleware.serving.errors` — the one table from exceptions to HTTP errors in
  each API's shape.
"""

from __future__ import annotations

from ragpress.middleware.serving.chat import ChatService
from ragpress.middleware.serving.errors import to_error_response
from ragpress.middleware.serving.protocols.openai import RagpressOptions

__all__ = ["ChatService", "RagpressOptions", "to_error_response"]
