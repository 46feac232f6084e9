"""The README's proxy examples (curl, openai client, LiteLLM configs) run as written.

Only the port changes: the README uses 8080, the test a free one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.fake_llm import FakeLLM
from tests.support.proxy import running_proxy

ROOT = Path(__file__).resolve().parents[2]
SECTION = (
    (ROOT / "README.md").read_text().split("### REST proxy", 1)[1].split("### Command line")[0]
)


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", SECTION, re.S)


@pytest.fixture(scope="module")
def proxy_url():
    with FakeLLM() as llm, running_proxy(llm) as url:
        yield url


def _local(text: str, url: str) -> str:
    return text.replace("http://127.0.0.1:8080", url)


def test_the_curl_example_runs_and_reports_compression(proxy_url):
    curl = next(b for b in _blocks("bash") if b.startswith("curl"))
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


def test_the_openai_example_runs(proxy_url):
    (code,) = _blocks("python")
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
    routed, guarded = (yaml.safe_load(b) for b in _blocks("yaml"))
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
