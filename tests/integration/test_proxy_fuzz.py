"""Fuzz every operation of the OpenAPI schema (schemathesis) against the running proxy.

The only 5xx allowed are the upstream-caused 502/504 (and whatever status the fake upstream
itself returns, passed through). The plain run keeps the example count small; ``-m slow``
runs many more.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from tests.support.fake_llm import FakeLLM
from tests.support.proxy import running_proxy


class _Settings(TypedDict):
    deadline: None
    suppress_health_check: list[HealthCheck]
    derandomize: bool


_SETTINGS: _Settings = {
    "deadline": None,
    "suppress_health_check": list(HealthCheck),
    "derandomize": True,
}


@pytest.fixture(scope="module")
def proxy():
    with FakeLLM() as llm, running_proxy(llm, proxy={"max_body_bytes": 200_000}) as url:
        yield url, llm


def _operations(url: str) -> list[schemathesis.APIOperation[Any, Any, Any, Any]]:
    schema = schemathesis.openapi.from_url(f"{url}/docs/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an Err: the schema has an invalid operation
        operations.append(result.ok())
    return operations


def _check(case, llm) -> None:
    llm.requests.clear()
    response = case.call(timeout=30)
    if response.status_code >= 500:
        forwarded = bool(llm.requests)  # the upstream's own statuses pass through untouched
        assert response.status_code in {502, 504} or forwarded, (
            case.method,
            case.path,
            response.status_code,
            response.text[:500],
        )
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        assert "error" in response.json()  # OpenAI shape, or Anthropic's {"type": "error", ...}


def _fuzz(proxy, examples: int, modes) -> None:
    url, llm = proxy
    operations = _operations(url)
    assert len(operations) >= 10
    for operation in operations:
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, **_SETTINGS)
            def run(case) -> None:
                _check(case, llm)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong


def test_no_operation_answers_with_a_server_error(proxy):
    _fuzz(proxy, 5, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@pytest.mark.slow
def test_no_operation_answers_with_a_server_error_thoroughly(proxy):
    _fuzz(proxy, 100, [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
