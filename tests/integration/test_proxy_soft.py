"""``method=compllm`` through the running proxy: soft prompts answered locally or by vLLM.

The compressor is the session's tiny Qwen2-architecture model with an untrained (non-zero) adapter
(tests/conftest.py); the vLLM server is the loopback stand-in that decodes ``prompt_embeds`` as
vLLM does (tests/support/vllm_fake.py). Answers are checked against the model run directly on
the same prompt, through the official openai client, streaming and not.
"""

from __future__ import annotations

import contextlib

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from litestar.testing import TestClient  # noqa: E402

from ragpress.compressors.compllm.generation import EmbeddingGenerator  # noqa: E402
from ragpress.exceptions import ConfigurationError  # noqa: E402
from ragpress.middleware.pipeline.factory import PipelineSet, build_pipeline  # noqa: E402
from ragpress.middleware.proxy import create_app  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402
from tests.support.fake_llm import FakeLLM  # noqa: E402
from tests.support.fakes import HashingEmbedder  # noqa: E402
from tests.support.proxy import error_body, running_proxy, serve, settings_for  # noqa: E402
from tests.support.vllm_fake import FakeVLLM  # noqa: E402

pytestmark = pytest.mark.model

SYSTEM = "Answer briefly."
TOWER = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889 for the "
    "World's Fair. It was the tallest man-made structure in the world for 41 years."
)
QUESTION = "When was the Eiffel Tower completed?"


def messages(document: str = TOWER, question: str = QUESTION) -> list[ChatCompletionMessageParam]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"<context>{document}</context>\n{question}"},
    ]


@pytest.fixture(scope="module")
def llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(llm):
    llm.requests.clear()


def soft_settings(llm, adapter, **soft):
    return settings_for(
        llm,
        compression={"method": "compllm", "params": {"adapter": str(adapter)}},
        proxy={"methods": ["sentence_selection"], "soft": soft},
    )


def soft_app(settings, **app):
    """compllm (the default method) plus sentence_selection on the hashing embedder."""
    compllm = build_pipeline(settings)
    assert compllm.cache is not None  # settings_for configures an in-process cache
    text = settings.model_copy(
        update={
            "compression": settings.compression.model_copy(
                update={"method": "sentence_selection", "params": {}}
            )
        }
    )
    selection = build_pipeline(text, embedder=HashingEmbedder(), cache=compllm.cache.store)
    pipelines = PipelineSet(
        {"compllm": compllm, "sentence_selection": selection}, store=compllm.cache.store
    )
    return create_app(settings, pipelines=pipelines, **app)


@contextlib.contextmanager
def soft_client(settings):
    with (
        serve(soft_app(settings)) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
    ):
        yield client, url


def expected_prompt(compllm, document: str = TOWER, question: str = QUESTION):
    concepts = compllm.compress(question, [Passage(document)], CompressionOptions()).embeddings
    return compllm.prompt_embeddings(question, concepts, system=SYSTEM)


@pytest.fixture(scope="module")
def local_proxy(llm, compllm_adapter_dir):
    with soft_client(soft_settings(llm, compllm_adapter_dir, backend="local")) as both:
        yield both


def test_local_backend_answers_like_the_model_itself(local_proxy, compllm, llm):
    client, _ = local_proxy
    raw = client.chat.completions.with_raw_response.create(
        model="tiny-qwen", messages=messages(), temperature=0, max_tokens=8
    )
    completion = raw.parse()
    prompt = expected_prompt(compllm)
    oracle = EmbeddingGenerator(compllm.encoder).generate(prompt, max_new_tokens=8)
    assert completion.choices[0].message.content == oracle
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.model == "tiny-qwen" and completion.object == "chat.completion"
    assert completion.usage.prompt_tokens == prompt.shape[0]
    assert completion.usage.completion_tokens == compllm.count_tokens(oracle)
    headers = raw.headers
    assert headers["x-ragpress-compression"] == "compressed"
    assert headers["x-ragpress-method"] == "compllm"
    assert headers["x-ragpress-soft-backend"] == "local"
    assert int(headers["x-ragpress-tokens-after"]) < int(headers["x-ragpress-tokens-before"])
    assert llm.requests == []  # answered by the soft prompt, never forwarded


def test_local_backend_streams_openai_chunks_with_usage(local_proxy, compllm, llm):
    client, _ = local_proxy
    stream = client.chat.completions.create(
        model="tiny-qwen",
        messages=messages(),
        temperature=0,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    prompt = expected_prompt(compllm)
    assert text == EmbeddingGenerator(compllm.encoder).generate(prompt, max_new_tokens=8)
    assert finish in ("stop", "length")
    assert usage is not None
    assert usage.prompt_tokens == prompt.shape[0] and usage.total_tokens > usage.prompt_tokens
    assert llm.requests == []


def test_requests_without_context_or_with_a_text_method_go_upstream(local_proxy, llm):
    client, _ = local_proxy
    client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "Hi"}])
    assert llm.last().json()["messages"] == [{"role": "user", "content": "Hi"}]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-test",
        messages=messages(),
        extra_body={"ragpress": {"method": "sentence_selection", "target_ratio": 2}},
    )
    assert raw.headers["x-ragpress-method"] == "sentence_selection"
    assert "<context>" in llm.last().json()["messages"][1]["content"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (
            {"messages": [*messages(), {"role": "assistant", "content": "1889."}]},
            "messages[2].role",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n"),
        ({"temperature": 5}, "temperature"),
        (
            {"messages": [{"role": "user", "content": f"<context>{TOWER}</context>"}]},
            "messages",
        ),
    ],
)
def test_what_a_soft_prompt_cannot_hold_is_a_400_naming_the_field(local_proxy, llm, change, param):
    client, _ = local_proxy
    request = {"model": "tiny-qwen", "messages": messages(), **change}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**request)
    assert error_body(caught.value)["param"] == param
    assert llm.requests == []


