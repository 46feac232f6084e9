"""Which headers cross the proxy, in each direction.

Everything passes except hop-by-hop headers (RFC 9110 section 7.6.1), the framing headers
the proxy recomputes, and ragpress's own control headers. Header order and repeated headers
(``set-cookie``) are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["request_headers", "response_headers"]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"content-length"}
_NOT_RETURNED = _HOP_BY_HOP | {b"content-length"}


def request_headers(
    raw: Iterable[tuple[bytes, bytes]],
    *,
    drop: Iterable[bytes] = (),
    replace: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """Client headers to send upstream.

    Args:
        raw: The client's headers (lower-case names, as ASGI gives them).
        drop: More names to remove (a consumed client key).
        replace: Headers set by the proxy (a configured upstream key); a client header of the
            same name is removed.
    """
    replaced = list(replace)
    skip = _NOT_FORWARDED | set(drop) | {name for name, _ in replaced}
    out = [
        (name, value)
        for name, value in raw
        if name not in skip and not name.startswith(b"x-ragpress")
    ]
    out.extend(replaced)
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """Upstream response headers to return to the client (the server sets the framing)."""
    out = []
    for name, value in raw:
        lower = name.lower()
        if lower not in _NOT_RETURNED:
            out.append((lower.decode("latin-1"), value.decode("latin-1")))
    return out
