from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from ragpress.compressors.base import BaseCompressor
from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.exceptions import BudgetError, CompressionError, RequestValidationError
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.middleware.pipeline.factory import PipelineSet
from ragpress.middleware.serving.chat import ChatService
from ragpress.tokens import get_token_counter
from ragpress.types import CompressedPassage, CompressionOptions, CompressionResult

CONTEXT = "<context>Alpha is first. Beta is second. Gamma is third. Delta is last.</context>"


def body(**extra) -> bytes:
    return json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": f"{CONTEXT} Which is second?"}],
            **extra,
        }
    ).encode()


def service(compressor, **kwargs) -> ChatService:
    pipeline = Pipeline(
        [Stage(compressor)],
        defaults=CompressionOptions(target_ratio=2),
        token_counter=get_token_counter(),
    )
    return ChatService(PipelineSet({compressor.name: pipeline}), **kwargs)


class SlowCompressor(BaseCompressor):
    name = "slow"

    def __init__(self) -> None:
        self.finished = threading.Event()

    def compress(self, query, passages, options, *, analyses=None):
        time.sleep(0.3)
        self.finished.set()
        return CompressionResult(
            tuple(CompressedPassage(p, "", (), 1, 0) for p in passages), "slow", 1, 0
        )


class SoftPromptCompressor(BaseCompressor):
    name = "soft"

    def compress(self, query, passages, options, *, analyses=None):
        return CompressionResult(
            tuple(CompressedPassage(p, "", None, 1, 0) for p in passages),
            "soft",
            1,
            0,
            embeddings=type("Vectors", (), {"shape": (4, 8)})(),
        )


async def test_unmarked_bodies_come_back_as_the_very_same_bytes(fake_embedder):
    chat = service(SentenceSelectionCompressor(fake_embedder))
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    prepared = await chat.prepare(raw, flavor="openai")
    assert prepared.body is raw and prepared.outcome == "unmarked"
    assert prepared.headers() == [("x-ragpress-compression", "unmarked")]


async def test_options_come_from_the_body_over_the_header_over_the_server(fake_embedder):
    chat = service(SentenceSelectionCompressor(fake_embedder), compress_by_default=False)
    assert (await chat.prepare(body(), flavor="openai")).outcome == "off"
    off = await chat.prepare(body(), flavor="openai", header='{"compress": true, "rate": 0.9}')
    assert off.outcome == "compressed"
    both = await chat.prepare(
        body(ragpress={"compress": False}), flavor="openai", header='{"compress": true}'
    )
    assert both.outcome == "off" and b"ragpress" not in both.body
    assert json.loads(both.body)["messages"] == json.loads(body())["messages"]


async def test_budget_errors_are_client_errors_whatever_the_policy(fake_embedder):
    chat = service(SentenceSelectionCompressor(fake_embedder), fail_open=True)
    with pytest.raises(BudgetError):
        await chat.prepare(
            body(ragpress={"target_tokens": 1, "keep": ["Delta is last"]}), flavor="openai"
        )
    with pytest.raises(RequestValidationError) as caught:
        await chat.prepare(body(ragpress={"method": "other"}), flavor="openai")
    assert caught.value.param == "ragpress.method"


async def test_a_slow_compressor_fails_open_and_finishes_in_the_background():
    compressor = SlowCompressor()
    chat = service(compressor, timeout_seconds=0.05)
    started = time.perf_counter()
    prepared = await chat.prepare(body(), flavor="openai")
    assert time.perf_counter() - started < 0.25
    assert prepared.outcome == "failed-open" and prepared.error is not None
    assert "TimeoutError" in prepared.error
    assert json.loads(prepared.body) == json.loads(body())
    strict = service(SlowCompressor(), timeout_seconds=0.05, fail_open=False)
    with pytest.raises(CompressionError, match=r"longer than 0\.05 s"):
        await strict.prepare(body(), flavor="openai")
    assert compressor.finished.wait(2)


async def test_soft_prompt_methods_are_refused_for_chat_requests():
    chat = service(SoftPromptCompressor())
    with pytest.raises(RequestValidationError, match="soft embeddings"):
        await chat.prepare(body(), flavor="openai")


async def test_go_style_escaped_markers_are_found(fake_embedder):
    chat = service(SentenceSelectionCompressor(fake_embedder))
    escaped = body().replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
    prepared = await chat.prepare(escaped, flavor="openai")
    assert prepared.outcome == "compressed"
    assert "<context>" in json.loads(prepared.body)["messages"][0]["content"]


async def test_malformed_json_is_left_for_the_upstream_to_reject(fake_embedder):
    chat = service(SentenceSelectionCompressor(fake_embedder))
    raw = b'{"messages": "<context>x</context>", '
    assert (await chat.prepare(raw, flavor="openai")).body is raw


class ImageShrinker:
    """A stand-in visual compressor: proves image parts reach the seam, past the cache prefix."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.requests: list[Any] = []

    async def compress_parts(self, parts, request):
        from ragpress.middleware.serving.parts import PartResult

        self.requests.append(request)
        results = []
        for ref in parts:
            self.seen.append(ref.part["image_url"]["url"])
            ref.replace([{**ref.part, "image_url": {**ref.part["image_url"], "detail": "low"}}])
            results.append(PartResult(ref, "image", 100, 10))
        return results


async def test_image_parts_past_the_protected_prefix_reach_a_part_compressor(fake_embedder):
    shrinker = ImageShrinker()
    chat = service(
        SentenceSelectionCompressor(fake_embedder), part_compressors={"image_url": shrinker}
    )

    def image(name, **extra):
        return {"type": "image_url", "image_url": {"url": name}, **extra}

    raw = json.dumps(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [image("cached.png", cache_control={"type": "ephemeral"})],
                },
                {
                    "role": "user",
                    "content": [image("fresh.png"), {"type": "text", "text": "What is it?"}],
                },
            ],
        }
    ).encode()
    prepared = await chat.prepare(raw, flavor="openai")
    assert shrinker.seen == ["fresh.png"]
    assert shrinker.requests[0].model == "m" and shrinker.requests[0].flavor == "openai"
    sent = json.loads(prepared.body)["messages"]
    assert "detail" not in sent[0]["content"][0]["image_url"]
    assert sent[1]["content"][0]["image_url"]["detail"] == "low"
    assert prepared.outcome == "compressed"
    headers = dict(prepared.headers())
    assert headers["x-ragpress-images"] == "1" and headers["x-ragpress-image-routes"] == "image=1"
    assert headers["x-ragpress-image-tokens-before"] == "100"
    assert headers["x-ragpress-image-tokens-after"] == "10"
    assert (await chat.prepare(raw, flavor="openai", header='{"images": false}')).outcome == (
        "unmarked"
    )
