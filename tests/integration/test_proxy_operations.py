"""Operations: keys, size limits, timeouts, fail-open, health, metrics, logs without secrets."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ragpress.compressors.base import BaseCompressor
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.middleware.pipeline.factory import PipelineSet
from ragpress.middleware.proxy import create_app
from tests.support.fake_llm import FakeLLM
from tests.support.fakes import HashingEmbedder
from tests.support.proxy import CONTEXT, QUESTION, pipelines_for, serve, settings_for

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"{CONTEXT} {QUESTION}"}]
CLIENT_KEY = "rp-client-secret-123"
UPSTREAM_KEY = "sk-upstream-secret-456"


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(llm):
    llm.requests.clear()
    llm.fault = None


def _app(llm, embedder=None, pipelines=None, **sections):
    settings = settings_for(llm, **sections)
    return create_app(
        settings, pipelines=pipelines or pipelines_for(settings, embedder or HashingEmbedder())
    )


@pytest.fixture(scope="module")
def locked_url(llm):
    app = _app(
        llm,
        proxy={"api_keys": [CLIENT_KEY, "another-key"], "max_body_bytes": 20_000},
        upstream={"api_key": UPSTREAM_KEY, "anthropic_api_key": "sk-ant-upstream"},
    )
    with serve(app) as url:
        yield url


def test_requests_without_a_valid_client_key_get_401_in_openai_shape(locked_url, llm):
    for key in (None, "wrong", CLIENT_KEY[:-1]):
        headers = {} if key is None else {"authorization": f"Bearer {key}"}
        response = httpx.post(
            f"{locked_url}/v1/chat/completions", json={"messages": MESSAGES}, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
    client = openai.OpenAI(base_url=f"{locked_url}/v1", api_key="wrong", max_retries=0)
    with client, pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert llm.requests == []


def test_the_client_key_is_consumed_and_the_configured_upstream_key_is_sent(locked_url, llm):
    with openai.OpenAI(base_url=f"{locked_url}/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert llm.last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in str(llm.last().headers)


def test_a_key_in_x_ragpress_key_lets_the_clients_own_credentials_through(locked_url, llm):
    response = httpx.post(
        f"{locked_url}/v1/messages",
        json={"model": "claude-test", "max_tokens": 5, "messages": MESSAGES},
        headers={"x-ragpress-key": "another-key", "x-api-key": "sk-ant-own"},
    )
    assert response.status_code == 200
    sent = llm.last().headers
    assert sent["x-api-key"] == "sk-ant-upstream"  # a configured upstream key always wins
    assert "x-ragpress-key" not in sent


def test_bodies_over_the_limit_get_413_in_the_routes_shape(locked_url, llm):
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 30_000}]}
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    response = httpx.post(f"{locked_url}/v1/chat/completions", json=big, headers=auth)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"
    assert "RAGPRESS_PROXY__MAX_BODY_BYTES" in response.json()["error"]["message"]
    response = httpx.post(f"{locked_url}/v1/messages", json=big, headers=auth)
    assert response.status_code == 413
    assert response.json()["type"] == "error"
    assert llm.requests == []


def test_secrets_never_reach_the_logs(locked_url, llm, caplog):
    caplog.set_level(logging.DEBUG, logger="ragpress")
    auth = {"authorization": f"Bearer {CLIENT_KEY}"}
    httpx.post(
        f"{locked_url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=auth
    )
    httpx.post(
        f"{locked_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"authorization": "Bearer wrong-key-789"},
    )
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "request" in text  # the access log did run
    for secret in (CLIENT_KEY, UPSTREAM_KEY, "wrong-key-789", "Marie Curie"):
        assert secret not in text


@pytest.fixture(scope="module")
def open_url(llm):
    with serve(_app(llm, upstream={"timeout_seconds": 5, "connect_retries": 1})) as url:
        yield url


def test_the_per_request_timeout_header_gives_504(open_url, llm):
    response = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"x-ragpress-timeout": "0.2", "x-fake-fault": "delay=1"},
    )
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"
    bad = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"messages": []},
        headers={"x-ragpress-timeout": "soon"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-ragpress-timeout"


def test_an_upstream_that_drops_the_connection_gives_502(open_url, llm):
    response = httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"messages": MESSAGES},
        headers={"x-fake-fault": "drop"},
    )
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"
    assert len(llm.requests) == 1  # the request reached the upstream: it is never sent twice


def test_an_unreachable_upstream_is_retried_then_gives_502(llm):
    dead = FakeLLM().start()
    dead.stop()  # a port nobody listens on
    app = _app(llm, upstream={"base_url": dead.url, "connect_retries": 2})
    with serve(app) as url:
        response = httpx.post(f"{url}/v1/chat/completions", json={"messages": MESSAGES})
    assert response.status_code == 502
    assert "cannot connect" in response.json()["error"]["message"]


def test_unknown_paths_and_methods_answer_in_openai_shape(open_url):
    missing = httpx.get(f"{open_url}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(f"{open_url}/v1/chat/completions")
    assert wrong.status_code in (404, 405) and "error" in wrong.json()


def test_health_readiness_and_metrics(open_url, llm):
    assert httpx.get(f"{open_url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{open_url}/ready")
    assert ready.status_code == 200 and ready.json()["methods"] == ["sentence_selection"]
    httpx.post(f"{open_url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    httpx.post(
        f"{open_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"x-fake-fault": "status=500"},
    )
    metrics = httpx.get(f"{open_url}/metrics").text
    assert (
        'ragpress_requests_total{compression="compressed",route="chat_completions",status="200"}'
        in metrics
    )
    assert 'ragpress_upstream_errors_total{kind="status"}' in metrics
    saved = next(
        line for line in metrics.splitlines() if line.startswith("ragpress_tokens_saved_total")
    )
    assert float(saved.split()[-1]) > 0
    assert (
        "ragpress_cache_hits_total" in metrics
        and "ragpress_request_duration_seconds_bucket" in metrics
    )


class ExplodingCompressor(BaseCompressor):
    name = "exploding"

    def compress(self, query, passages, options, *, analyses=None):
        raise RuntimeError("the model fell over")


def _exploding(**proxy):
    return PipelineSet({"exploding": Pipeline([Stage(ExplodingCompressor())])})


def test_compressor_errors_fail_open_with_a_header(llm):
    with serve(_app(llm, pipelines=_exploding())) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
    assert response.status_code == 200
    assert response.headers["x-ragpress-compression"] == "failed-open"
    assert "RuntimeError: the model fell over" in response.headers["x-ragpress-error"]
    assert llm.last().json()["messages"] == MESSAGES


def test_compressor_errors_fail_the_request_when_fail_open_is_off(llm):
    with serve(_app(llm, pipelines=_exploding(), proxy={"fail_open": False})) as url:
        response = httpx.post(
            f"{url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
        )
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "compression_error"
    assert llm.requests == []
