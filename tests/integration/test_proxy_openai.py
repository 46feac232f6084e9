"""The official openai SDK (sync, async, streaming) against the running proxy.

The upstream is a real HTTP server on 127.0.0.1 that records every request
(tests/support/fake_llm.py), so each test asserts what reached the LLM: what was compressed
and what was left byte for byte.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from ragpress.middleware.proxy import create_app
from tests.support.fake_llm import FakeLLM
from tests.support.proxy import (
    BREAD,
    CONTEXT,
    CURIE,
    QUESTION,
    error_body,
    pipelines_for,
    running_proxy,
    serve,
    settings_for,
)

SYSTEM = "You answer from the context only. <context>system prompts are never touched.</context>"


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
    llm.fault = None


@pytest.fixture
def client(proxy_url):
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="sk-client", max_retries=0) as c:
        yield c


def _user(question: str = QUESTION) -> str:
    return f"{CONTEXT}\n{question}"


def _messages(question: str = QUESTION) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": _user(question)},
    ]


def _sentences_of(text: str, original: str) -> bool:
    return all(s.strip() in original for s in text.split(". ") if s.strip())


def test_marked_context_is_compressed_and_everything_else_reaches_the_upstream_intact(client, llm):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=_messages(),
        temperature=0.2,
        extra_body={"ragpress": {"target_ratio": 2}, "future_field": {"kept": [1, 2.5, None]}},
        extra_headers={"x-trace-id": "trace-7"},
    )
    completion = raw.parse()
    sent = llm.last()
    body = sent.json()
    assert "ragpress" not in body
    assert body["future_field"] == {"kept": [1, 2.5, None]} and body["temperature"] == 0.2
    assert body["messages"][0] == {"role": "system", "content": SYSTEM}
    user = body["messages"][1]["content"]
    assert user.endswith(f"</context>\n{QUESTION}")
    assert '<document title="Marie Curie">' in user and '<document title="Bread">' in user
    curie = user.split('<document title="Marie Curie">')[1].split("</document>")[0]
    assert curie and len(curie) < len(CURIE) and _sentences_of(curie, CURIE)
    assert len(user) < len(_user())
    assert sent.headers["x-trace-id"] == "trace-7"
    assert sent.headers["authorization"] == "Bearer sk-client"
    headers = raw.headers
    assert headers["x-ragpress-compression"] == "compressed"
    assert headers["x-ragpress-method"] == "sentence_selection"
    before, after = (
        int(headers["x-ragpress-tokens-before"]),
        int(headers["x-ragpress-tokens-after"]),
    )
    assert after < before and float(headers["x-ragpress-ratio"]) == pytest.approx(
        before / after, 0.01
    )
    assert headers["x-ragpress-documents"] == "2" and "x-ragpress-ms" in headers
    assert headers["x-upstream-request-id"].startswith("req_")  # upstream headers pass through
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    direct = httpx.post(f"{llm.url}/chat/completions", content=sent.body)
    assert raw.http_response.content == direct.content  # the answer is the upstream's, unchanged


def test_unmarked_requests_travel_byte_for_byte_both_ways(proxy_url, llm):
    body = (
        b'{ "model" : "gpt-test",\n "messages":[{"role":"user",'
        b'"content":"caf\\u00e9 \\ud83d\\ude00 1e400?"}], '
        b'"n": 1.0, "x_unknown": {"deep": [true, false, null]} }'
    )
    via = httpx.post(
        f"{proxy_url}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json", "authorization": "Bearer k"},
    )
    assert llm.last().body == body
    direct = httpx.post(f"{llm.url}/chat/completions", content=body)
    assert via.status_code == direct.status_code == 200
    assert via.content == direct.content
    assert via.headers["x-ragpress-compression"] == "unmarked"


def test_streams_are_byte_identical_to_direct_ones_including_the_usage_chunk(proxy_url, llm):
    body = json.dumps(
        {
            "model": "gpt-test",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Say something."}],
        }
    ).encode()
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", content=body) as via:
        proxied = b"".join(via.iter_raw())
        assert via.headers["content-type"].startswith("text/event-stream")
    with httpx.stream("POST", f"{llm.url}/chat/completions", content=body) as direct:
        reference = b"".join(direct.iter_raw())
    assert proxied == reference
    frames = [f for f in proxied.split(b"\n\n") if f]
    assert frames[-1] == b"data: [DONE]"
    last = json.loads(frames[-2][len(b"data: ") :])
    assert last["choices"] == [] and last["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert all(json.loads(f[6:])["usage"] is None for f in frames[:-2])


async def test_async_streaming_client_sees_compression_and_the_final_usage(proxy_url, llm):
    async with openai.AsyncOpenAI(base_url=f"{proxy_url}/v1", api_key="k", max_retries=0) as c:
        response = await c.chat.completions.with_raw_response.create(
            model="gpt-test",
            messages=_messages(),
            stream=True,
            stream_options={"include_usage": True},
        )
        assert response.headers["x-ragpress-compression"] == "compressed"
        text, usage = "", None
        async for chunk in response.parse():
            text += "".join(ch.delta.content or "" for ch in chunk.choices)
            usage = chunk.usage or usage
    assert text.startswith("I read ")
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert len(llm.last().json()["messages"][1]["content"]) < len(_user())


async def test_async_client_non_streaming(proxy_url, llm):
    async with openai.AsyncOpenAI(base_url=f"{proxy_url}/v1", api_key="k", max_retries=0) as c:
        completion = await c.chat.completions.create(model="gpt-test", messages=_messages())
    content = completion.choices[0].message.content
    assert content is not None and content.startswith("I read")
    assert BREAD not in llm.last().json()["messages"][1]["content"]


def test_upstream_errors_keep_their_status_body_and_headers(client):
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gpt-test", messages=_messages(), extra_headers={"x-fake-fault": "status=429"}
        )
    assert caught.value.status_code == 429
    assert error_body(caught.value)["message"] == "fake upstream error 429"
    assert caught.value.response.headers["retry-after"] == "0"
    with pytest.raises(openai.InternalServerError) as server_error:
        client.chat.completions.create(
            model="gpt-test", messages=_messages(), extra_headers={"x-fake-fault": "status=503"}
        )
    assert server_error.value.status_code == 503


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"ragpress": {"target_ratio": 0.5}}, "ragpress.target_ratio"),
        ({"ragpress": {"target_ratio": 2, "rate": 0.5}}, "ragpress.rate"),
        ({"ragpress": {"ratio": 2}}, "ragpress.ratio"),
        ({"ragpress": {"method": "no_such_method"}}, "ragpress.method"),
        ({"ragpress": "fast"}, "ragpress"),
    ],
)
def test_bad_ragpress_options_are_400_naming_the_field(client, llm, extra, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-test", messages=_messages(), extra_body=extra)
    assert error_body(caught.value)["param"] == param
    assert error_body(caught.value)["type"] == "invalid_request_error"
    assert llm.requests == []  # nothing was forwarded


def test_the_header_controls_clients_that_cannot_add_body_fields(client, llm):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test", messages=_messages(), extra_headers={"x-ragpress": '{"compress": false}'}
    )
    assert raw.headers["x-ragpress-compression"] == "off"
    assert llm.last().json()["messages"] == _messages()
    assert "x-ragpress" not in llm.last().headers
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-test", messages=_messages(), extra_headers={"x-ragpress": "{nope"}
        )
    assert error_body(caught.value)["param"] == "x-ragpress"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=_messages(),
        extra_headers={"x-ragpress": '{"compress": false}'},
        extra_body={"ragpress": {"compress": True}},  # the body field wins over the header
    )
    assert raw.headers["x-ragpress-compression"] == "compressed"


def test_history_sent_again_compresses_to_the_same_bytes(client, llm):
    first_turn = _messages()
    client.chat.completions.create(model="gpt-test", messages=first_turn)
    sent_first = llm.last().json()["messages"]
    conversation = [
        *first_turn,
        {"role": "assistant", "content": "In Warsaw."},
        {"role": "user", "content": "And where did she study?"},
    ]
    client.chat.completions.create(model="gpt-test", messages=conversation)
    sent_second = llm.last().json()["messages"]
    assert sent_second[:2] == sent_first  # the provider's prefix cache keeps hitting
    assert sent_second[2:] == conversation[2:]


def test_models_are_passed_through(client, llm):
    assert [m.id for m in client.models.list()] == ["gpt-test", "claude-test"]
    assert llm.last().path == "/v1/models"


def test_other_endpoints_pass_through_untouched(proxy_url, llm):
    response = httpx.post(f"{proxy_url}/v1/embeddings?x=1", json={"input": CONTEXT})
    assert response.status_code == 404  # what the fake upstream says about embeddings
    assert llm.last().path == "/v1/embeddings?x=1"
    assert llm.last().json() == {"input": CONTEXT}


@pytest.mark.model
def test_the_embedded_default_compressor_keeps_the_answer(llm, minilm):
    settings = settings_for(llm)
    app = create_app(settings, pipelines=pipelines_for(settings, minilm))
    with serve(app) as url, openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as c:
        raw = c.chat.completions.with_raw_response.create(model="gpt-test", messages=_messages())
    user = llm.last().json()["messages"][1]["content"]
    assert raw.headers["x-ragpress-compression"] == "compressed"
    assert "born in Warsaw" in user
    assert "Yeast makes the dough rise" not in user
