"""Faults injected while the proxy is under load: Redis going away, the upstream failing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ragpress.middleware.proxy import create_app
from tests.support.fake_llm import FakeLLM
from tests.support.fakes import HashingEmbedder
from tests.support.proxy import QUESTION, pipelines_for, serve, settings_for


def _messages(i: int) -> list[ChatCompletionMessageParam]:
    docs = "".join(
        f'<document title="Doc {i}-{j}">Fact {i}.{j} is about topic {j}. Marie Curie was born '
        f"in Warsaw. Unrelated sentence number {i * 10 + j}. Another filler line.</document>"
        for j in range(3)
    )
    return [{"role": "user", "content": f"<context>{docs}</context> {QUESTION}"}]


@pytest.fixture
def llm():
    with FakeLLM() as server:
        yield server


@pytest.mark.redis
async def test_redis_going_away_mid_load_never_fails_a_request(llm, redis_relay):
    settings = settings_for(
        llm,
        cache={
            "backend": "redis",
            "url": redis_relay.url,
            "namespace": f"test-proxy-{uuid.uuid4().hex[:8]}",
            "retry_after_seconds": 0.2,
        },
    )
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    with serve(app) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:

            async def one(i: int) -> str:
                raw = await client.chat.completions.with_raw_response.create(
                    model="gpt-test", messages=_messages(i % 12)
                )
                return raw.headers["x-ragpress-compression"]

            first = await asyncio.gather(*(one(i) for i in range(12)))
            outage = asyncio.gather(*(one(i) for i in range(12, 48)))
            await asyncio.sleep(0.05)
            redis_relay.stop()  # Redis disappears while those requests are in flight
            during = await outage
            after_down = await asyncio.gather(*(one(i) for i in range(12)))
            redis_relay.start()
            await asyncio.sleep(0.3)  # past retry_after_seconds: the cache is tried again
            recovered = await asyncio.gather(*(one(i) for i in range(12)))
        metrics = httpx.get(f"{url}/metrics").text
    assert set(first + during + after_down + recovered) == {"compressed"}
    errors = next(x for x in metrics.splitlines() if x.startswith("ragpress_cache_errors_total"))
    assert float(errors.split()[-1]) >= 1
    hits = next(x for x in metrics.splitlines() if x.startswith("ragpress_cache_hits_total"))
    assert float(hits.split()[-1]) > 0


async def test_upstream_faults_mid_load_give_clean_errors_and_the_proxy_recovers(llm):
    settings = settings_for(llm, upstream={"connect_retries": 0, "timeout_seconds": 2})
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    statuses: list[int] = []
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def one(i: int, stream: bool) -> None:
                body = {"model": "gpt-test", "messages": _messages(i % 5), "stream": stream}
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    content = await response.aread()
                statuses.append(response.status_code)
                if response.status_code == 200 and stream:
                    events = content.split(b"\n\n")
                    assert content.endswith(b"data: [DONE]\n\n"), content[-200:]
                    assert all(e.startswith(b"data: ") for e in events if e)
                elif response.status_code >= 500:
                    assert response.json()["error"]["message"]

            async def load(start: int) -> None:
                await asyncio.gather(*(one(start + i, stream=i % 2 == 0) for i in range(20)))

            await load(0)
            for fault in ("status=503", "drop", "cut=3", "delay=3"):
                llm.fault = fault
                await load(100)
            llm.fault = None
            await load(200)
            health = await client.get("/ready")
    assert health.status_code == 200
    assert 500 not in statuses  # never our own failure
    assert set(statuses) <= {200, 502, 503, 504}
    assert statuses[-20:] == [200] * 20  # recovered


async def test_a_stream_cut_mid_way_ends_with_an_openai_error_the_sdk_raises(llm):
    settings = settings_for(llm)
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    with serve(app) as url:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            stream = await client.chat.completions.create(
                model="gpt-test",
                messages=_messages(0),
                stream=True,
                extra_headers={"x-fake-fault": "cut=4"},
            )
            received = []
            with pytest.raises(openai.APIError, match="upstream"):
                async for chunk in stream:
                    received.append(chunk)
    assert 0 < len(received) < 10


# -- the fault matrix: each upstream failure, on each API, streamed or not --------------------
#
# What docs/guides/proxy.md ("Operations", "Errors") promises: an unreachable upstream is a 502
# and a timeout a 504, in the route's own error shape; the upstream's own error statuses pass
# through untouched; a stream the upstream breaks off (or stops feeding) ends with one error
# event in the route's format (OpenAI: then `data: [DONE]`), never with a hang or a bare EOF.

ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "gpt-test"}),
    "anthropic": ("/v1/messages", {"model": "claude-test", "max_tokens": 8}),
}
ERROR_TYPES = {  # (status, OpenAI type, Anthropic type)
    502: ("upstream_error", "api_error"),
    504: ("upstream_timeout", "timeout_error"),
}


@pytest.fixture(scope="module")
def faulty():
    """The proxy in front of the fake LLM (1 s read timeout), and one in front of nothing."""
    dead = FakeLLM().start()
    dead.stop()  # a port nobody listens on
    with FakeLLM() as llm:
        upstream = {"timeout_seconds": 1, "connect_retries": 0}
        live = settings_for(llm, upstream=upstream)
        nowhere = {"base_url": dead.url, "anthropic_base_url": dead.url}
        down = settings_for(llm, upstream={**upstream, **nowhere})
        with (
            serve(create_app(live, pipelines=pipelines_for(live, HashingEmbedder()))) as url,
            serve(create_app(down, pipelines=pipelines_for(down, HashingEmbedder()))) as down_url,
        ):
            yield llm, url, down_url


def _call(base: str, flavor: str, *, stream: bool, fault: str | None) -> httpx.Response:
    path, fields = ROUTES[flavor]
    body = {**fields, "stream": stream, "messages": _messages(1)}
    headers = {"x-fake-fault": fault} if fault else {}
    return httpx.post(f"{base}{path}", json=body, headers=headers, timeout=30)


def _assert_error_shape(response: httpx.Response, flavor: str, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    openai_type, anthropic_type = ERROR_TYPES[status]
    body = response.json()
    if flavor == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == anthropic_type
    else:
        assert body["error"]["type"] == openai_type and body["error"]["message"]
    assert "127.0.0.1" not in response.text  # the upstream's address stays in the log


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "status"),
    [("down", 502), ("drop", 502), ("delay=3", 504)],
    ids=["down", "drop", "slow"],
)
def test_an_upstream_that_fails_before_answering_gives_502_or_504_in_the_route_shape(
    faulty, flavor, stream, fault, status
):
    llm, url, down_url = faulty
    llm.requests.clear()
    if fault == "down":
        response = _call(down_url, flavor, stream=stream, fault=None)
        assert llm.requests == []
    else:
        response = _call(url, flavor, stream=stream, fault=fault)
        assert len(llm.requests) == 1  # sent once: a request that reached it is never retried
    _assert_error_shape(response, flavor, status)
    if fault == "down":
        assert "cannot connect to the upstream" in response.text


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [429, 500, 503, 529])
def test_the_upstreams_own_error_statuses_pass_through_untouched(faulty, flavor, stream, status):
    _, url, _ = faulty
    response = _call(url, flavor, stream=stream, fault=f"status={status}")
    assert response.status_code == status
    expected_type = {
        "openai": {429: "rate_limit_exceeded"}.get(status, "server_error"),
        "anthropic": {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error"),
    }[flavor]
    body = response.json()
    error = body["error"]
    assert error["message"] == f"fake upstream error {status}" and error["type"] == expected_type
    if status == 429:
        assert response.headers["retry-after"] == "0"


def _events(raw: bytes) -> list[bytes]:
    return [event for event in raw.split(b"\n\n") if event.strip()]


@pytest.mark.parametrize("flavor", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("fault", "status"), [("cut=3", 502), ("chunk-delay=3", 504)], ids=["cut", "stalled"]
)
def test_a_stream_the_upstream_breaks_off_ends_with_one_error_event(faulty, flavor, fault, status):
    _, url, _ = faulty
    response = _call(url, flavor, stream=True, fault=fault)
    assert response.status_code == 200  # the stream had started
    events = _events(response.content)
    openai_type, anthropic_type = ERROR_TYPES[status]
    if flavor == "openai":
        *relayed, error, done = events
        assert done == b"data: [DONE]"
        assert json.loads(error.removeprefix(b"data: "))["error"]["type"] == openai_type
        assert all(e.startswith(b"data: {") for e in relayed)
    else:
        *relayed, error = events
        name, data = error.split(b"\n", 1)
        assert name == b"event: error"
        payload = json.loads(data.removeprefix(b"data: "))
        assert payload["type"] == "error" and payload["error"]["type"] == anthropic_type
        assert all(e.startswith(b"event: ") for e in relayed)
    assert len(relayed) == (3 if fault.startswith("cut") else 0)
    assert b"127.0.0.1" not in response.content
