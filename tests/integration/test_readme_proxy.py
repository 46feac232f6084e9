"""The proxy examples run as written: the README's quick start, and the proxy guide's curl,
openai client, LiteLLM configs and Litestar mount (``docs/guides/proxy.md``).

Only the port changes: the examples use 8080, the test a free one.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
import yaml

from tests.support.docs import code_blocks, section
from tests.support.fake_llm import FakeLLM
from tests.support.proxy import running_proxy

GUIDE = section("docs/guides/proxy.md", "## Try it")
QUICK_START = section("README.md", "### Proxy")


@pytest.fixture(scope="module")
def proxy_url():
    with FakeLLM() as llm, running_proxy(llm) as url:
        yield url


def _local(text: str, url: str) -> str:
    return text.replace("http://127.0.0.1:8080", url)


@pytest.mark.parametrize("source", ["guide", "readme"])
def test_the_curl_example_runs_and_reports_compression(proxy_url, source):
    text = GUIDE if source == "guide" else QUICK_START
    curl = next(b for b in code_blocks(text, "bash") if b.startswith("curl"))
    result = subprocess.run(
        ["bash", "-c", _local(curl, proxy_url)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "HTTP/1.1 200" in result.stdout
    assert "x-ragpress-compression: compressed" in result.stdout
    assert '"object":"chat.completion"' in result.stdout


def test_the_readme_starts_the_stand_in_llm_and_the_proxy():
    start = code_blocks(QUICK_START, "bash")[0]
    assert start == code_blocks(GUIDE, "bash")[0]
    fake_llm, serve = (line.split(" &")[0].split() for line in start.splitlines())
    assert fake_llm[:2] == [".venv/bin/python", "tests/support/fake_llm.py"]
    assert serve[:2] == [".venv/bin/ragpress", "serve"] and "--upstream" in serve


def test_the_openai_example_runs(proxy_url):
    (code,) = code_blocks(GUIDE, "python")
    result = subprocess.run(
        [sys.executable, "-c", _local(code, proxy_url)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    before, arrow, after, _ = result.stdout.splitlines()[0].split()
    assert arrow == "->" and int(after) < int(before)
    assert result.stdout.splitlines()[1].startswith("I read")


def test_the_litellm_configs_point_at_routes_that_answer(proxy_url):
    routed, guarded = (yaml.safe_load(b) for b in code_blocks(GUIDE, "yaml"))
    model = routed["model_list"][0]["litellm_params"]
    assert model["model"].startswith("openai/")
    models = httpx.get(_local(model["api_base"], proxy_url) + "/models")
    assert models.status_code == 200
    guardrail = guarded["guardrails"][0]["litellm_params"]
    assert guardrail["guardrail"] == "generic_guardrail_api" and guardrail["mode"] == "pre_call"
    endpoint = _local(guardrail["api_base"], proxy_url) + "/beta/litellm_basic_guardrail_api"
    answer = httpx.post(endpoint, json={"texts": ["<context>A. B.</context> Which?"]})
    assert answer.json()["action"] in ("NONE", "GUARDRAIL_INTERVENED")
    headroom = httpx.post(f"{proxy_url}/headroom/v1/compress", json={"messages": []})
    assert headroom.status_code == 200  # `api_base: .../headroom` + LiteLLM's `/v1/compress`


@pytest.mark.model
def test_the_litestar_mount_example_runs():
    (code,) = code_blocks(
        section("docs/guides/proxy.md", "## Mounting into your own Litestar app"), "python"
    )
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/guides/proxy.md", "exec"), namespace)
    routes = {route.path for route in namespace["app"].routes}  # type: ignore[attr-defined]
    assert {"/llm/v1/chat/completions", "/llm/v1/messages", "/llm/health"} <= routes
