"""``ragpress serve``: run the OpenAI/Anthropic-compatible proxy (extra ``proxy``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from ragpress.cli._common import fail, pipeline_options, quiet_third_party
from ragpress.config import hand_over, taken_over
from ragpress.exceptions import RagpressError
from ragpress.redaction import mask_url

if TYPE_CHECKING:
    from litestar import Litestar

    from ragpress.config import RagpressSettings

__all__ = ["serve", "worker_app"]

_FACTORY = "ragpress.cli.serve:worker_app"


@click.command()
@click.option("--host", help="Interface to listen on (default 127.0.0.1; 0.0.0.0 for all).")
@click.option("--port", "-p", type=click.IntRange(0, 65535), help="Port (default 8080).")
@click.option(
    "--upstream",
    metavar="URL",
    help="OpenAI-compatible API to forward to, e.g. http://127.0.0.1:8000/v1 "
    "(default https://api.openai.com/v1).",
)
@click.option(
    "--anthropic-upstream",
    metavar="URL",
    help="Anthropic-compatible API for /v1/messages (default https://api.anthropic.com/v1).",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Server processes (each loads its own compressor).",
)
@click.option(
    "--server",
    type=click.Choice(["uvicorn", "granian"]),
    help="ASGI server (default uvicorn; docs/benchmarks.md has the measurement).",
)
@click.option("--no-compress", is_flag=True, help="Compress only requests that ask for it.")
@pipeline_options
def serve(
    host: str | None,
    port: int | None,
    upstream: str | None,
    anthropic_upstream: str | None,
    workers: int,
    server: str | None,
    no_compress: bool,
    settings: RagpressSettings,
    verbose: bool,
) -> None:
    """Run the proxy: OpenAI /v1/chat/completions and Anthropic /v1/messages, compressed.

    \b
    Clients point their base URL at the proxy; context they wrap in
    <context>...</context> is compressed before it reaches the upstream.
    Docs and the OpenAPI schema: http://HOST:PORT/docs

    \b
    Examples:
      ragpress serve
      ragpress serve --upstream http://127.0.0.1:8000/v1 --port 9000
      RAGPRESS_PROXY__API_KEYS='["secret"]' ragpress serve --host 0.0.0.0
    """
    data = settings.model_dump()
    for section, key, value in (
        ("proxy", "host", host),
        ("proxy", "port", port),
        ("proxy", "server", server),
        ("upstream", "base_url", upstream),
        ("upstream", "anthropic_base_url", anthropic_upstream),
    ):
        if value is not None:
            data[section][key] = value
    if no_compress:
        data["proxy"]["compress_by_default"] = False
    settings = type(settings).model_validate(data)
    _run(settings, workers=workers, verbose=verbose)


def _run(settings: RagpressSettings, *, workers: int, verbose: bool) -> None:
    from ragpress.middleware.proxy.observability import configure_logging

    configure_logging(settings.proxy.log_format, level=logging.DEBUG if verbose else logging.INFO)
    quiet_third_party()
    proxy = settings.proxy
    log = logging.getLogger("ragpress.proxy")
    log.info(
        "ragpress proxy on http://%s:%s -> %s",
        proxy.host,
        proxy.port,
        mask_url(settings.upstream.base_url),
        extra={"event": "start", "server": proxy.server, "workers": workers},
    )
    if proxy.server == "granian" or workers > 1:
        hand_over(settings)  # worker processes import the app themselves
    if proxy.server == "granian":
        _granian(settings, workers)
        return
    import uvicorn

    from ragpress.middleware.proxy.server import uvicorn_options

    common: dict[str, Any] = {
        "host": proxy.host,
        "port": proxy.port,
        "log_config": None,
        "access_log": False,  # ragpress logs each request itself, without secrets
        "server_header": False,  # the upstream's own server/date headers pass through
        "date_header": False,
        **uvicorn_options(proxy),  # head size and time, keep-alive, concurrency
    }
    if workers > 1:
        uvicorn.run(_FACTORY, factory=True, workers=workers, **common)
        return
    try:
        app = _app(settings)
    except RagpressError as exc:
        fail(exc)
    uvicorn.run(app, **common)


def _granian(settings: RagpressSettings, workers: int) -> None:
    try:
        import granian
        from granian.constants import Interfaces
    except ImportError as exc:
        raise click.UsageError(
            "--server granian needs granian: pip install 'ragpress[proxy]'"
        ) from exc
    from ragpress.middleware.proxy.server import granian_options

    granian.Granian(
        _FACTORY,
        address=settings.proxy.host,
        port=settings.proxy.port,
        interface=Interfaces.ASGI,
        workers=workers,
        factory=True,
        log_access=False,
        **granian_options(settings.proxy),  # head size and time, concurrency
    ).serve()


def _app(settings: RagpressSettings) -> Litestar:
    from ragpress.middleware.proxy import create_app

    return create_app(settings)


def worker_app() -> Litestar:
    """App factory for worker processes: the settings ``ragpress serve`` handed over."""
    from ragpress.middleware.proxy.observability import configure_logging

    settings = taken_over()
    configure_logging(settings.proxy.log_format)
    return _app(settings)
