from __future__ import annotations

import copy
from typing import Any

from ragpress.middleware.serving.messages import plan_compression

CTX = "<context>Doc one. Doc two.</context>"


def _texts(plan):
    return [[p.text for p in g.passages()] for g in plan.groups]


def test_only_user_and_tool_turns_are_planned():
    body = {
        "messages": [
            {"role": "system", "content": CTX},
            {"role": "developer", "content": CTX},
            {"role": "user", "content": f"{CTX} What is doc two?"},
            {"role": "assistant", "content": CTX},
            {"role": "tool", "tool_call_id": "1", "content": CTX},
        ]
    }
    plan = plan_compression(body, "openai")
    assert [g.index for g in plan.groups] == [2, 4]
    assert plan.groups[0].query == "What is doc two?"
    assert plan.groups[1].query == "What is doc two?"  # a tool result answers the turn before


def test_nothing_at_or_before_the_last_cache_control_is_rewritten():
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"{CTX} first?"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"{CTX} cached?"},
                    {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}},
                ],
            },
            {"role": "user", "content": [{"type": "text", "text": f"{CTX} fresh?"}]},
        ]
    }
    plan = plan_compression(body, "anthropic")
    assert [g.index for g in plan.groups] == [2]
    assert plan.protected == 2
    assert "cache_control" in plan.notes[0]


def test_message_level_cache_control_freezes_the_whole_message():
    body = {
        "messages": [
            {"role": "user", "content": f"{CTX} q?", "cache_control": {"type": "ephemeral"}},
            {"role": "user", "content": f"{CTX} later?"},
        ]
    }
    assert [g.index for g in plan_compression(body, "openai").groups] == [1]


def test_context_only_message_takes_the_next_user_question():
    body = {"messages": [{"role": "user", "content": CTX}, {"role": "user", "content": "Why?"}]}
    (group,) = plan_compression(body, "openai").groups
    assert group.query == "Why?"
    assert plan_compression(body, "openai", query="explicit").groups[0].query == "explicit"


def test_anthropic_plain_text_documents_are_compressed_unless_citations_are_on():
    def document(data, **extra):
        return {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": data},
            **extra,
        }

    body: dict[str, Any] = {
        "system": CTX,
        "messages": [
            {
                "role": "user",
                "content": [
                    document("Alpha. Beta.", title="A"),
                    document("Gamma.", citations={"enabled": True}),
                    {"type": "document", "source": {"type": "base64", "data": "JVBER"}},
                    {"type": "text", "text": "Which beta?"},
                ],
            }
        ],
    }
    plan = plan_compression(body, "anthropic")
    (group,) = plan.groups
    assert [(p.text, p.title) for p in group.passages()] == [("Alpha. Beta.", "A")]
    assert group.query == "Which beta?"
    group.write(["Beta."])
    assert body["messages"][0]["content"][0]["source"]["data"] == "Beta."
    assert body["system"] == CTX


def test_writing_back_changes_only_the_marked_documents():
    body: dict[str, Any] = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "<context><doc title='t'>A. B.</doc>|<doc>C.</doc></context>Q",
                    },
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ]
    }
    before = copy.deepcopy(body)
    plan = plan_compression(body, "openai")
    assert _texts(plan) == [["A. B.", "C."]]
    plan.groups[0].write(["B.", ""])
    assert (
        body["messages"][0]["content"][0]["text"]
        == "<context><doc title='t'>B.</doc>|<doc></doc></context>Q"
    )
    assert body["messages"][0]["content"][1] == before["messages"][0]["content"][1]
    assert [p.part["type"] for p in plan.other_parts] == ["image_url"]


def test_anthropic_tool_results_prefer_the_question_before_them():
    body = {
        "messages": [
            {"role": "user", "content": "Find the revenue."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t", "name": "s", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "content": CTX}],
            },
            {"role": "user", "content": "Thanks. And the profit?"},
        ]
    }
    (group,) = plan_compression(body, "anthropic").groups
    assert group.query == "Find the revenue."


def test_bodies_without_messages_plan_nothing():
    assert plan_compression({"prompt": CTX}, "openai").groups == []
    assert plan_compression({"messages": "nope"}, "openai").groups == []
