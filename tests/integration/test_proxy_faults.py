"""Faults injected while the proxy is under load: Redis going away, the upstream failing."""

from __future__ import annotations

import asyncio
import uuid

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
