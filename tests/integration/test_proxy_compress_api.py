"""ragpress's own /v1/compress, the Headroom-style contract and LiteLLM's Generic Guardrail API."""

from __future__ import annotations

import httpx
import pytest

from ragpress.provenance import join_spans
from tests.support.fake_llm import FakeLLM
from tests.support.proxy import BREAD, CONTEXT, CURIE, QUESTION, running_proxy


@pytest.fixture(scope="module")
def url():
    with FakeLLM() as llm, running_proxy(llm) as base:
        yield base


def test_compress_returns_documents_with_provenance_and_stats(url):
    response = httpx.post(
        f"{url}/v1/compress",
        json={
            "query": QUESTION,
            "documents": [
                {
                    "text": CURIE,
                    "title": "Marie Curie",
                    "id": "c",
                    "metadata": {"url": "https://x"},
                },
                {"text": BREAD, "title": "Bread"},
            ],
            "target_ratio": 2,
            "keep": ["Pierre"],
        },
    )
    assert response.status_code == 200
    body = response.json()
    curie, bread = body["documents"]
    assert (curie["title"], curie["id"], curie["metadata"]) == (
        "Marie Curie",
        "c",
        {"url": "https://x"},
    )
    assert "Pierre" in curie["text"]
    for doc, original in ((curie, CURIE), (bread, BREAD)):
        assert join_spans(original, [tuple(s) for s in doc["spans"]]) == doc["text"]
    stats = body["stats"]
    assert stats["tokens_after"] < stats["tokens_before"]
    assert stats["method"] == "sentence_selection" and stats["ratio"] > 1
    assert body["context"] == "\n\n".join(d["text"] for d in body["documents"] if d["text"])


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"documents": []}, "documents"),
        ({"documents": [{"txt": "x"}]}, "documents.0.text"),
        ({"documents": [{"text": "x"}], "rate": 3}, "rate"),
        ({"documents": [{"text": "x"}], "method": "llmlingua9"}, "method"),
    ],
)
def test_compress_rejects_bad_input_naming_the_field(url, payload, param):
    response = httpx.post(f"{url}/v1/compress", json=payload)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert httpx.post(f"{url}/v1/compress", content=b"{not json").status_code == 400


def test_headroom_contract_returns_the_same_messages_with_context_compressed(url):
    messages = [
        {"role": "system", "content": f"Be brief. {CONTEXT}"},
        {"role": "user", "content": f"{CONTEXT} {QUESTION}"},
    ]
    response = httpx.post(
        f"{url}/headroom/v1/compress",
        json={"messages": messages, "model": "gpt-4o", "config": {"mode": "ccr"}},
    )
    body = response.json()
    assert len(body["messages"]) == 2
    assert body["messages"][0] == messages[0]
    assert len(body["messages"][1]["content"]) < len(messages[1]["content"])
    assert body["tokens_saved"] == body["tokens_before"] - body["tokens_after"] > 0
    assert body["compression_ratio"] == pytest.approx(
        body["tokens_after"] / body["tokens_before"], 1e-3
    )
    assert body["transforms_applied"][0].startswith("ragpress:sentence_selection:")
    bypass = httpx.post(
        f"{url}/headroom/v1/compress",
        json={"messages": messages},
        headers={"x-headroom-bypass": "true"},
    ).json()
    assert bypass["messages"] == messages and bypass["transforms_applied"] == []


def test_generic_guardrail_compresses_marked_user_texts_only(url):
    system_text = f"Policy. {CONTEXT}"
    user_text = f"{CONTEXT} {QUESTION}"
    request = {
        "input_type": "request",
        "texts": [system_text, user_text, "plain text"],
        "structured_messages": [
            {"role": "system", "content": system_text},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": user_text},
                    {"type": "text", "text": "plain text"},
                ],
            },
        ],
        "model": "gpt-4o",
        "litellm_call_id": "abc",
    }
    body = httpx.post(f"{url}/beta/litellm_basic_guardrail_api", json=request).json()
    assert body["action"] == "GUARDRAIL_INTERVENED"
    assert body["texts"][0] == system_text and body["texts"][2] == "plain text"
    assert len(body["texts"][1]) < len(user_text) and body["texts"][1].endswith(QUESTION)
    response_side = httpx.post(
        f"{url}/beta/litellm_basic_guardrail_api", json={**request, "input_type": "response"}
    ).json()
    assert response_side["action"] == "NONE"
    off = httpx.post(
        f"{url}/beta/litellm_basic_guardrail_api",
        json={**request, "additional_provider_specific_params": {"ragpress": {"compress": False}}},
    ).json()
    assert off["action"] == "NONE"


def test_generic_guardrail_matches_texts_to_messages_by_position_not_equality(url):
    # The same marked text as the system prompt and as the user turn: only the user's changes.
    same = f"{CONTEXT} {QUESTION}"
    request = {
        "input_type": "request",
        "texts": [same, same, same],
        "structured_messages": [
            {"role": "system", "content": same},
            {"role": "user", "content": same},
            {"role": "assistant", "content": [{"type": "text", "text": same}]},
        ],
    }
    body = httpx.post(f"{url}/beta/litellm_basic_guardrail_api", json=request).json()
    assert body["action"] == "GUARDRAIL_INTERVENED"
    system, user, assistant = body["texts"]
    assert system == same and assistant == same
    assert len(user) < len(same) and user.endswith(QUESTION)
    # texts that cannot be lined up with the messages are left alone when ambiguous
    shifted = {**request, "texts": [same, same]}
    answer = httpx.post(f"{url}/beta/litellm_basic_guardrail_api", json=shifted).json()
    assert answer["action"] == "NONE"


def test_openapi_documents_every_route_and_resolves_every_reference(url):
    schema = httpx.get(f"{url}/docs/openapi.json").json()
    for path in (
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/models",
        "/v1/compress",
        "/headroom/v1/compress",
        "/beta/litellm_basic_guardrail_api",
        "/health",
        "/ready",
        "/metrics",
    ):
        assert path in schema["paths"], path
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletionRequest"
    )
    components = schema["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    missing = {r for r in refs(schema) if r.split("/")[-1] not in components}
    assert missing == set()
    assert "ragpress" in components["ChatCompletionRequest"]["properties"]
    assert httpx.get(f"{url}/docs").status_code == 200
