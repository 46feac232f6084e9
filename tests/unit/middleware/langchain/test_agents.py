"""The v1 agent middleware inside a real `create_agent` graph, with a fake chat model."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from ragpress.exceptions import ConfigurationError
from ragpress.middleware.langchain import RagpressDocumentCompressor
from ragpress.middleware.langchain.agents import RagpressCompressionMiddleware
from ragpress.provenance import join_spans

FACTS = " ".join(f"Widget {i} weighs {i * 3} grams and costs {i + 10} euros." for i in range(40))
MANUAL = " ".join(f"Step {i}: tighten bolt {i} by a quarter turn." for i in range(40))


class SeenByModel(BaseCallbackHandler):
    def __init__(self) -> None:
        self.calls: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized, messages, **kwargs) -> None:
        self.calls.append(messages[0])


@pytest.fixture
def compressor(selection_pipeline) -> RagpressDocumentCompressor:
    return RagpressDocumentCompressor(pipeline=selection_pipeline(target_ratio=3))


def agent_with(middleware, replies: int = 2):
    model = GenericFakeChatModel(messages=iter([AIMessage(f"reply {i}") for i in range(replies)]))
    return create_agent(model, tools=[], middleware=[middleware])


def conversation() -> list[BaseMessage]:
    return [
        SystemMessage("You answer questions about widgets. " * 60),
        HumanMessage("What does widget 7 weigh?"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "call-1"}]),
        ToolMessage(FACTS, tool_call_id="call-1", id="tool-1"),
        AIMessage("Widget 7 weighs 21 grams."),
        HumanMessage(MANUAL),
        HumanMessage("And how much does widget 12 cost?"),
    ]


def test_long_messages_reach_the_model_compressed_and_state_keeps_originals(compressor):
    seen = SeenByModel()
    middleware = RagpressCompressionMiddleware(compressor, min_tokens=100)
    state = agent_with(middleware).invoke(
        {"messages": conversation()}, config={"callbacks": [seen]}
    )
    sent = seen.calls[0]
    by_type = [(m.type, m.content) for m in sent]
    assert by_type[0][0] == "system" and by_type[0][1] == conversation()[0].content  # untouched
    tool = next(m for m in sent if m.type == "tool")
    assert isinstance(tool, ToolMessage)
    assert tool.tool_call_id == "call-1" and tool.id == "tool-1"
    assert len(tool.content) < len(FACTS) / 2
    assert "Widget 7 weighs 21 grams" in tool.content  # compressed for the question before it
    stats = tool.response_metadata["ragpress"][0]
    assert join_spans(FACTS, stats["spans"]) == tool.content
    assert stats["tokens_before"] / stats["tokens_after"] >= 2.5
    manual = [m for m in sent if m.type == "human"][1]
    assert len(manual.content) < len(MANUAL)  # an earlier long human message
    assert sent[-1].content == "And how much does widget 12 cost?"  # the question: untouched
    assert state["messages"][3].content == FACTS  # the agent's state keeps the original
    assert state["messages"][-1].content == "reply 0"


async def test_async_agent_compresses_the_same_way(compressor) -> None:
    seen = SeenByModel()
    middleware = RagpressCompressionMiddleware(compressor, min_tokens=100)
    await agent_with(middleware).ainvoke({"messages": conversation()}, config={"callbacks": [seen]})
    sync_seen = SeenByModel()
    agent_with(middleware).invoke({"messages": conversation()}, config={"callbacks": [sync_seen]})
    assert [m.content for m in seen.calls[0]] == [m.content for m in sync_seen.calls[0]]


def test_compression_is_stable_across_turns(compressor) -> None:
    """A message compresses the same way when later turns are added (cache-friendly prefix)."""
    seen = SeenByModel()
    middleware = RagpressCompressionMiddleware(compressor, min_tokens=100)
    first = conversation()[:4]
    later = [*first, AIMessage("21 grams."), HumanMessage("Which widget costs 30 euros?")]
    agent_with(middleware).invoke({"messages": first}, config={"callbacks": [seen]})
    agent_with(middleware).invoke({"messages": later}, config={"callbacks": [seen]})
    tool_then = next(m for m in seen.calls[0] if m.type == "tool")
    tool_now = next(m for m in seen.calls[1] if m.type == "tool")
    assert tool_then.content == tool_now.content


def test_short_messages_and_unlisted_types_are_left_alone(compressor) -> None:
    seen = SeenByModel()
    middleware = RagpressCompressionMiddleware(compressor, min_tokens=5000)
    agent_with(middleware).invoke({"messages": conversation()}, config={"callbacks": [seen]})
    assert [m.content for m in seen.calls[0]] == [m.content for m in conversation()]
    seen = SeenByModel()
    only_tools = RagpressCompressionMiddleware(compressor, min_tokens=100, message_types=["tool"])
    agent_with(only_tools).invoke({"messages": conversation()}, config={"callbacks": [seen]})
    assert [m for m in seen.calls[0] if m.type == "human"][1].content == MANUAL


def test_text_blocks_are_compressed_and_other_blocks_kept(compressor) -> None:
    seen = SeenByModel()
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    messages = [
        HumanMessage([{"type": "text", "text": FACTS}, image]),
        HumanMessage("Widget 3?"),
    ]
    middleware = RagpressCompressionMiddleware(compressor, min_tokens=100)
    agent_with(middleware).invoke({"messages": messages}, config={"callbacks": [seen]})
    content = seen.calls[0][0].content
    assert isinstance(content, list) and isinstance(content[0], dict)
    assert content[1] == image and len(content[0]["text"]) < len(FACTS)
    assert seen.calls[0][0].response_metadata["ragpress"][0]["block"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"min_tokens": 0}, "min_tokens"), ({"message_types": ["system"]}, "system")],
)
def test_bad_configuration_is_refused(compressor, kwargs, message) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RagpressCompressionMiddleware(compressor, **kwargs)
