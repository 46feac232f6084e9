"""Mount ragpress into a Litestar app: ``RagpressPlugin`` does what ``create_app`` does.

Teams that already run Litestar add ``plugins=[RagpressPlugin(settings)]`` and get the proxy
routes (optionally under a path prefix), their state, start-up and shutdown hooks, and the
error handler that gives every ragpress route OpenAI- or Anthropic-shaped errors.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import MissingDependencyError, UpstreamError

try:
    from litestar import Request, Response, Router
    from litestar.exceptions import InternalServerException
    from litestar.plugins import InitPluginProtocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "litestar", extra="proxy") from exc

from ragpress.config import RagpressSettings
from ragpress.middleware.pipeline.factory import build_pipeline_set
from ragpress.middleware.proxy.auth import ClientKeys
from ragpress.middleware.proxy.observability import ProxyMetrics
from ragpress.middleware.proxy.routes import ROUTES
from ragpress.middleware.proxy.services import build_image_handlers, build_soft_chat
from ragpress.middleware.proxy.state import STATE_KEY, ProxyState
from ragpress.middleware.proxy.upstream import UpstreamClient
from ragpress.middleware.serving.chat import ChatService
from ragpress.middleware.serving.compress import CompressService
from ragpress.middleware.serving.errors import error_body, to_error_response

if TYPE_CHECKING:
    import httpx
    from litestar.config.app import AppConfig
    from litestar.datastructures import State

    from ragpress.middleware.pipeline.factory import PipelineSet
    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["RagpressPlugin", "build_state", "error_handler"]

logger = logging.getLogger("ragpress.proxy")


def build_state(
    settings: RagpressSettings,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    pipelines: PipelineSet | None = None,
) -> ProxyState:
    """Build the pipelines, services and upstream client the settings describe.

    Raises:
        ConfigurationError: Unknown compressor, bad parameters, or a model that cannot load.
        MissingDependencyError: A needed extra is not installed.
    """
    pipelines = pipelines or build_pipeline_set(settings)
    proxy = settings.proxy
    part_compressors, fetcher = build_image_handlers(settings, pipelines)
    chat = ChatService(
        pipelines,
        compress_by_default=proxy.compress_by_default,
        fail_open=proxy.fail_open,
        timeout_seconds=proxy.compression_timeout_seconds,
        part_compressors=part_compressors,
        soft=build_soft_chat(settings, pipelines),
        max_options_header_bytes=proxy.max_options_header_bytes,
    )

    def cache_counters() -> list[Any]:
        return [p.cache.counters for p in pipelines.pipelines.values() if p.cache is not None]

    upstream = settings.upstream
    return ProxyState(
        chat=chat,
        compress=CompressService(chat),
        upstream=UpstreamClient.from_settings(upstream, transport=upstream_transport),
        keys=ClientKeys(k.get_secret_value() for k in proxy.api_keys),
        metrics=ProxyMetrics(cache_counters),
        upstream_api_key=upstream.api_key.get_secret_value() if upstream.api_key else None,
        anthropic_api_key=(
            upstream.anthropic_api_key.get_secret_value() if upstream.anthropic_api_key else None
        ),
        access_log=proxy.access_log,
        max_body_bytes=proxy.max_body_bytes,
        image_fetcher=fetcher,
        verify_soft=proxy.soft.verify,
    )


def error_handler(request: Request[Any, Any, State], exc: Exception) -> Response[bytes]:
    """Turn any exception into an OpenAI- or Anthropic-shaped error response.

    A client that went away (mid-body, or mid-answer) is no server error: it is logged at INFO
    and counted in ``ragpress_client_disconnects_total``, with status 499 in the metrics.
    """
    path = request.scope["path"]
    flavor: Flavor = "anthropic" if "/v1/messages" in path else "openai"
    state: ProxyState | None = request.app.state.get(STATE_KEY)
    if _client_went_away(exc):
        logger.info(
            "client went away on %s: %s",
            path,
            type(exc).__name__,
            extra={"event": "client_disconnected", "route": path},
        )
        if state is not None:
            state.metrics.client_disconnects.labels(_route(request)).inc()
            state.metrics.requests.labels(_route(request), "499", "error").inc()
        status, body = 499, error_body(499, "client closed the request", flavor=flavor)
        return Response(content=body, status_code=status, media_type="application/json")
    status, body = to_error_response(exc, flavor=flavor)
    if status == 413 and state is not None:
        status, body = to_error_response(_TooLargeError(state.max_body_bytes), flavor=flavor)
    if status >= 500 and not _is_upstream(exc):
        logger.error(
            "unhandled error on %s",
            request.scope["path"],
            exc_info=exc,
            extra={"event": "error", "route": request.scope["path"]},
        )
    if state is not None:
        state.metrics.requests.labels(_route(request), str(status), "error").inc()
    return Response(content=body, status_code=status, media_type="application/json")


class _TooLargeError(Exception):
    status_code = 413

    def __init__(self, limit: int) -> None:
        self.detail = (
            f"the request body is larger than {limit:,} bytes; send less context or raise "
            "RAGPRESS_PROXY__MAX_BODY_BYTES"
        )
        super().__init__(self.detail)


def _is_upstream(exc: Exception) -> bool:
    return isinstance(exc, UpstreamError)


def _client_went_away(exc: Exception) -> bool:
    """Whether ``exc`` only says the client disconnected (reset, broken pipe, body cut off)."""
    if isinstance(exc, ConnectionError) or type(exc).__name__ in _DISCONNECT_NAMES:
        return True
    # Litestar reports a body cut off by a disconnect as a 500 with this detail
    return isinstance(exc, InternalServerException) and exc.detail == _CUT_OFF


_DISCONNECT_NAMES = frozenset({"ClientDisconnect", "ClientDisconnected"})
_CUT_OFF = "client disconnected prematurely"


def _route(request: Request[Any, Any, State]) -> str:
    handler = request.scope.get("route_handler")
    name = getattr(handler, "handler_name", None)
    return (
        name if isinstance(name, str) and handler is not None and "{" not in name else "unmatched"
    )


class RagpressPlugin(InitPluginProtocol):
    """Adds the ragpress proxy to a Litestar application.

    Args:
        settings: Defaults to ``RagpressSettings()`` (environment variables included).
        upstream_transport: Replaces the network towards the upstream (tests).
        pipelines: Use these pipelines instead of building them from the settings.
        path: Prefix for every ragpress route (``""`` mounts them at ``/v1/...``).

    Example:
        >>> from litestar import Litestar
        >>> app = Litestar(plugins=[RagpressPlugin(settings, path="/llm")])  # doctest: +SKIP
    """

    def __init__(
        self,
        settings: RagpressSettings | None = None,
        *,
        upstream_transport: httpx.AsyncBaseTransport | None = None,
        pipelines: PipelineSet | None = None,
        path: str = "",
    ) -> None:
        self.settings = settings or RagpressSettings()
        self.state = build_state(
            self.settings, upstream_transport=upstream_transport, pipelines=pipelines
        )
        self.path = path

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        """Register routes, state, hooks and the error handler on ``app_config``."""
        state = self.state

        async def started() -> None:
            if state.chat.soft is not None and state.verify_soft:
                await state.chat.soft.averify()
            state.ready = True

        async def stopping() -> None:
            state.ready = False
            await state.upstream.aclose()
            if state.chat.soft is not None:
                await state.chat.soft.aclose()
            if state.image_fetcher is not None:
                state.image_fetcher.close()
            await state.chat.pipelines.aclose()

        router = Router(
            path=self.path or "/",
            route_handlers=ROUTES,
            exception_handlers={Exception: error_handler},
        )
        app_config.route_handlers.append(router)
        app_config.state[STATE_KEY] = state
        app_config.on_startup.append(started)
        app_config.on_shutdown.append(stopping)
        return app_config
