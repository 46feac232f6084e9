"""LangChain's ChatOpenAI pointed at the running proxy (sync, async, streaming)."""

from __future__ import annotations

import pytest

from tests.support.fake_llm import FakeLLM
from tests.support.proxy import BREAD, CONTEXT, QUESTION, running_proxy

langchain_openai = pytest.importorskip("langchain_openai")


@pytest.fixture(scope="module")
def setup():
    with FakeLLM() as llm, running_proxy(llm) as url:
        yield url, llm


def _chat(url: str, **kwargs):
    return langchain_openai.ChatOpenAI(
        base_url=f"{url}/v1", api_key="sk-langchain", model="gpt-test", max_retries=0, **kwargs
    )


MESSAGES = [("system", "Answer from the context."), ("human", f"{CONTEXT}\n{QUESTION}")]


def test_invoke_and_stream_go_through_the_proxy_compressed(setup):
    url, llm = setup
    answer = _chat(url).invoke(MESSAGES)
    assert answer.content.startswith("I read")
    assert answer.usage_metadata["input_tokens"] > 0
    sent = llm.last().json()
    assert sent["messages"][0] == {"role": "system", "content": "Answer from the context."}
    assert BREAD not in sent["messages"][1]["content"]
    chunks = list(_chat(url, stream_usage=True).stream(MESSAGES))
    assert "".join(c.content for c in chunks).startswith("I read")
    assert any(c.usage_metadata for c in chunks)  # the final usage-only chunk made it through


async def test_ainvoke_with_ragpress_options_in_extra_body(setup):
    url, llm = setup
    chat = _chat(url, extra_body={"ragpress": {"compress": False}})
    answer = await chat.ainvoke(MESSAGES)
    assert answer.content.startswith("I read")
    sent = llm.last().json()
    assert "ragpress" not in sent and BREAD in sent["messages"][1]["content"]
