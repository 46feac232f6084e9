"""Cache keys: versioned, namespaced by artefact and compressor, addressed by content hash.

A key reads ``v2:{artefact}:{owner}:{fingerprint}:{sha256 of content}``, for example
``v2:analysis:sentence_selection:3f9c0a1b2c3d4e5f:9b71...``. The fingerprint changes whenever the
compressor's parameters or model revision change, so a new model can never be served an old
entry; bumping :data:`SCHEMA_VERSION` retires every entry at once without a FLUSHDB. Stores
prefix keys with their own namespace (``ragpress:``) so deployments can share a server.
"""

from __future__ import annotations

from ragpress.hashing import content_hash, fingerprint_of

__all__ = ["SCHEMA_VERSION", "content_hash", "fingerprint_of", "make_key"]

SCHEMA_VERSION = "v2"
"""v2: values are sealed (:mod:`ragpress.cache.envelope`); v1 entries are never read."""


def make_key(artefact: str, owner: str, fingerprint: str, digest: str) -> str:
    """Assemble a cache key.

    Args:
        artefact: What is cached (``analysis``, ``embedding``, ``result``).
        owner: Who produced it, usually the compressor's registry name.
        fingerprint: The producer's configuration fingerprint.
        digest: :func:`content_hash` of the input.
    """
    return f"{SCHEMA_VERSION}:{artefact}:{owner}:{fingerprint}:{digest}"
