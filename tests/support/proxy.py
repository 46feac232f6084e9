"""Helpers for the proxy tests: run an app with uvicorn in a thread, build test pipelines."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, Protocol

import uvicorn

from ragpress.config import RagpressSettings
from ragpress.middleware.pipeline.factory import PipelineSet, build_pipeline

CURIE = (
    "Marie Curie won two Nobel Prizes. She was born in Warsaw in 1867. She studied physics in "
    "Paris. Her husband was Pierre Curie."
)
BREAD = "Bread is made from flour and water. Yeast makes the dough rise. Ovens bake it."
CONTEXT = (
    f'<context><document title="Marie Curie">{CURIE}</document>'
    f'<document title="Bread">{BREAD}</document></context>'
)
QUESTION = "Where was Marie Curie born?"


class _StatusError(Protocol):
    body: object


def error_body(error: _StatusError) -> dict[str, Any]:
    """The JSON body of an openai or anthropic ``APIStatusError`` (the SDKs type it ``object``)."""
    assert isinstance(error.body, dict)
    return error.body


def settings_for(llm: Any, **sections: Any) -> RagpressSettings:
    """Settings pointing both upstreams at the fake LLM, with an in-process cache."""
    upstream = {"base_url": llm.url, "anthropic_base_url": llm.url, **sections.pop("upstream", {})}
    cache = {"backend": "memory", **sections.pop("cache", {})}
    return RagpressSettings(_env_file=None, upstream=upstream, cache=cache, **sections)


def pipelines_for(settings: RagpressSettings, embedder: Any, cache: Any = None) -> PipelineSet:
    """The configured pipeline, with ``embedder`` instead of the real model."""
    pipeline = build_pipeline(settings, embedder=embedder, cache=cache)
    return PipelineSet(
        {pipeline.method: pipeline}, store=pipeline.cache.store if pipeline.cache else None
    )


@contextlib.contextmanager
def running_proxy(llm: Any, embedder: Any = None, **sections: Any) -> Iterator[str]:
    """The proxy in front of ``llm`` (hashing embedder unless one is given), served on a port."""
    from ragpress.middleware.proxy import create_app
    from tests.support.fakes import HashingEmbedder

    settings = settings_for(llm, **sections)
    app = create_app(settings, pipelines=pipelines_for(settings, embedder or HashingEmbedder()))
    with serve(app) as url:
        yield url


@contextlib.contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port; yields ``http://127.0.0.1:PORT``.

    ``options`` are more ``uvicorn.Config`` arguments (what ``ragpress serve`` passes, in the
    tests of its limits).
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    base: dict[str, Any] = {
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "date_header": False,
    }
    config = uvicorn.Config(app, **{**base, **options, "lifespan": "on"})
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
