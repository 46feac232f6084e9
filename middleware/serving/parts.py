"""The seam for non-text content parts: what a part handler is given and what it gives back.

:class:`~ragpress.middleware.serving.chat.ChatService` hands every image or file part that sits
past the protected prefix to the :class:`PartCompressor` registered for its ``type``. The handler
rewrites the parts in place (:meth:`PartRef.replace`) and reports, per part, what it did; text it
produced from a part (OCR text, a PDF's text layer) is listed in :attr:`PartResult.documents`, and
the service then compresses that text with the request's text method, for the part's question.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ragpress.middleware.serving.messages import PartRef
    from ragpress.middleware.serving.protocols.openai import Flavor
    from ragpress.types import CompressionOptions

__all__ = ["PartCompressor", "PartRequest", "PartResult"]


@dataclass(frozen=True, slots=True)
class PartRequest:
    """What a part handler needs to know about the request its parts come from."""

    model: str | None
    """The request's ``model`` field: decides how images are costed."""
    flavor: Flavor
    """``openai`` (chat completions) or ``anthropic`` (messages)."""
    options: CompressionOptions
    """The request's budget and ``keep`` strings."""


@dataclass
class PartResult:
    """What a handler did to one part."""

    ref: PartRef
    route: str
    """E.g. ``image`` (a cheaper image), ``ocr``, ``pdf``, ``unchanged``, ``url_not_fetched``."""
    tokens_before: int = 0
    """What the part cost as received (0 when unknown, e.g. a URL that was not fetched)."""
    tokens_after: int = 0
    """What its replacement costs."""
    documents: list[dict[str, Any]] = field(default_factory=list)
    """Text parts of the replacement whose ``text`` the text compressors may shrink further."""
    count_tokens: Callable[[str], int] | None = None
    """Counts a document's tokens the way :attr:`tokens_after` does (to re-cost it after text
    compression)."""
    note: str | None = None
    """Something the client should know (sent in ``x-ragpress-notes``)."""
    changed: bool = True
    """Whether the part was replaced (``False``: it goes upstream as it came)."""


class PartCompressor(Protocol):
    """Compresses non-text content parts in place; registered by part type."""

    async def compress_parts(
        self, parts: Sequence[PartRef], request: PartRequest
    ) -> list[PartResult]:
        """Rewrite ``parts`` in place and say, per part, what was done.

        Raises:
            RequestValidationError: A part is malformed or refused (HTTP 400, ``param`` names
                it); other exceptions follow the proxy's fail-open policy.
        """
        ...
