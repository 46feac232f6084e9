"""Operations routes: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.response.base import ASGIResponse

from ragpress.middleware.proxy.state import proxy_state
from ragpress.middleware.serving.chat import dumps

__all__ = ["health", "metrics", "ready"]


@get("/health", summary="Liveness: the process serves requests", tags=["operations"])
async def health() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process runs."""
    return {"status": "ok"}


@get("/ready", summary="Readiness: models loaded and the cache usable", tags=["operations"])
async def ready(request: Request[Any, Any, State]) -> ASGIResponse:
    """200 when compressors are loaded and the cache is usable (or allowed to fail open)."""
    state = proxy_state(request)
    caches = [p.cache for p in state.chat.pipelines.pipelines.values() if p.cache is not None]
    cache_ok = all(c.available or c.fail_open for c in caches)
    ok = state.ready and cache_ok
    payload = {
        "status": "ready" if ok else "not ready",
        "methods": state.chat.pipelines.methods,
        "cache": "ok" if all(c.available for c in caches) else "degraded",
    }
    return ASGIResponse(
        body=dumps(payload), status_code=200 if ok else 503, media_type="application/json"
    )


@get("/metrics", summary="Prometheus metrics", tags=["operations"], media_type="text/plain")
async def metrics(request: Request[Any, Any, State]) -> ASGIResponse:
    """The Prometheus text format."""
    body = proxy_state(request).metrics.render()
    return ASGIResponse(body=body, media_type="text/plain; version=0.0.4; charset=utf-8")
