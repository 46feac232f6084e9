"""Stable hashes for cache keys and fingerprints (stdlib only)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["content_hash", "fingerprint_of"]


def content_hash(*parts: str | bytes) -> str:
    """SHA-256 hex digest of ``parts``, length-prefixed so ``("ab", "c") != ("a", "bc")``."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def fingerprint_of(payload: Any, *, length: int = 16) -> str:
    """Short stable hash of a JSON-serialisable payload (keys sorted, compact separators)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]
