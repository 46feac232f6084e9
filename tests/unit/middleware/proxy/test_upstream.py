from __future__ import annotations

import json

import httpx
import pytest

from ragpress.exceptions import (
    BudgetError,
    ClientAuthenticationError,
    CompressionError,
    RequestValidationError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ragpress.middleware.proxy.sse import relay
from ragpress.middleware.proxy.upstream import (
    RetryPolicy,
    Timeouts,
    UpstreamClient,
    redact_url,
    upstream_path,
)
from ragpress.middleware.serving.errors import (
    HeaderTooLargeError,
    sse_error_event,
    to_error_response,
)
from tests.support.fake_llm import FakeLLM


def _client(transport=None, *, base="http://127.0.0.1:9/v1", retries=2, read=5.0):
    delays: list[float] = []

    async def record(seconds: float) -> None:
        delays.append(seconds)

    client = UpstreamClient(
        base_url=base,
        anthropic_base_url=base,
        timeouts=Timeouts(connect=1, read=read),
        retry=RetryPolicy(retries=retries, backoff_seconds=0.1, sleep=record),
        transport=transport,
    )
    return client, delays


async def test_connect_errors_are_retried_with_backoff_then_succeed():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        if len(attempts) < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, content=b"ok")

    client, delays = _client(httpx.MockTransport(handler))
    response = await client.send("POST", "openai", "/chat/completions", headers=[], content=b"{}")
    assert await response.read_raw() == b"ok"
    assert delays == [0.1, 0.2] and len(attempts) == 3
    await client.aclose()


async def test_errors_after_the_request_was_sent_are_never_retried():
    attempts = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    client, delays = _client(httpx.MockTransport(handler))
    with pytest.raises(UpstreamTimeoutError, match="waiting for"):
        await client.send("POST", "openai", "/chat/completions", headers=[], content=b"{}")
    assert len(attempts) == 1 and delays == []
    await client.aclose()


async def test_the_aiohttp_backend_retries_refused_connections_only():
    dead = FakeLLM().start()
    dead.stop()
    client, delays = _client(base=dead.url)
    with pytest.raises(UpstreamError, match="cannot connect") as caught:
        await client.send("POST", "openai", "/chat/completions", headers=[], content=b"{}")
    assert not isinstance(caught.value, UpstreamTimeoutError) and delays == [0.1, 0.2]
    await client.aclose()
    with FakeLLM() as llm:
        client, delays = _client(base=llm.url, read=0.2)
        headers = [(b"x-fake-fault", b"drop")]
        with pytest.raises(UpstreamError):
            await client.send("POST", "openai", "/chat/completions", headers=headers, content=b"{}")
        headers = [(b"x-fake-fault", b"delay=1")]
        with pytest.raises(UpstreamTimeoutError):
            await client.send("POST", "openai", "/chat/completions", headers=headers, content=b"{}")
        assert len(llm.requests) == 2 and delays == []
        await client.aclose()


async def test_the_aiohttp_backend_adds_no_headers_of_its_own_and_keeps_bytes_raw():
    with FakeLLM() as llm:
        client, _ = _client(base=llm.url)
        response = await client.send(
            "POST",
            "openai",
            "/chat/completions",
            headers=[(b"content-type", b"application/json")],
            content=b'{"model":"m","messages":[]}',
            query="a=1",
        )
        body = await response.read_raw()
        await client.aclose()
    sent = llm.last()
    assert sent.path == "/v1/chat/completions?a=1"
    assert set(sent.headers) == {"host", "content-type", "content-length"}
    assert json.loads(body)["object"] == "chat.completion"
    assert response.header("Content-Type") == "application/json"


