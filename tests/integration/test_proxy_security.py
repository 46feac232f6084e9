"""Attacks on the proxy (issue 21): paths, header limits, secrets in output, hostile bodies.

Everything runs against real servers on loopback: the proxy (uvicorn, configured the way
``ragpress serve`` configures it where limits matter) in front of the fake LLM, which records
every request, so each test asserts what reached the upstream, and with which credentials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from ragpress.cli import serve as serve_module
from ragpress.config import RagpressSettings
from ragpress.middleware.proxy import create_app
from tests.conftest import REQUIRE_REDIS
from tests.support.cli import main
from tests.support.fake_llm import FakeLLM
from tests.support.fakes import HashingEmbedder
from tests.support.proxy import CONTEXT, QUESTION, pipelines_for, running_proxy, serve, settings_for
from tests.support.redis_server import OOM_ARGS, RedisServer, redis_server_binary

UPSTREAM_KEY = "sk-upstream-secret-456"


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(llm):
    llm.requests.clear()
    llm.fault = None


@pytest.fixture(scope="module")
def url(llm):
    with running_proxy(llm, upstream={"api_key": UPSTREAM_KEY}) as base:
        yield base


def _raw(base: str, request: bytes, *, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is on a new connection; status, headers and body of the answer."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), headers, body


def _get(base: str, target: str) -> tuple[int, bytes]:
    status, _, body = _raw(
        base, f"GET {target} HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n".encode()
    )
    return status, body


# -- 3. path traversal in the /v1/{path} passthrough ------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/v1/%2e%2e/%2e%2e/admin/keys",
        "/v1/%2E%2E/admin",
        "/v1/../admin",
        "/v1/..",
        "/v1/files/../../admin",
        "/v1/./files/%2e%2e/%2e%2e/admin",
        "/v1/%252e%252e/%252e%252e/admin/keys",
        "/v1/files%2F..%2F..%2Fadmin",
        "/v1/files%2f%2e%2e%2f%2e%2e%2fadmin",
        "/v1/files%5C..%5C..%5Cadmin",
        "/v1/files/%2e%2e%5c%2e%2e%5cadmin",
    ],
)
def test_passthrough_paths_never_leave_v1(url, llm, target):
    status, body = _get(url, target)
    assert status in (400, 404), body
    error = json.loads(body)["error"]  # the OpenAI shape
    assert error["type"] in ("invalid_request_error", "not_found_error")
    assert "admin" not in [r.path for r in llm.requests]
    for request in llm.requests:  # nothing at all should be sent; never outside /v1
        assert request.path.startswith("/v1/") and "/.." not in request.path, request.path
    assert not any(UPSTREAM_KEY in str(r.headers) for r in llm.requests if "admin" in r.path)


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/v1/files%3Fpurpose=fine-tune", "/v1/files%3Fpurpose=fine-tune"),
        ("/v1/files%23fragment", "/v1/files%23fragment"),
        (
            "/v1/files/file-abc/content?limit=2&after=x",
            "/v1/files/file-abc/content?limit=2&after=x",
        ),
        (
            "/v1/models/ft:gpt-4o-mini:acme:custom:9xyz",
            "/v1/models/ft:gpt-4o-mini:acme:custom:9xyz",
        ),
        ("/v1/files/a%20b", "/v1/files/a%20b"),
    ],
)
def test_passthrough_forwards_exactly_the_path_it_was_sent(url, llm, target, forwarded):
    status, _ = _get(url, target)
    assert status == 404  # the fake LLM knows none of these: its own 404 comes back
    assert [r.path for r in llm.requests] == [forwarded]
    assert llm.last().headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


# -- 2. /ready notices a cache that refuses writes -------------------------------------------


@contextlib.contextmanager
def _refusing_redis(kind: str, folder: Path) -> Iterator[str]:
    """A throwaway redis-server of our own that refuses writes the ``kind`` way (or not)."""
    if redis_server_binary() is None:
        if REQUIRE_REDIS:
            pytest.fail("redis-server is not on PATH, and RAGPRESS_REQUIRE_REDIS is set")
        pytest.skip("redis-server is not on PATH")
    with contextlib.ExitStack() as stack:
        if kind == "oom":  # at maxmemory with noeviction
            url = stack.enter_context(RedisServer(folder, *OOM_ARGS)).url
        elif kind == "readonly":  # a replica
            primary = stack.enter_context(RedisServer(folder / "primary"))
            url = stack.enter_context(
                RedisServer(folder / "replica", "--replicaof", "127.0.0.1", str(primary.port))
            ).url
        elif kind == "noreplicas":  # min-replicas-to-write, and no replica
            url = stack.enter_context(RedisServer(folder, "--min-replicas-to-write", "1")).url
        else:
            url = stack.enter_context(RedisServer(folder)).url
        yield url


def _ready(llm, redis_url: str, *, fail_open: bool) -> httpx.Response:
    settings = settings_for(
        llm,
        cache={"backend": "redis", "url": redis_url, "namespace": "ready", "fail_open": fail_open},
    )
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    with serve(app) as base:
        return httpx.get(f"{base}/ready", timeout=30)


@pytest.mark.parametrize("kind", ["oom", "readonly", "noreplicas"])
def test_ready_reports_a_cache_that_refuses_writes(llm, kind, tmp_path):
    with _refusing_redis(kind, tmp_path) as redis_url:
        lenient = _ready(llm, redis_url, fail_open=True)
        strict = _ready(llm, redis_url, fail_open=False)
    assert lenient.status_code == 200, lenient.text  # fail-open: serving, without the cache
    assert lenient.json()["cache"] == "degraded"
    assert strict.status_code == 503, strict.text  # the cache is required: not ready
    assert strict.json() | {"methods": None} == {
        "status": "not ready",
        "cache": "degraded",
        "methods": None,
    }


def test_ready_reports_a_healthy_cache_as_ok(llm, tmp_path):
    with _refusing_redis("none", tmp_path) as redis_url:
        response = _ready(llm, redis_url, fail_open=False)
    assert response.status_code == 200 and response.json()["cache"] == "ok"


# -- 5. limits on header size, header time and idle connections ------------------------------


@pytest.fixture
def _restore_ragpress_logging():
    root = logging.getLogger("ragpress")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def _as_ragpress_serve_runs(
    monkeypatch: pytest.MonkeyPatch, settings: RagpressSettings
) -> dict[str, Any]:
    """The app and the ``uvicorn.run`` arguments ``ragpress serve`` would use."""
    import uvicorn

    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: captured.update(app=app, **kw))
    monkeypatch.setattr(
        serve_module,
        "_app",
        lambda s: create_app(s, pipelines=pipelines_for(s, HashingEmbedder())),
    )
    serve_module._run(settings, workers=1, verbose=False)
    return captured


@contextlib.contextmanager
def _served_by_ragpress_serve(monkeypatch, settings: RagpressSettings) -> Iterator[str]:
    options = _as_ragpress_serve_runs(monkeypatch, settings)
    app = options.pop("app")
    for where in ("host", "port"):
        options.pop(where)
    with serve(app, **options) as base:
        yield base


@pytest.mark.usefixtures("_restore_ragpress_logging")
def test_a_huge_header_is_refused_with_431_before_it_is_buffered(monkeypatch, llm):
    with _served_by_ragpress_serve(monkeypatch, settings_for(llm)) as base:  # default limits
        parts = urlsplit(base)
        started = time.monotonic()
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\nx-big: ")
            sent = 0
            with contextlib.suppress(OSError):  # the server hangs up part way through
                while sent < 8 * 1024 * 1024:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            answer = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    answer += chunk
        assert sent < 8 * 1024 * 1024 or answer, "the server read 8 MiB of one header"
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert time.monotonic() - started < 15
        # a normal request on a new connection still works
        assert httpx.get(f"{base}/health").status_code == 200


def _seconds_until_closed(sock: socket.socket, trickle: bool) -> float:
    """Keep a connection busy the slow-loris way; seconds until the server closes it (<= 20)."""
    started = time.monotonic()
    sock.settimeout(0.3)
    for i in range(66):
        try:
            if trickle:  # one more header line every 0.3 s, never the blank line
                sock.sendall(f"x-slow-{i}: 1\r\n".encode())
            if sock.recv(65536) == b"":
                break
        except TimeoutError:
            continue
        except OSError:  # reset by the server: closed as well
            break
    return time.monotonic() - started


@pytest.mark.usefixtures("_restore_ragpress_logging")
def test_slow_headers_and_silent_connections_are_closed(monkeypatch, llm):
    proxy = {"header_timeout_seconds": 1, "keepalive_timeout_seconds": 1}
    with _served_by_ragpress_serve(monkeypatch, settings_for(llm, proxy=proxy)) as base:
        parts = urlsplit(base)
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as silent:
            assert _seconds_until_closed(silent, trickle=False) < 15
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as slow:
            slow.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n")
            assert _seconds_until_closed(slow, trickle=True) < 15
        # after a response, an idle keep-alive connection is closed too
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as idle:
            idle.sendall(b"GET /health HTTP/1.1\r\nHost: proxy\r\n\r\n")
            assert idle.recv(65536).startswith(b"HTTP/1.1 200")
            assert _seconds_until_closed(idle, trickle=False) < 15


@pytest.mark.usefixtures("_restore_ragpress_logging")
def test_serve_passes_the_limits_to_uvicorn(monkeypatch, llm):
    import uvicorn

    proxy = {
        "max_header_bytes": 20_000,
        "keepalive_timeout_seconds": 7,
        "header_timeout_seconds": 3,
        "max_concurrency": 55,
    }
    options = _as_ragpress_serve_runs(monkeypatch, settings_for(llm, proxy=proxy))
    config = uvicorn.Config(options.pop("app"), **options)
    assert config.timeout_keep_alive == 7
    assert config.limit_concurrency == 55
    assert config.h11_max_incomplete_event_size == 20_000
    config.load()
    limits = config.http_protocol_class.keywords["limits"]  # type: ignore[attr-defined]
    assert (limits.max_head_bytes, limits.header_timeout_seconds) == (20_000, 3)


@pytest.mark.usefixtures("_restore_ragpress_logging")
def test_serve_passes_the_limits_to_granian(monkeypatch, llm):
    granian = pytest.importorskip("granian")
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, target: str, **kwargs: Any) -> None:
            seen.update(kwargs, target=target)

        def serve(self) -> None:
            seen["served"] = True

    monkeypatch.setattr(granian, "Granian", Recorder)
    monkeypatch.setenv("RAGPRESS_SERVE_SETTINGS", "")  # restored after: _run hands settings over
    proxy = {
        "server": "granian",
        "max_header_bytes": 20_000,
        "header_timeout_seconds": 3,
        "max_concurrency": 55,
    }
    serve_module._run(settings_for(llm, proxy=proxy), workers=1, verbose=False)
    assert seen["served"] and seen["backpressure"] == 55
    http1 = seen["http1_settings"]
    assert http1.header_read_timeout == 3000 and http1.max_buffer_size == 20_000


def test_the_options_header_is_capped_with_431(url, llm):
    options = json.dumps({"query": "q" * 20_000})
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": f"{CONTEXT} {QUESTION}"}]},
        headers={"x-ragpress": options},
    )
    assert response.status_code == 431, response.text
    assert response.json()["error"]["param"] == "x-ragpress"
    assert "RAGPRESS_PROXY__MAX_OPTIONS_HEADER_BYTES" in response.json()["error"]["message"]
    anthropic = httpx.post(
        f"{url}/v1/messages",
        json={"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-ragpress": options},
    )
    assert anthropic.status_code == 431 and anthropic.json()["type"] == "error"
    assert llm.requests == []


# -- 8. secrets in output ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_upstream_failures_do_not_reveal_the_upstream_url(llm):
    dead = _free_port()
    upstream = {
        "base_url": f"http://svc-user:hunter2@127.0.0.1:{dead}/v1",
        "anthropic_base_url": f"http://127.0.0.1:{dead}/v1?key=sk-ant-in-url",
        "connect_retries": 0,
    }
    settings = settings_for(llm, upstream=upstream)
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    with serve(app) as base:
        refused = httpx.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": []})
        anthropic = httpx.post(f"{base}/v1/messages", json={"model": "c", "messages": []})
    assert refused.status_code == 502 and "cannot connect" in refused.json()["error"]["message"]
    assert anthropic.status_code == 502 and anthropic.json()["type"] == "error"
    for response in (refused, anthropic):
        for secret in ("hunter2", "svc-user", "sk-ant-in-url", "127.0.0.1", str(dead)):
            assert secret not in response.text, response.text


def test_timeouts_do_not_reveal_the_upstream_url(url, llm):
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "m", "messages": []},
        headers={"x-ragpress-timeout": "0.2", "x-fake-fault": "delay=2"},
    )
    assert response.status_code == 504
    assert "127.0.0.1" not in response.text and str(llm.port) not in response.text


@pytest.mark.usefixtures("_restore_ragpress_logging")
def test_the_start_up_log_masks_credentials_in_urls(monkeypatch, capsys, llm):
    settings = settings_for(
        llm, upstream={"base_url": "https://svc:hunter2@llm.internal/v1?api_key=sk-in-query"}
    )
    monkeypatch.setattr(serve_module, "_app", lambda s: object())
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    serve_module._run(settings, workers=1, verbose=False)
    log = capsys.readouterr().err
    assert "llm.internal" in log  # the line is there...
    assert "hunter2" not in log and "sk-in-query" not in log  # ...without the secrets


def test_config_show_masks_passwords_in_urls(monkeypatch):
    monkeypatch.setenv("RAGPRESS_CACHE__URL", "redis://:hunter2@cache.internal:6379/0")
    monkeypatch.setenv("RAGPRESS_UPSTREAM__BASE_URL", "https://u:pw-in-url@llm/v1?key=sk-3")
    monkeypatch.setenv("RAGPRESS_UPSTREAM__API_KEY", "sk-configured")
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["cache"]["url"].startswith("redis://:") and "cache.internal" in result.output
    for secret in ("hunter2", "pw-in-url", "sk-3", "sk-configured"):
        assert secret not in result.output


@pytest.mark.parametrize("command", [["config", "show"], ["serve"]])
def test_a_bad_variable_is_a_usage_error_not_a_traceback(monkeypatch, command):
    monkeypatch.setattr(serve_module, "_run", lambda s, **kw: None)
    monkeypatch.setenv("RAGPRESS_COMPRESSION__PARAMS", "model=x")
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2, result.output
    assert "RAGPRESS_COMPRESSION__PARAMS" in result.output and "JSON" in result.output


def test_plain_client_keys_start_the_proxy(monkeypatch):
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_module, "_run", lambda s, **kw: seen.update(settings=s))
    monkeypatch.setenv("RAGPRESS_PROXY__API_KEYS", "secret")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 0, result.output
    assert [k.get_secret_value() for k in seen["settings"].proxy.api_keys] == ["secret"]


# -- 9. hostile bodies: no 500, valid JSON upstream -------------------------------------------


def _strict_json(raw: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def _post(base: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{base}/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


MARKED = f'{{"role":"user","content":"{CONTEXT.replace(chr(34), chr(92) + chr(34))} {QUESTION}"}}'


def test_deeply_nested_bodies_are_refused_or_forwarded_never_a_500(url, llm):
    deep = b"[" * 100_000 + b"]" * 100_000
    with_field = b'{"model":"m","ragpress":{},"messages":[' + MARKED.encode() + b'],"x":' + deep
    refused = _post(url, with_field + b"}")
    assert refused.status_code == 400, refused.text
    assert "nest" in refused.json()["error"]["message"]
    assert llm.requests == []
    without = b'{"model":"m","messages":[' + MARKED.encode() + b'],"x":' + deep + b"}"
    forwarded = _post(url, without)
    assert forwarded.status_code == 400  # the upstream's answer: the body failed open, as sent
    assert forwarded.headers["x-ragpress-compression"] == "unmarked"
    assert llm.last().body == without


def test_a_deeply_nested_options_header_is_a_400(url, llm):
    response = _post(
        url,
        b'{"model":"m","messages":[' + MARKED.encode() + b"]}",
        **{"x-ragpress": "[" * 3000 + "]" * 3000},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "x-ragpress"
    assert llm.requests == []


@pytest.mark.parametrize(
    "content", ["\\ud800 lone high", "tail \\udfff", f"{CONTEXT} \\udc00 {QUESTION}"]
)
def test_lone_surrogates_are_forwarded_as_valid_json(url, llm, content):
    content = content.replace('"', '\\"')
    body = f'{{"model":"m","ragpress":{{}},"messages":[{{"role":"user","content":"{content}"}}]}}'
    response = _post(url, body.encode())
    if "<context>" in content and response.status_code == 400:  # in the question: said so
        assert "surrogate" in response.json()["error"]["message"]
        return
    assert response.status_code == 200, response.text
    sent = _strict_json(llm.last().body)  # valid UTF-8, valid JSON
    assert "ragpress" not in sent
    if "<context>" not in content:  # unmarked text arrives as the client wrote it
        assert sent["messages"][0]["content"] == json.loads(f'"{content}"')


@pytest.mark.parametrize("number", ["1e400", "-1E+999", "9" * 5000])
def test_numbers_python_cannot_round_trip_are_named_in_a_400(url, llm, number):
    body = f'{{"model":"m","ragpress":{{}},"temperature":{number},"messages":[{MARKED}]}}'
    response = _post(url, body.encode())
    assert response.status_code == 400, response.text
    assert number[:20] in response.json()["error"]["message"]
    assert llm.requests == []
    plain = f'{{"model":"m","temperature":{number},"messages":[{MARKED}]}}'.encode()
    forwarded = _post(url, plain)  # without a ragpress field: forwarded untouched
    assert forwarded.headers["x-ragpress-compression"] == "unmarked"
    assert llm.last().body == plain


def test_large_and_precise_numbers_survive_a_rewrite(url, llm):
    numbers = '"seed":12345678901234567890123,"top_p":0.1,"x":1e300'
    body = f'{{"model":"m","ragpress":{{}},{numbers},"messages":[{MARKED}]}}'
    assert _post(url, body.encode()).status_code == 200
    sent = _strict_json(llm.last().body)
    assert sent["seed"] == 12345678901234567890123 and sent["top_p"] == 0.1 and sent["x"] == 1e300


# -- 9. client disconnects are not upstream errors --------------------------------------------


def _metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_hangs_up_mid_stream_is_counted_apart_and_logged_quietly(llm, caplog):
    settings = settings_for(llm)
    app = create_app(settings, pipelines=pipelines_for(settings, HashingEmbedder()))
    body = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    )
    with serve(app) as base, caplog.at_level(logging.DEBUG, logger="ragpress"):
        parts = urlsplit(base)
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(
                (
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                    "content-type: application/json\r\nx-fake-fault: chunk-delay=0.2\r\n"
                    f"content-length: {len(body)}\r\n\r\n{body}"
                ).encode()
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
            sock.sendall(  # and one that hangs up half way through its body
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: proxy\r\n"
                b'content-type: application/json\r\ncontent-length: 5000\r\n\r\n{"model"'
            )
            time.sleep(0.2)
        disconnects = 'ragpress_client_disconnects_total{route="chat_completions"}'
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            _metric(base, "ragpress_streams_active") or _metric(base, disconnects) < 2
        ):
            time.sleep(0.1)
        assert _metric(base, disconnects) == 2
        assert _metric(base, 'ragpress_upstream_errors_total{kind="stream"}') == 0
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]
