"""Server-sent events: byte-faithful passthrough, and the error event when a stream breaks.

The proxy never re-frames a stream. Chunks go to the client exactly as the upstream sent them
(the final usage-only chunk and ``data: [DONE]`` included), so a stream read through ragpress
is byte-identical to one read directly. Only when the upstream fails mid-stream does the proxy
add something: it completes any half-sent frame and appends one error event in the route's
shape, so the SDK raises a clear error instead of hanging or silently truncating.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragpress.exceptions import UpstreamError
from ragpress.middleware.serving.errors import sse_error_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["is_event_stream", "relay"]


def is_event_stream(content_type: str | None) -> bool:
    """Whether a ``content-type`` header announces server-sent events."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


async def relay(
    chunks: AsyncIterator[bytes],
    *,
    flavor: Flavor,
    encoded: bool = False,
    on_done: Callable[[BaseException | None, int], None] | None = None,
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through untouched; on an upstream failure, end with an error event.

    Args:
        chunks: The upstream body as it arrives.
        flavor: Decides the error event's shape.
        encoded: The body is content-encoded (gzip...), so nothing can be appended to it; a
            broken stream is then just closed.
        on_done: Called once at the end with the error (or ``None``) and the bytes relayed.
    """
    sent = 0
    tail = b""
    error: BaseException | None = None
    try:
        async for chunk in chunks:
            if chunk:
                sent += len(chunk)
                tail = (tail + chunk)[-2:]
                yield chunk
    except UpstreamError as exc:
        error = exc
        if not encoded:
            if sent and tail != b"\n\n":
                yield b"\n\n" if not tail.endswith(b"\n") else b"\n"
            yield sse_error_event(exc, flavor=flavor)
    except BaseException as exc:
        error = exc
        raise
    finally:
        if on_done is not None:
            on_done(error, sent)