def test_credentials_are_masked_in_urls_for_logs():
    assert (
        redact_url("https://user:pw@api.example.com/v1") == "https://user:****@api.example.com/v1"
    )
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("path", "built"),
    [
        ("files/file-abc/content", "/files/file-abc/content"),
        ("/models/ft:gpt-4o:acme::9x", "/models/ft:gpt-4o:acme::9x"),
        ("files?purpose=x#y", "/files%3Fpurpose=x%23y"),
        ("files/a b", "/files/a%20b"),
        ("files/", "/files/"),
        ("", "/"),
    ],
)
def test_upstream_paths_are_rebuilt_segment_by_segment(path, built):
    assert upstream_path(path) == built


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("..", None),
        ("files/../../admin", None),
        ("./files", None),
        ("files/%2e%2e/admin", None),  # %252e%252e decoded once
        ("files\\..\\admin", None),
        ("files//admin", None),
        ("files/a\x00b", None),
        ("files/../admin", b"/v1/files%2F..%2Fadmin"),
        ("files/x", b"/v1/files%5cx"),
    ],
)
def test_upstream_paths_that_could_leave_the_prefix_are_refused(path, raw):
    with pytest.raises(RequestValidationError) as caught:
        upstream_path(path, raw_path=raw)
    assert caught.value.param == "path"


@pytest.mark.parametrize(
    ("exc", "status", "kind"),
    [
        (RequestValidationError("bad", param="x"), 400, "invalid_request_error"),
        (BudgetError("too small"), 400, "invalid_request_error"),
        (ClientAuthenticationError("no key"), 401, "authentication_error"),
        (UpstreamTimeoutError("slow"), 504, "upstream_timeout"),
        (UpstreamError("gone"), 502, "upstream_error"),
        (CompressionError("boom"), 500, "compression_error"),
        (RuntimeError("secret detail"), 500, "server_error"),
        (HeaderTooLargeError("long", param="x-ragpress"), 431, "invalid_request_error"),
    ],
)
def test_one_table_maps_every_error_to_a_status_and_both_shapes(exc, status, kind):
    got, body = to_error_response(exc)
    error = json.loads(body)["error"]
    assert (got, error["type"]) == (status, kind)
    if status == 500:
        assert "secret detail" not in error["message"]
    _, anthropic = to_error_response(exc, flavor="anthropic")
    assert json.loads(anthropic)["type"] == "error"


def test_upstream_error_messages_name_no_address():
    exc = UpstreamError("vLLM at http://10.0.0.3:8000/v1 timed out: reset by http://u:p@x/v1")
    _, body = to_error_response(exc)
    message = json.loads(body)["error"]["message"]
    assert "10.0.0.3" not in message and "u:p" not in message and "timed out" in message


def test_error_bodies_are_utf8_even_when_they_quote_a_lone_surrogate():
    _, body = to_error_response(RequestValidationError("bad value \ud800", param="x"))
    assert json.loads(body.decode("utf-8"))["error"]["message"] == "bad value \ud800"


def test_framework_errors_are_mapped_by_their_status_code():
    class NotFoundError(Exception):
        status_code = 404
        detail = "Not Found"

    status, body = to_error_response(NotFoundError(), flavor="anthropic")
    assert status == 404
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Not Found"},
    }


async def test_a_broken_stream_completes_its_frame_and_ends_with_an_error_event():
    async def chunks():
        yield b'data: {"a": 1}\n\ndata: {"b"'
        raise UpstreamError("the upstream http://x failed")

    done = []
    out = [
        c async for c in relay(chunks(), flavor="openai", on_done=lambda e, n: done.append((e, n)))
    ]
    stream = b"".join(out)
    assert stream.startswith(b'data: {"a": 1}\n\ndata: {"b"\n\ndata: {"error":{')
    assert stream.endswith(b"data: [DONE]\n\n")
    assert isinstance(done[0][0], UpstreamError) and done[0][1] == 26
    event = sse_error_event(UpstreamError("x"), flavor="anthropic")
    assert event.startswith(b"event: error\ndata: ") and json.loads(event[19:])["type"] == "error"
