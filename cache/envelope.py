"""Sealed cache values: each one carries a tag that binds it to its key, signed when keyed.

A value is stored as ``b"rps1" + tag + payload``, the tag being the first 16 bytes of
``HMAC-SHA256(secret, key + NUL + payload)``. Opening checks the tag, so:

* **without a secret** (the default), a fixed public key is used: the tag is a checksum that
  catches truncated or corrupted values and values stored under another key (swapped or copied
  entries), but anyone who can write to the store can compute it;
* **with a secret** shared by the deployment's processes, the tag is a signature: an entry
  written by anyone without the secret (another tenant of a shared Redis, an attacker) is
  refused.

Either way, a value that does not open is a cache miss, never output.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["InvalidEntryError", "open_sealed", "seal"]

_MAGIC = b"rps1"
_TAG_BYTES = 16
_UNKEYED = b"ragpress cache entry, unsigned"


class InvalidEntryError(ValueError):
    """A stored value is not a sealed entry for its key (or not signed with the secret)."""


def _tag(key: str, payload: bytes, secret: bytes | None) -> bytes:
    mac = hmac.new(secret or _UNKEYED, key.encode("utf-8") + b"\0", hashlib.sha256)
    mac.update(payload)
    return mac.digest()[:_TAG_BYTES]


def seal(key: str, payload: bytes, secret: bytes | None = None) -> bytes:
    """The value to store for ``payload`` under ``key``.

    Args:
        key: The cache key (without the store's namespace).
        payload: The bytes to protect.
        secret: The deployment's signing key; ``None`` for an unsigned checksum.
    """
    return _MAGIC + _tag(key, payload, secret) + payload


def open_sealed(key: str, value: bytes, secret: bytes | None = None) -> bytes:
    """The payload of a value written by :func:`seal` for ``key``.

    Raises:
        InvalidEntryError: The value is not sealed, was sealed for another key, was changed,
            or was not signed with ``secret``.
    """
    head = len(_MAGIC) + _TAG_BYTES
    if len(value) < head or not value.startswith(_MAGIC):
        raise InvalidEntryError("not a sealed ragpress entry (written by something else)")
    payload = value[head:]
    if not hmac.compare_digest(value[len(_MAGIC) : head], _tag(key, payload, secret)):
        raise InvalidEntryError(
            "its tag does not match: corrupted, stored under another key, or "
            + ("not signed with this deployment's cache signing key" if secret else "tampered")
        )
    return payload