def test_the_anthropic_route_and_the_text_apis_refuse_soft_prompts_with_the_fix(local_proxy, llm):
    _, url = local_proxy
    answer = httpx.post(
        f"{url}/v1/compress",
        json={"method": "compllm", "query": QUESTION, "documents": [{"text": TOWER}]},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "method"
    with (
        anthropic.Anthropic(base_url=url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError) as caught,
    ):
        client.messages.create(
            model="claude-test",
            max_tokens=8,
            messages=[{"role": "user", "content": f"<context>{TOWER}</context> When?"}],
        )
    assert "/v1/chat/completions" in error_body(caught.value)["error"]["message"]
    assert llm.requests == []


def test_a_compression_timeout_fails_open_to_the_uncompressed_prompt(
    llm, compllm_adapter_dir, compllm
):
    settings = soft_settings(llm, compllm_adapter_dir, backend="local")
    settings.proxy.compression_timeout_seconds = 1e-6
    document = "The Seine is a river that flows through Paris."
    with soft_client(settings) as (client, _):
        raw = client.chat.completions.with_raw_response.create(
            model="tiny-qwen", messages=messages(document), temperature=0, max_tokens=6
        )
    full = compllm.full_prompt_embeddings(QUESTION, [Passage(document)], system=SYSTEM)
    oracle = EmbeddingGenerator(compllm.encoder).generate(full, max_new_tokens=6)
    assert raw.headers["x-ragpress-compression"] == "failed-open"
    assert "TimeoutError" in raw.headers["x-ragpress-error"]
    assert raw.parse().choices[0].message.content == oracle
    assert raw.parse().usage.prompt_tokens == full.shape[0]


def test_vllm_backend_sends_the_soft_prompt_as_prompt_embeds(llm, compllm_adapter_dir, compllm):
    vllm = FakeVLLM()
    try:
        settings = soft_settings(
            llm, compllm_adapter_dir, backend="vllm", url=vllm.url, model="tiny-qwen"
        )
        with soft_client(settings) as (client, _):
            assert [("prompt" in r, "prompt_embeds" in r) for r in vllm.requests] == [
                (True, False),
                (False, True),
            ]  # the start-up parity check: token ids, then the same prompt as embeddings
            raw = client.chat.completions.with_raw_response.create(
                model="tiny-qwen", messages=messages(), temperature=0, max_tokens=8
            )
            chunks = client.chat.completions.create(
                model="tiny-qwen", messages=messages(), max_tokens=8, stream=True
            )
            streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert raw.parse().choices[0].message.content == vllm.reply == streamed
        assert raw.headers["x-ragpress-soft-backend"] == "vllm"
        sent = vllm.requests[2]
        assert sent["model"] == "tiny-qwen" and sent["max_tokens"] == 8 and "prompt" not in sent
        torch.testing.assert_close(vllm.tensors[1], expected_prompt(compllm), rtol=0, atol=1e-6)
        assert raw.headers["x-ragpress-cache-hits"] == "0" and vllm.requests[3]["stream"] is True
    finally:
        vllm.close()


def test_vllm_reading_embeddings_differently_stops_the_start_up(llm, compllm_adapter_dir):
    vllm = FakeVLLM()
    vllm.reply_to_ids = "Something else."
    try:
        app = soft_app(soft_settings(llm, compllm_adapter_dir, backend="vllm", url=vllm.url))
        with pytest.raises(BaseExceptionGroup) as caught, TestClient(app):
            pass  # Litestar runs the start-up hooks in a task group
        assert caught.group_contains(ConfigurationError, match="embedding scale")
    finally:
        vllm.close()


def test_compllm_against_an_api_upstream_is_refused_at_start_up(llm, compllm_adapter_dir):
    settings = soft_settings(llm, compllm_adapter_dir)  # soft backend: none
    with pytest.raises(ConfigurationError) as caught:
        soft_app(settings)
    message = str(caught.value)
    assert "RAGPRESS_PROXY__SOFT__BACKEND=local" in message and "vllm" in message


def test_asking_a_text_only_server_for_compllm_is_a_400_with_the_fix(llm):
    with (
        running_proxy(llm) as url,
        openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(
            model="gpt-test", messages=messages(), extra_body={"ragpress": {"method": "compllm"}}
        )
    assert error_body(caught.value)["param"] == "ragpress.method"
    assert "RAGPRESS_PROXY__SOFT__BACKEND" in error_body(caught.value)["message"]
    assert llm.requests == []
