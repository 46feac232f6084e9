"""Mask secrets in text meant for people: passwords in URLs, secret query parameters.

Log lines, error messages and ``ragpress config show`` print URLs (the upstream LLM API, Redis,
vLLM), and operators put credentials in them (``redis://:password@host``,
``https://host/v1?api_key=...``). :func:`mask_url` keeps what helps debugging (scheme, user
name, host, port, path, harmless parameters) and replaces the secrets with :data:`MASK`;
:func:`mask_urls` does the same for every URL inside a longer text, and :func:`hide_urls`
removes them (for what leaves the server). All are pure string functions that never raise, so
they are safe on any input, malformed URLs included.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "SECRET_PARAMETERS", "hide_urls", "mask_url", "mask_urls"]

MASK = "****"
"""What a secret is replaced with."""

SECRET_PARAMETERS = frozenset(
    {
        "key",
        "api_key",
        "apikey",
        "api-key",
        "x-api-key",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "auth",
        "authorization",
        "password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "sig",
        "signature",
        "x-amz-signature",
        "x-amz-security-token",
        "x-goog-signature",
    }
)
"""Query parameters whose values are masked (compared case-insensitively)."""

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()]+")


def mask_url(url: str) -> str:
    """``url`` with its password (or lone user token) and secret query values masked.

    Example:
        >>> mask_url("redis://:hunter2@cache:6379/0")
        'redis://:****@cache:6379/0'
        >>> mask_url("https://api.example.com/v1?api_key=sk-1&model=x")
        'https://api.example.com/v1?api_key=****&model=x'
    """
    start = url.find("://")
    if start < 0:
        return url
    start += 3
    end = len(url)
    for separator in "/?#":
        found = url.find(separator, start)
        if found >= 0:
            end = min(end, found)
    authority, rest = url[start:end], url[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        masked = f"{user}:{MASK}" if has_password else MASK
        authority = f"{masked}@{host}"
    return url[:start] + authority + _mask_query(rest)


def mask_urls(text: str) -> str:
    """``text`` with :func:`mask_url` applied to every URL in it."""
    return _URL.sub(lambda match: mask_url(match.group(0)), text)


def hide_urls(text: str, *, replacement: str = "(address not shown)") -> str:
    """``text`` with every URL replaced by ``replacement``.

    For messages that leave the server (error bodies): even a masked URL names an internal
    host.
    """
    return _URL.sub(replacement, text)


def _mask_query(rest: str) -> str:
    """Mask secret parameter values in ``path?query#fragment``."""
    path, has_query, query = rest.partition("?")
    if not has_query:
        return rest
    query, has_fragment, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, has_value, _ = pair.partition("=")
        if has_value and unquote(name).lower() in SECRET_PARAMETERS:
            pair = f"{name}={MASK}"
        pairs.append(pair)
    out = f"{path}?{'&'.join(pairs)}"
    return f"{out}#{fragment}" if has_fragment else out
