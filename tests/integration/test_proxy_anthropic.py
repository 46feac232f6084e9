"""The official anthropic SDK (sync, async, streaming) against the running proxy."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fake_llm import FakeLLM
from tests.support.proxy import BREAD, CONTEXT, CURIE, QUESTION, error_body, running_proxy

SYSTEM = [{"type": "text", "text": f"Use the documents. {CONTEXT}"}]


def document(text: str, title: str, **extra) -> dict[str, Any]:
    return {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": text},
        "title": title,
        **extra,
    }


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture(scope="module")
def proxy_url(llm):
    with running_proxy(llm) as url:
        yield url


@pytest.fixture(autouse=True)
def _fresh(llm):
    llm.requests.clear()


@pytest.fixture
def client(proxy_url):
    with anthropic.Anthropic(base_url=proxy_url, api_key="sk-ant-client", max_retries=0) as c:
        yield c


def test_documents_after_the_cache_breakpoint_are_compressed_and_nothing_before_it(client, llm):
    cached = document(CURIE, "Curie, cached", cache_control={"type": "ephemeral"})
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": f"{CONTEXT} Old question?"},
                cached,
            ],
        },
        {"role": "assistant", "content": "Noted."},
        {
            "role": "user",
            "content": [
                document(CURIE, "Marie Curie"),
                document(BREAD, "Bread"),
                {"type": "text", "text": QUESTION},
            ],
        },
    ]
    raw = client.messages.with_raw_response.create(
        model="claude-test",
        max_tokens=64,
        system=SYSTEM,
        messages=messages,
        extra_body={"ragpress": {"target_ratio": 2}},
    )
    message = raw.parse()
    sent = llm.last()
    body = sent.json()
    assert "ragpress" not in body
    assert body["system"] == SYSTEM
    assert body["messages"][:2] == messages[:2]  # at or before cache_control: untouched
    fresh = body["messages"][2]["content"]
    assert [b["type"] for b in fresh] == ["document", "document", "text"]
    assert [b["title"] for b in fresh[:2]] == ["Marie Curie", "Bread"]
    kept = fresh[0]["source"]["data"] + fresh[1]["source"]["data"]
    assert len(kept) < len(CURIE + BREAD)
    assert fresh[2] == {"type": "text", "text": QUESTION}
    credential = sent.headers.get("x-api-key") or sent.headers["authorization"]
    assert credential.removeprefix("Bearer ") == "sk-ant-client"  # this SDK sends Bearer
    assert sent.headers["anthropic-version"]
    assert raw.headers["x-ragpress-compression"] == "compressed"
    assert message.usage.cache_read_input_tokens == 0
    assert message.content[0].text.startswith("I read")


def test_citation_documents_are_left_alone(client, llm):
    cited = document(CURIE, "Curie", citations={"enabled": True})
    client.messages.create(
        model="claude-test",
        max_tokens=8,
        messages=[{"role": "user", "content": [cited, {"type": "text", "text": QUESTION}]}],
    )
    assert llm.last().json()["messages"][0]["content"][0] == cited


def test_streamed_events_are_byte_identical_to_direct_ones(proxy_url, llm):
    body = json.dumps(
        {
            "model": "claude-test",
            "max_tokens": 16,
            "stream": True,
            "messages": [{"role": "user", "content": "Hello"}],
        }
    ).encode()
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    with httpx.stream("POST", f"{proxy_url}/v1/messages", content=body, headers=headers) as via:
        proxied = b"".join(via.iter_raw())
    with httpx.stream("POST", f"{llm.url}/messages", content=body, headers=headers) as direct:
        reference = b"".join(direct.iter_raw())
    assert proxied == reference
    assert proxied.startswith(b"event: message_start\n") and b"event: message_stop\n" in proxied


async def test_async_streaming_client_gets_text_and_final_usage(proxy_url, llm):
    client = anthropic.AsyncAnthropic(base_url=proxy_url, api_key="k", max_retries=0)
    async with (
        client,
        client.messages.stream(
            model="claude-test",
            max_tokens=32,
            messages=[{"role": "user", "content": f"{CONTEXT} {QUESTION}"}],
        ) as stream,
    ):
        text = "".join([t async for t in stream.text_stream])
        final = await stream.get_final_message()
    assert text.startswith("I read")
    assert final.usage.output_tokens == len(text.split())
    assert BREAD not in llm.last().json()["messages"][0]["content"]


def test_errors_on_messages_have_the_anthropic_shape(client, llm):
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(
            model="claude-test",
            max_tokens=8,
            messages=[{"role": "user", "content": CONTEXT}],
            extra_headers={"x-ragpress": '{"rate": 2}'},
        )
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": error_body(caught.value)["error"]["message"],
        },
    }
    assert "rate=2" in error_body(caught.value)["error"]["message"]
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model="claude-test",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault": "status=429"},
        )


def test_a_stream_cut_by_the_upstream_ends_with_an_error_event(client):
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(
            model="claude-test",
            max_tokens=8,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-fake-fault": "cut=3"},
        ) as stream,
    ):
        for _ in stream.text_stream:
            pass
    assert "fake" not in str(caught.value) or caught.value.status_code >= 500


def test_count_tokens_sees_the_compressed_request(client, llm):
    client.messages.count_tokens(
        model="claude-test", messages=[{"role": "user", "content": f"{CONTEXT} {QUESTION}"}]
    )
    assert llm.last().path == "/v1/messages/count_tokens"
    assert BREAD not in llm.last().json()["messages"][0]["content"]
