"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.response.base import ASGIResponse

from ragpress.middleware.proxy.state import proxy_state
from ragpress.middleware.serving.chat import dumps

if TYPE_CHECKING:
    from ragpress.middleware.pipeline.cache_policy import FailOpenCache

__all__ = ["health", "metrics", "ready"]


@get("/health", summary="Liveness: the process serves requests", tags=["operations"])
async def health() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process runs."""
    return {"status": "ok"}


_PROBE_KEY = "v1:probe:ready"
"""Written by each readiness check: a cache that refuses writes is not usable either."""
_PROBE_TTL_SECONDS = 60.0

logger = logging.getLogger("ragpress.proxy")


@get("/ready", summary="Readiness: models loaded and the cache usable", tags=["operations"])
async def ready(request: Request[Any, Any, State]) -> ASGIResponse:
    """200 when compressors are loaded and the cache is usable (or allowed to fail open).

    Besides the cache's own state (bypassed after a failure, or its last write refused), each
    check writes a small probe key: a Redis that answers PING but refuses writes (OOM at
    maxmemory, a READONLY replica, MISCONF, NOREPLICAS) is ``degraded`` before any request
    found out, and with ``RAGPRESS_CACHE__FAIL_OPEN=false`` the server is then not ready (503).
    """
    state = proxy_state(request)
    caches = list(
        {id(p.cache): p.cache for p in state.chat.pipelines.pipelines.values() if p.cache}.values()
    )
    usable = [await _usable(c) for c in caches]
    cache_ok = all(ok or c.fail_open for ok, c in zip(usable, caches, strict=True))
    ok = state.ready and cache_ok
    payload = {
        "status": "ready" if ok else "not ready",
        "methods": state.chat.pipelines.methods,
        "cache": "ok" if all(usable) else "degraded",
    }
    return ASGIResponse(
        body=dumps(payload), status_code=200 if ok else 503, media_type="application/json"
    )


async def _usable(cache: FailOpenCache) -> bool:
    """Whether ``cache`` is in use, its last operation worked, and it takes a write now.

    The probe goes to the store directly, so that neither its success hides the failure of a
    real write (the policy clears its error on the next good write) nor its failure changes
    the policy's state; a backend already bypassed after a failure is not probed again.
    """
    if not cache.available or getattr(cache, "last_error", None) is not None:
        return False
    try:
        await cache.store.set(_PROBE_KEY, b"1", ttl_seconds=_PROBE_TTL_SECONDS)
    except Exception:  # any failure means "not usable"
        logger.warning("readiness: the cache refused a write", exc_info=True)
        return False
    return True


@get("/metrics", summary="Prometheus metrics", tags=["operations"], media_type="text/plain")
async def metrics(request: Request[Any, Any, State]) -> ASGIResponse:
    """The Prometheus text format."""
    body = proxy_state(request).metrics.render()
    return ASGIResponse(body=body, media_type="text/plain; version=0.0.4; charset=utf-8")
