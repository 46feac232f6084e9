"""A small, real HTTP/1.1 server on 127.0.0.1 that answers like the OpenAI and Anthropic APIs.

It stands in for the one thing that cannot run here (the LLM) and records every request it
receives, so tests can assert what the proxy compressed and what it left byte-for-byte alone.
Answers are deterministic functions of the request body (same body, same bytes), so a stream
fetched directly and one fetched through the proxy can be compared byte for byte.

Faults, for tests and the bench:

* per request, with the header ``x-fake-fault`` (the proxy passes it through like any header);
* for every request while set, with :attr:`FakeLLM.fault` (``"status=503"``, ``"drop"``, ...).

Fault strings: ``status=CODE`` (an error in the route's wire shape, ``retry-after: 0`` on 429),
``delay=SECONDS`` (before answering), ``drop`` (close without answering), ``cut=N`` (close a
stream after N events, without the terminating chunk), ``chunk-delay=SECONDS`` (between
stream events).

Run it alone (the bench does): ``python tests/support/fake_llm.py --port 0`` prints ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any, cast

CREATED = 1_700_000_000


@dataclass
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Fault:
    status: int | None = None
    delay: float = 0.0
    drop: bool = False
    cut: int | None = None
    chunk_delay: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> _Fault:
        fault = cls()
        for item in (text or "").split(","):
            key, _, value = item.strip().partition("=")
            if key == "status":
                fault.status = int(value)
            elif key == "delay":
                fault.delay = float(value)
            elif key == "drop":
                fault.drop = True
            elif key == "cut":
                fault.cut = int(value)
            elif key == "chunk-delay":
                fault.chunk_delay = float(value)
        return fault


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:24]


def _reply_text(body: bytes) -> str:
    return f"I read {len(body)} bytes and the answer is forty two."


def _last_user_text(request: dict[str, Any]) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content", "") if users else ""
    return content if isinstance(content, str) else json.dumps(content)


def chat_completion(body: bytes, request: dict[str, Any]) -> dict[str, Any]:
    text = _reply_text(body)
    prompt, completion = max(1, len(body) // 4), len(text.split())
    return {
        "id": f"chatcmpl-{_digest(body)}",
        "object": "chat.completion",
        "created": CREATED,
        "model": request.get("model", "gpt-test"),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _openai_usage(prompt, completion),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _openai_usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_stream_events(body: bytes, request: dict[str, Any]) -> list[bytes]:
    """``data:`` frames of a streamed chat completion, usage chunk included when asked for."""
    text = _reply_text(body)
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    base = {
        "id": f"chatcmpl-{_digest(body)}",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": request.get("model", "gpt-test"),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }
    usage_field = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice], **usage_field}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    words = text.split(" ")
    chunks += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    chunks.append(chunk({}, "stop"))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _openai_usage(len(body) // 4, len(words))})
    frames = [b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in chunks]
    return [*frames, b"data: [DONE]\n\n"]


def anthropic_message(body: bytes, request: dict[str, Any]) -> dict[str, Any]:
    text = _reply_text(body)
    return {
        "id": f"msg_{_digest(body)}",
        "type": "message",
        "role": "assistant",
        "model": request.get("model", "claude-test"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(1, len(body) // 4),
            "output_tokens": len(text.split()),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_stream_events(body: bytes, request: dict[str, Any]) -> list[bytes]:
    message = anthropic_message(body, request)
    text = message["content"][0]["text"]
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ("ping", {"type": "ping"}),
    ]
    for i, word in enumerate(text.split(" ")):
        delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    return [
        f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for name, data in events
    ]


def _error_body(path: str, status: int) -> dict[str, Any]:
    message = f"fake upstream error {status}"
    if path.startswith("/v1/messages"):
        kinds = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}
        return {
            "type": "error",
            "error": {"type": kinds.get(status, "api_error"), "message": message},
        }
    kinds = {429: "rate_limit_exceeded", 400: "invalid_request_error"}
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error"),
            "param": None,
            "code": None,
        }
    }


MODELS = {
    "object": "list",
    "data": [
        {"id": "gpt-test", "object": "model", "created": CREATED, "owned_by": "fake"},
        {"id": "claude-test", "object": "model", "created": CREATED, "owned_by": "fake"},
    ],
}


class _Connection(asyncio.Protocol):
    def __init__(self, server: FakeLLM) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transport has Transport's methods without being a subclass
        self.transport = cast("asyncio.Transport", transport)
        self.server._transports.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        parsed = _parse(self.buffer)
        if parsed is None:
            return
        request, consumed = parsed
        self.buffer = self.buffer[consumed:]
        self.busy = True
        asyncio.get_running_loop().create_task(self._serve(request))

    async def _serve(self, request: Recorded) -> None:
        assert self.transport is not None
        server = self.server
        if server.record:
            server.requests.append(request)
        fault = _Fault.parse(request.headers.get("x-fake-fault") or server.fault)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            self.transport.close()
            return
        keep_alive = request.headers.get("connection", "").lower() != "close"
        try:
            await self._respond(request, fault)
        except (ConnectionError, RuntimeError):
            self.transport.close()
            return
        if not keep_alive or fault.cut is not None:
            self.transport.close()
            return
        self.busy = False
        if self.buffer:
            self._next()

    async def _respond(self, request: Recorded, fault: _Fault) -> None:
        path = request.path.split("?", 1)[0]
        extra = [
            ("x-upstream-request-id", f"req_{_digest(request.body)}"),
            ("openai-processing-ms", "7"),
        ]
        if fault.status is not None:
            headers = [*extra, ("retry-after", "0")] if fault.status == 429 else extra
            self._send_json(fault.status, _error_body(path, fault.status), headers)
            return
        if request.method == "GET" and path == "/v1/models":
            self._send_json(200, MODELS, extra)
            return
        if request.method == "POST" and path == "/v1/messages/count_tokens":
            self._send_json(200, {"input_tokens": max(1, len(request.body) // 4)}, extra)
            return
        if request.method != "POST" or path not in ("/v1/chat/completions", "/v1/messages"):
            self._send_json(404, _error_body(path, 404), extra)
            return
        try:
            body = json.loads(request.body)
        except (ValueError, RecursionError):  # like a real API: 400 for what it cannot read
            self._send_json(400, _error_body(path, 400), extra)
            return
        anthropic = path == "/v1/messages"
        if not body.get("stream"):
            answer = anthropic_message if anthropic else chat_completion
            payload = answer(request.body, body)
            if self.server.echo and not anthropic:
                payload["choices"][0]["message"]["content"] = _last_user_text(body)
            self._send_json(200, payload, extra)
            return
        events = (anthropic_stream_events if anthropic else chat_stream_events)(request.body, body)
        await self._send_stream(events, extra, fault)

    def _send_json(self, status: int, payload: Any, headers: list[tuple[str, str]]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = [("content-type", "application/json"), ("content-length", str(len(body))), *headers]
        self._write_head(status, head)
        assert self.transport is not None
        self.transport.write(body)

    async def _send_stream(
        self, events: list[bytes], headers: list[tuple[str, str]], fault: _Fault
    ) -> None:
        assert self.transport is not None
        head = [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
            *headers,
        ]
        self._write_head(200, head)
        delay = fault.chunk_delay or self.server.chunk_delay
        for index, event in enumerate(events):
            if fault.cut is not None and index >= fault.cut:
                return
            if delay:
                await asyncio.sleep(delay)
            if self.transport.is_closing():
                return
            self.transport.write(b"%x\r\n%s\r\n" % (len(event), event))
        self.transport.write(b"0\r\n\r\n")

    def _write_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        assert self.transport is not None
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{k}: {v}" for k, v in headers]
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _parse(buffer: bytes) -> tuple[Recorded, int] | None:
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buffer[:end].decode("latin-1").split("\r\n")
    method, target, _ = head[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    start = end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body, position = b"", start
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            size = int(buffer[position:line_end].split(b";")[0], 16)
            chunk_start = line_end + 2
            if len(buffer) < chunk_start + size + 2:
                return None
            if size == 0:
                return Recorded(method, target, headers, body), chunk_start + 2
            body += buffer[chunk_start : chunk_start + size]
            position = chunk_start + size + 2
    length = int(headers.get("content-length", "0"))
    if len(buffer) < start + length:
        return None
    return Recorded(method, target, headers, buffer[start : start + length]), start + length


@dataclass
class FakeLLM:
    """The fake LLM API. ``with FakeLLM() as llm:`` serves on ``llm.url`` in a thread."""

    chunk_delay: float = 0.0
    """Seconds between stream events (0: as fast as possible)."""
    record: bool = True
    """Keep every request in :attr:`requests` (the bench turns this off)."""
    fault: str | None = None
    """A fault applied to every request while set (see the module docstring)."""
    echo: bool = False
    """Answer a chat completion with the text of its last user message: a "reader" whose reply
    holds the answer exactly when its prompt does (evaluation tests)."""
    requests: list[Recorded] = field(default_factory=list)
    port: int = 0
    _transports: set[asyncio.Transport] = field(default_factory=set)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the OpenAI-style API (ends in ``/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def last(self) -> Recorded:
        """The most recent request."""
        return self.requests[-1]

    async def serve(self) -> None:
        """Serve on the current event loop until cancelled."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(
            lambda: _Connection(self), "127.0.0.1", self.port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeLLM:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.serve())
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for transport in list(self._transports):
                transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0)  # let aborted transports finish closing

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        llm = FakeLLM(chunk_delay=args.chunk_delay, record=False, port=args.port)
        await llm.serve()
        print(f"PORT {llm.port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
