"""The proxy's image-part handler: model families, the result cache, the protected prefix."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PIL")

from ragpress.compressors import compressor_class, registry
from ragpress.exceptions import MissingDependencyError
from ragpress.middleware.pipeline.cache_policy import FailOpenCache
from ragpress.middleware.serving import images
from ragpress.middleware.serving.images import ImagePartHandler, resolve_image_model
from ragpress.middleware.serving.messages import plan_compression
from ragpress.middleware.serving.parts import PartRequest
from ragpress.types import CompressionOptions

CHART = (
    Path(__file__).resolve().parents[3] / "fixtures" / "visual" / "chart_page.png"
).read_bytes()
URL = "data:image/png;base64," + base64.b64encode(CHART).decode()


def body() -> dict[str, Any]:
    return {
        "model": "gpt-4o-2024-08-06",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": URL}}]},
            {"role": "assistant", "content": "A chart."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Compare with this one."},
                    {"type": "image_url", "image_url": {"url": URL}},
                ],
            },
        ],
    }


@pytest.mark.parametrize(
    ("model", "flavor", "default", "family", "noted"),
    [
        ("gpt-4o-2024-08-06", "openai", None, "gpt-4o", False),
        ("openai/gpt-4.1-mini", "openai", None, "gpt-4.1-mini", False),
        ("claude-opus-4-1", "anthropic", None, "claude", False),
        ("my-vlm", "anthropic", None, "claude", True),
        ("my-vlm", "openai", "gpt-4o", "gpt-4o", True),
        ("my-vlm", "openai", None, None, True),
        (None, "openai", None, None, True),
        ("../../gpt-4o", "openai", None, "gpt-4o", False),  # only the family name travels on
    ],
)
def test_models_map_to_cost_families(model, flavor, default, family, noted) -> None:
    got, note = resolve_image_model(model, flavor, default_model=default)
    assert got == family and (note is not None) == noted


def test_the_registry_knows_which_methods_emit_embeddings() -> None:
    pytest.importorskip("peft")
    soft = {n for n in registry.COMPRESSORS if compressor_class(n).output_kind == "embeddings"}
    assert soft == registry.SOFT_METHODS


async def test_parts_are_planned_with_their_question_and_compressed_once(monkeypatch, memory_cache):
    calls: list[str] = []
    real = images._compress_part

    def counting(policy, part, param, budget):
        calls.append(param)
        return real(policy, part, param, budget)

    monkeypatch.setattr(images, "_compress_part", counting)
    handler = ImagePartHandler(ocr=False, cache=FailOpenCache(memory_cache))
    request = PartRequest("gpt-4o-2024-08-06", "openai", CompressionOptions())
    first = body()
    plan = plan_compression(first, "openai")
    assert [(p.param, p.query) for p in plan.other_parts] == [
        ("messages[0].content[0]", "Compare with this one."),
        ("messages[2].content[1]", "Compare with this one."),
    ]
    results = await handler.compress_parts(plan.other_parts, request)
    assert [r.route for r in results] == ["image", "image"]
    assert calls == ["messages[0].content[0]", "messages[2].content[1]"]  # no shared cache yet
    second = body()
    again = await handler.compress_parts(plan_compression(second, "openai").other_parts, request)
    assert len(calls) == 2  # both served from the cache
    assert json.dumps(second) == json.dumps(first)  # the same bytes every time
    assert [(r.tokens_before, r.tokens_after) for r in again] == [
        (r.tokens_before, r.tokens_after) for r in results
    ]


def test_the_visual_extra_is_checked_at_start_up(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "rapidocr" else real(name, *a)
    )
    with pytest.raises(MissingDependencyError, match="visual"):
        ImagePartHandler(ocr=True)


async def test_parts_without_data_here_pass_as_they_came() -> None:
    handler = ImagePartHandler(ocr=False)
    anthropic_file = {"type": "image", "source": {"type": "file", "file_id": "file_011"}}
    openai_file = {"type": "file", "file": {"file_id": "file-abc"}}
    cited = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
        "citations": {"enabled": True},
    }
    body = {"messages": [{"role": "user", "content": [anthropic_file, openai_file, cited]}]}
    before = json.dumps(body)
    refs = plan_compression(body, "anthropic").other_parts
    request = PartRequest("claude-test", "anthropic", CompressionOptions())
    results = await handler.compress_parts(refs, request)
    assert [(r.route, r.changed) for r in results] == [("skipped", False)] * 3
    assert json.dumps(body) == before
