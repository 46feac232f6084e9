"""Client API keys, and which credentials travel upstream.

Keys are compared in constant time (``hmac.compare_digest``) against every configured key, so
neither the position of a match nor a common prefix shows in the response time. Credentials
are never logged.

Where a client's key may be:

* ``x-ragpress-key: KEY`` — then ``Authorization`` / ``x-api-key`` are the client's own
  upstream credentials and pass through untouched;
* otherwise ``Authorization: Bearer KEY`` (or, on ``/v1/messages``, ``x-api-key: KEY``), which
  is then consumed here and never forwarded; the upstream key must come from the settings.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from ragpress.exceptions import ClientAuthenticationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["KEY_HEADER", "ClientKeys"]

KEY_HEADER = "x-ragpress-key"


class ClientKeys:
    """The keys clients must present (none configured: every request is let in).

    Args:
        keys: The accepted keys, as plain strings.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = [k.encode() for k in keys if k]

    @property
    def enabled(self) -> bool:
        """Whether clients must authenticate."""
        return bool(self._keys)

    def check(self, headers: Mapping[str, str]) -> str | None:
        """Authenticate a request; return the header that carried the key (to strip it).

        Args:
            headers: Request headers, lower-case names.

        Raises:
            ClientAuthenticationError: No key, or a key that matches none of the configured ones.
        """
        if not self._keys:
            return None
        header, presented = self._presented(headers)
        if presented is None:
            raise ClientAuthenticationError(
                "this ragpress server needs an API key: send it as 'x-ragpress-key: KEY' or "
                "'Authorization: Bearer KEY'"
            )
        candidate = presented.encode()
        matched = False
        for key in self._keys:  # no early exit: every key is compared
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise ClientAuthenticationError(f"the API key in {header} is not valid for this server")
        return header

    @staticmethod
    def _presented(headers: Mapping[str, str]) -> tuple[str, str | None]:
        if KEY_HEADER in headers:
            return KEY_HEADER, headers[KEY_HEADER].strip()
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return "authorization", token.strip()
        if headers.get("x-api-key"):
            return "x-api-key", headers["x-api-key"].strip()
        return "authorization", None
