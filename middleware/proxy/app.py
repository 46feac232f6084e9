"""The Litestar application: ``create_app(settings)`` builds everything before serving.

Every error a client sees has the OpenAI shape, or Anthropic's on ``/v1/messages``: one
exception handler sends all exceptions (unknown paths and wrong methods included) through
:func:`ragpress.middleware.serving.errors.to_error_response`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError

try:
    from litestar import Litestar
    from litestar.openapi import OpenAPIConfig
    from litestar.openapi.plugins import ScalarRenderPlugin
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "litestar", extra="proxy") from exc

from ragpress.config import RagpressSettings
from ragpress.middleware.proxy.openapi import component_schemas
from ragpress.middleware.proxy.plugin import RagpressPlugin, error_handler
from ragpress.middleware.proxy.routes import DOCUMENTED_MODELS

if TYPE_CHECKING:
    import httpx

    from ragpress.middleware.pipeline.factory import PipelineSet

__all__ = ["create_app", "openapi_config"]


def openapi_config() -> OpenAPIConfig:
    """OpenAPI document at ``/docs/openapi.json``, an interactive page at ``/docs``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ragpress_version = version("ragpress")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        ragpress_version = "0"
    return OpenAPIConfig(
        title="ragpress proxy",
        version=ragpress_version,
        description=(
            "OpenAI- and Anthropic-compatible proxy that compresses the context you mark "
            "(<context>...</context>, or Anthropic plain-text document blocks) before it "
            "reaches the LLM, plus ragpress's compression API and LiteLLM's two contracts. "
            "Guide: docs/guides/proxy.md in the ragpress repository."
        ),
        path="/docs",
        render_plugins=[ScalarRenderPlugin()],
    )


def create_app(
    settings: RagpressSettings | None = None,
    *,
    upstream_transport: httpx.AsyncBaseTransport | None = None,
    pipelines: PipelineSet | None = None,
) -> Litestar:
    """Build the proxy: compressors loaded, upstream client ready, routes mounted.

    Args:
        settings: Defaults to ``RagpressSettings()`` (environment variables included).
        upstream_transport: Replaces the network towards the upstream (tests pass
            ``httpx.MockTransport``); the base URLs still come from the settings.
        pipelines: Use these pipelines instead of building them from the settings (tests
            share one loaded model across apps).

    Raises:
        ConfigurationError: Unknown compressor, bad parameters, or a model that cannot load.
        MissingDependencyError: A needed extra is not installed.

    Example:
        >>> from ragpress.middleware.proxy import create_app
        >>> upstream = {"base_url": "http://127.0.0.1:8000/v1"}
        >>> app = create_app(RagpressSettings(upstream=upstream))  # doctest: +SKIP
    """
    settings = settings or RagpressSettings()
    plugin = RagpressPlugin(settings, upstream_transport=upstream_transport, pipelines=pipelines)
    app = Litestar(
        plugins=[plugin],
        exception_handlers={Exception: error_handler},
        request_max_body_size=settings.proxy.max_body_bytes,
        openapi_config=openapi_config(),
        logging_config=None,
    )
    # Proxy routes read raw bytes, so Litestar cannot see their models: add them by hand.
    app.openapi_schema.components.schemas.update(component_schemas(DOCUMENTED_MODELS))
    return app
