"""Caches for compressed artefacts: one async interface, in-process and Redis backends.

``MemoryCache`` is the embedded default; ``RedisCache`` lives in :mod:`ragpress.cache.redis`
(extra ``redis``) and is imported from there.
"""

from __future__ import annotations

from ragpress.cache.base import CacheStore, NullCache
from ragpress.cache.keys import SCHEMA_VERSION, content_hash, fingerprint_of, make_key
from ragpress.cache.memory import MemoryCache

__all__ = [
    "SCHEMA_VERSION",
    "CacheStore",
    "MemoryCache",
    "NullCache",
    "content_hash",
    "fingerprint_of",
    "make_key",
]
