"""What the proxy's route handlers share, kept in ``app.state["ragpress"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from litestar import Request
    from litestar.datastructures import State

    from ragpress.middleware.proxy.auth import ClientKeys
    from ragpress.middleware.proxy.fetch import ImageFetcher
    from ragpress.middleware.proxy.observability import ProxyMetrics
    from ragpress.middleware.proxy.upstream import UpstreamClient
    from ragpress.middleware.serving.chat import ChatService
    from ragpress.middleware.serving.compress import CompressService

__all__ = ["STATE_KEY", "ProxyState", "proxy_state"]

STATE_KEY = "ragpress"


@dataclass
class ProxyState:
    """Everything the handlers need, kept in ``app.state["ragpress"]``."""

    chat: ChatService
    compress: CompressService
    upstream: UpstreamClient
    keys: ClientKeys
    metrics: ProxyMetrics
    upstream_api_key: str | None = None
    anthropic_api_key: str | None = None
    access_log: bool = True
    max_body_bytes: int = 0
    ready: bool = False
    image_fetcher: ImageFetcher | None = None
    verify_soft: bool = True
    """Run the soft-prompt backends' start-up check (vLLM embedding parity)."""


def proxy_state(request: Request[Any, Any, State]) -> ProxyState:
    """The :class:`ProxyState` of the app serving ``request``."""
    state: ProxyState = request.app.state[STATE_KEY]
    return state
