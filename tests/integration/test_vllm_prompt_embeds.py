"""The vLLM backend against a loopback HTTP server that decodes ``prompt_embeds`` as vLLM does."""

from __future__ import annotations

import socket

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from ragpress.exceptions import ConfigurationError, UpstreamError  # noqa: E402
from ragpress.middleware.generation import GenerationParams, SoftPromptService  # noqa: E402
from ragpress.middleware.generation.vllm import VLLMBackend  # noqa: E402
from ragpress.middleware.pipeline.cache_policy import FailOpenCache  # noqa: E402
from ragpress.middleware.pipeline.core import Pipeline, Stage  # noqa: E402
from ragpress.types import CompressionOptions, Passage  # noqa: E402
from tests.support.vllm_fake import FakeVLLM  # noqa: E402

pytestmark = pytest.mark.model

DOCS = [Passage("The Eiffel Tower in Paris was completed in 1889.", title="Eiffel Tower")]
QUESTION = "When was the Eiffel Tower completed?"


@pytest.fixture
def vllm_server():
    server = FakeVLLM()
    yield server
    server.close()


@pytest.fixture
def prompt(compllm):
    concepts = compllm.compress(QUESTION, DOCS, CompressionOptions()).embeddings
    return compllm.prompt_embeddings(QUESTION, concepts)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
async def test_stream_sends_exactly_the_prompt_tensor(vllm_server, prompt, dtype) -> None:
    backend = VLLMBackend(vllm_server.url, "tiny-qwen")
    sent = prompt.to(dtype)
    params = GenerationParams(max_tokens=5, stop=("\n",), seed=3)
    chunks = [c async for c in backend.astream(sent, params)]
    await backend.aclose()
    assert "".join(c.text for c in chunks) == vllm_server.reply
    assert chunks[-1].finish_reason == "length"
    body = vllm_server.requests[0]
    assert set(body) == {
        "model",
        "prompt_embeds",
        "max_tokens",
        "temperature",
        "top_p",
        "stream",
        "stop",
        "seed",
    }  # no "prompt": vLLM would treat it as a second, separate prompt
    assert body["model"] == "tiny-qwen" and body["stream"] is True and body["stop"] == ["\n"]
    received = vllm_server.tensors[0]
    assert received.dtype == dtype and received.shape == sent.shape
    assert torch.equal(received.view(torch.uint8), sent.contiguous().view(torch.uint8))


async def test_a_view_sends_only_its_own_rows(vllm_server, prompt) -> None:
    backend = VLLMBackend(vllm_server.url, "m")
    whole, view = prompt.clone(), prompt[:3]
    await backend.acomplete(whole, GenerationParams(max_tokens=1))
    await backend.acomplete(view, GenerationParams(max_tokens=1))
    await backend.aclose()
    sizes = [len(r["prompt_embeds"]) for r in vllm_server.requests]
    assert sizes[1] < sizes[0] / 2  # torch.save of a view would carry the whole storage
    assert torch.equal(vllm_server.tensors[1], view)


async def test_service_end_to_end_over_vllm(vllm_server, compllm, memory_cache) -> None:
    pipeline = Pipeline([Stage(compllm)], cache=FailOpenCache(memory_cache))
    service = SoftPromptService(pipeline, VLLMBackend(vllm_server.url, "tiny-qwen"))
    answer = await service.agenerate(QUESTION, DOCS, GenerationParams(max_tokens=8))
    await service.aclose()
    assert answer.text == vllm_server.reply and answer.finish_reason == "length"
    expected = compllm.prompt_embeddings(QUESTION, answer.prompt.compression.embeddings)
    assert torch.equal(vllm_server.tensors[0], expected)
    assert answer.prompt.positions == expected.shape[0]


async def test_server_errors_become_upstream_errors(vllm_server, prompt) -> None:
    vllm_server.status = 400
    vllm_server.error_body = b'{"error": {"message": "prompt_embeds is not enabled"}}'
    backend = VLLMBackend(vllm_server.url, "m")
    with pytest.raises(UpstreamError, match="enable-prompt-embeds") as caught:
        [c async for c in backend.astream(prompt, GenerationParams())]
    assert caught.value.status_code == 400
    await backend.aclose()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    backend = VLLMBackend(dead, "m", timeout_seconds=2)
    with pytest.raises(UpstreamError, match="unreachable"):
        await backend.acomplete(prompt, GenerationParams())
    await backend.aclose()


async def test_start_up_parity_check(vllm_server, compllm) -> None:
    service = SoftPromptService(Pipeline([Stage(compllm)]), VLLMBackend(vllm_server.url, "m"))
    await service.averify()
    ids, embeds = compllm.probe_prompt()
    by_ids, by_embeds = vllm_server.requests
    assert by_ids["prompt"] == ids and "prompt_embeds" not in by_ids
    assert torch.equal(vllm_server.tensors[0], embeds) and "prompt" not in by_embeds
    vllm_server.reply_to_ids = "Hello!"  # the server reads the embeddings differently
    with pytest.raises(ConfigurationError, match="embedding scale"):
        await service.averify()
    await service.aclose()


def test_bad_url_and_bad_tensor_are_refused(prompt) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        VLLMBackend("127.0.0.1:8000", "m")
    backend = VLLMBackend("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="2-D"):
        backend.request_body(prompt[None], GenerationParams(), stream=False)
