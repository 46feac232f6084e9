"""LangChain v1 agent middleware that compresses long messages before each model call.

Needs the ``langchain`` package itself (extra ``langchain-agents``); the rest of
:mod:`ragpress.middleware.langchain` needs only ``langchain-core``.

Which messages: tool results and human messages of at least ``min_tokens`` tokens, except the
latest human message (the question) and never system or AI messages. Each is compressed on its
own, for the human message that came before it, so a message compresses the same way on every
later turn: the conversation prefix the provider may cache stays byte-identical. Only the request
sent to the model changes; the agent's state keeps the originals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.middleware.langchain.compressor import RagpressDocumentCompressor
from ragpress.tokens import get_token_counter

try:
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage, HumanMessage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "langchain", extra="langchain-agents") from exc

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from langchain.agents.middleware import ModelRequest, ModelResponse
    from langchain_core.messages import AnyMessage

__all__ = ["RagpressCompressionMiddleware"]

MessageType = Literal["human", "tool"]


@dataclass(frozen=True, slots=True)
class _Item:
    """One piece of text to compress: a message's content, or one text block of it."""

    message: int
    block: int | None
    text: str
    query: str | None


class RagpressCompressionMiddleware(AgentMiddleware):
    """Compress long tool results and earlier human messages before the model sees them.

    Args:
        compressor: Does the compression (method, budget, pipeline); the default builds the
            configured pipeline on first use.
        min_tokens: Messages (or text blocks) shorter than this are left alone.
        message_types: Which messages may be compressed: ``"tool"``, ``"human"``.
        tokenizer: Tokenizer ``min_tokens`` is counted in.

    Each compressed message carries its statistics in ``response_metadata["ragpress"]`` (method,
    tokens before and after, ratio, kept spans), visible in traces of the model call.

    Example:
        >>> from langchain.agents import create_agent
        >>> agent = create_agent(                                              # doctest: +SKIP
        ...     "openai:gpt-4.1-mini", tools=[search],
        ...     middleware=[RagpressCompressionMiddleware(min_tokens=400)])
    """

    def __init__(
        self,
        compressor: RagpressDocumentCompressor | None = None,
        *,
        min_tokens: int = 500,
        message_types: Sequence[MessageType] = ("tool", "human"),
        tokenizer: str = "cl100k_base",
    ) -> None:
        super().__init__()
        if isinstance(min_tokens, bool) or min_tokens < 1:
            raise ConfigurationError(f"min_tokens={min_tokens!r} must be a whole number >= 1")
        unknown = sorted(set(message_types) - {"human", "tool"})
        if unknown:
            raise ConfigurationError(
                f"message_types has {unknown}; only 'human' and 'tool' messages are compressed "
                "(system and AI messages never are)"
            )
        self.compressor = compressor or RagpressDocumentCompressor()
        self.min_tokens = min_tokens
        self.message_types = frozenset(message_types)
        self._counter = get_token_counter(tokenizer)

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        """Compress long messages, then call the model."""
        items = self._plan(request.messages)
        if not items:
            return handler(request)
        outputs = [self._compress(item) for item in items]
        return handler(request.override(messages=_rebuilt(request.messages, items, outputs)))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any]:
        """Async :meth:`wrap_model_call`: messages are compressed concurrently."""
        items = self._plan(request.messages)
        if not items:
            return await handler(request)
        outputs = await asyncio.gather(*(self._acompress(item) for item in items))
        return await handler(request.override(messages=_rebuilt(request.messages, items, outputs)))

    # -- internals -------------------------------------------------------------------------

    def _plan(self, messages: Sequence[BaseMessage]) -> list[_Item]:
        last_human = max(
            (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1
        )
        items: list[_Item] = []
        question: str | None = None
        for i, message in enumerate(messages):
            kind = message.type
            compressible = kind in self.message_types and i != last_human
            if compressible:
                query = None if kind == "human" else question
                for block, text in _texts(message.content):
                    if self._counter.count(text) >= self.min_tokens:
                        items.append(_Item(i, block, text, query))
            if kind == "human":
                question = "\n".join(text for _, text in _texts(message.content)) or None
        return items

    def _compress(self, item: _Item) -> Document:
        return self.compressor.compress_documents([Document(item.text)], item.query or "")[0]

    async def _acompress(self, item: _Item) -> Document:
        documents = await self.compressor.acompress_documents(
            [Document(item.text)], item.query or ""
        )
        return documents[0]


def _texts(content: str | list[str | dict[str, Any]]) -> list[tuple[int | None, str]]:
    """The text pieces of a message: its string content, or its text blocks."""
    if isinstance(content, str):
        return [(None, content)]
    pieces: list[tuple[int | None, str]] = []
    for block, part in enumerate(content):
        if isinstance(part, str):
            pieces.append((block, part))
        elif part.get("type") == "text" and isinstance(part.get("text"), str):
            pieces.append((block, part["text"]))
    return pieces


def _rebuilt(
    messages: Sequence[AnyMessage], items: Sequence[_Item], outputs: Sequence[Document]
) -> list[AnyMessage]:
    out = list(messages)
    for item, document in zip(items, outputs, strict=True):
        if not document.page_content:  # nothing kept: the original is safer than an empty turn
            continue
        message = out[item.message]
        stats = dict(document.metadata.get("ragpress", {}))
        if item.block is None:
            content: Any = document.page_content
        else:
            content = list(message.content)
            block = content[item.block]
            content[item.block] = (
                document.page_content
                if isinstance(block, str)
                else {**block, "text": document.page_content}
            )
            stats["block"] = item.block
        metadata = dict(message.response_metadata)
        previous = metadata.get("ragpress")
        metadata["ragpress"] = [*previous, stats] if isinstance(previous, list) else [stats]
        out[item.message] = message.model_copy(
            update={"content": content, "response_metadata": metadata}
        )
    return out
