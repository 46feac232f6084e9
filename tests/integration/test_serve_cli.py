"""``ragpress serve`` as users run it: a real process on embedded defaults."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from ragpress.cli import serve as serve_module
from tests.support.cli import main
from tests.support.fake_llm import FakeLLM
from tests.support.proxy import BREAD, CONTEXT, QUESTION


def test_flags_override_the_environment(monkeypatch):
    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_module, "_run", lambda s, **kw: seen.update(settings=s, **kw))
    monkeypatch.setenv("RAGPRESS_UPSTREAM__BASE_URL", "http://from-env/v1")
    monkeypatch.setenv("RAGPRESS_PROXY__PORT", "9999")
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--port",
            "7000",
            "--anthropic-upstream",
            "http://a/v1",
            "--no-compress",
            "--workers",
            "2",
            "--server",
            "granian",
        ],
    )
    assert result.exit_code == 0, result.output
    settings = seen["settings"]
    assert settings.proxy.port == 7000 and settings.proxy.server == "granian"
    assert settings.upstream.base_url == "http://from-env/v1"
    assert settings.upstream.anthropic_base_url == "http://a/v1"
    assert settings.proxy.compress_by_default is False and seen["workers"] == 2


def test_help_names_the_docs_page():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0 and "/docs" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.model
@pytest.mark.parametrize("server", ["uvicorn", pytest.param("granian", marks=pytest.mark.slow)])
def test_serve_runs_the_proxy_on_embedded_defaults(server, tmp_path):
    port = _free_port()
    with FakeLLM() as llm, (tmp_path / "log").open("w") as log_file:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAGPRESS_")}
        env["RAGPRESS_PROXY__API_KEYS"] = '["local-key"]'
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ragpress",
                "serve",
                "--port",
                str(port),
                "--upstream",
                llm.url,
                "--server",
                server,
            ],
            env=env,
            stderr=log_file,
            cwd=tmp_path,
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.poll() is None, (tmp_path / "log").read_text()
                assert time.monotonic() < deadline, "the proxy did not become ready"
                time.sleep(0.3)
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="local-key", max_retries=0
            )
            with client:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-test",
                    messages=[{"role": "user", "content": f"{CONTEXT} {QUESTION}"}],
                )
            assert raw.headers["x-ragpress-compression"] == "compressed"
            assert BREAD not in llm.last().json()["messages"][0]["content"]
            assert "born in Warsaw" in llm.last().json()["messages"][0]["content"]
        finally:
            process.terminate()
            assert process.wait(30) is not None
    log = (tmp_path / "log").read_text()
    assert '"event": "request"' in log and "local-key" not in log
