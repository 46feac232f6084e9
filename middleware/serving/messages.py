"""Walk an OpenAI or Anthropic request body and plan what may be compressed.

The rules, in order:

1. Only ``user`` and ``tool`` turns (OpenAI), or ``user`` turns including their
   ``tool_result`` blocks (Anthropic), are ever rewritten. System and developer prompts,
   assistant turns, tool definitions and Anthropic's ``system`` never are.
2. Nothing at or before the last ``cache_control`` marker is rewritten: the provider caches
   that prefix, and changing it would turn every cache read into a (pricier) cache write.
3. Within what is left, only marked content is compressed: ``<context>`` blocks in text, and
   Anthropic plain-text ``document`` blocks (unless they enable citations, whose character
   offsets the client would then be unable to map back).
4. Each message is compressed on its own, for the question in that message (its text outside
   the blocks), else the nearest user question around it. Compression is then a function of
   the message alone, so history that is sent again compresses to the same bytes and the
   provider's prefix cache keeps hitting.

Image and other non-text parts past the protected prefix are reported in
:attr:`Plan.other_parts`, each with its message's question, for handlers that compress them
(:mod:`ragpress.middleware.serving.images`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ragpress.middleware.serving.context import MarkedText, find_marked, replace_pieces
from ragpress.types import Passage

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.middleware.serving.protocols.openai import Flavor

__all__ = ["MessageGroup", "PartRef", "Plan", "Target", "plan_compression"]

Position = tuple[int, int]
_COMPRESSIBLE_ROLES = {"openai": frozenset({"user", "tool"}), "anthropic": frozenset({"user"})}


@dataclass
class Target:
    """Where compressed text goes back: a string field of the body and its marked pieces."""

    holder: dict[str, Any]
    key: str
    marked: MarkedText | None
    """``None`` for an Anthropic document block, whose whole text is one document."""
    title: str | None = None

    def passages(self) -> list[Passage]:
        """The documents to compress, in order."""
        text = self.holder[self.key]
        if self.marked is None:
            return [Passage(text, title=self.title)]
        return [Passage(text[p.start : p.end], title=p.title, id=p.id) for p in self.marked.pieces]

    def write(self, texts: list[str]) -> None:
        """Put the compressed documents back in place."""
        if self.marked is None:
            (self.holder[self.key],) = texts
            return
        self.holder[self.key] = replace_pieces(self.holder[self.key], self.marked.pieces, texts)


@dataclass
class MessageGroup:
    """The marked documents of one message, compressed together for one question."""

    index: int
    targets: list[Target]
    query: str | None

    def passages(self) -> list[Passage]:
        """Every document of the message, in order."""
        return [p for t in self.targets for p in t.passages()]

    def write(self, texts: list[str]) -> None:
        """Write the compressed documents back, in the order :meth:`passages` gave them."""
        position = 0
        for target in self.targets:
            count = len(target.passages())
            target.write(texts[position : position + count])
            position += count


@dataclass(frozen=True, slots=True)
class PartRef:
    """A non-text content part (an image, a PDF) that a part handler may replace."""

    message: int
    """Index of its message in ``messages``."""
    index: int
    """Index of the part in the message's ``content`` list."""
    part: dict[str, Any]
    content: list[Any] = field(repr=False, compare=False)
    """The ``content`` list that holds the part (rewritten in place by :meth:`replace`)."""
    query: str | None = None
    """The question the part's message asks (as for text: the message's own, else a neighbour)."""

    @property
    def param(self) -> str:
        """Where the part sits in the request, for error messages."""
        return f"messages[{self.message}].content[{self.index}]"

    def replace(self, parts: Sequence[dict[str, Any]]) -> None:
        """Put ``parts`` where this part is.

        The part is found by identity, so earlier replacements that changed the list's length
        do not matter.
        """
        position = next(i for i, p in enumerate(self.content) if p is self.part)
        self.content[position : position + 1] = list(parts)


@dataclass
class Plan:
    """What may be compressed in one request."""

    groups: list[MessageGroup] = field(default_factory=list)
    protected: int = 0
    """Marked texts left alone because they sit at or before a ``cache_control`` marker."""
    unclosed: int = 0
    """``<context>`` tags without a closing tag (left alone)."""
    other_parts: list[PartRef] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What the client should know about content left alone."""
        notes = []
        if self.protected:
            notes.append(
                f"{self.protected} marked text(s) left alone: at or before a cache_control marker"
            )
        if self.unclosed:
            notes.append(f"{self.unclosed} <context> tag(s) without </context> left alone")
        return notes


@dataclass
class _Slot:
    position: Position
    holder: dict[str, Any]
    key: str
    kind: Literal["text", "tool_result", "document"] = "text"
    document_title: str | None = None


def plan_compression(body: dict[str, Any], flavor: Flavor, *, query: str | None = None) -> Plan:
    """Find the marked documents of ``body`` that may be rewritten, grouped by message.

    Args:
        body: The decoded request body; :class:`Target` objects write into it in place.
        flavor: ``"openai"`` (chat completions) or ``"anthropic"`` (messages).
        query: A question given explicitly (``ragpress.query``) for every group.
    """
    plan = Plan()
    messages = body.get("messages")
    if not isinstance(messages, list):
        return plan
    frozen_until: Position = (-1, -1)
    slots_by_message: dict[int, list[_Slot]] = {}
    parts_by_message: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    own_text: dict[int, str] = {}
    tool_like: set[int] = set()
    roles = _COMPRESSIBLE_ROLES[flavor]
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if "cache_control" in message:
            frozen_until = max(frozen_until, (i, 1 << 30))
        slots, others, marker = _walk_content(i, message)
        if marker is not None:
            frozen_until = max(frozen_until, marker)
        if message.get("role") not in roles:
            continue
        if message.get("role") == "tool" or any(s.kind == "tool_result" for s in slots):
            tool_like.add(i)
        slots_by_message[i] = slots
        parts_by_message[i] = others
        own_text[i] = " ".join(
            find_marked(s.holder[s.key]).outside
            for s in slots
            if s.kind == "text" and message.get("role") != "tool"
        ).strip()
    user_turns = sorted(i for i, text in own_text.items() if text)
    for i, others in parts_by_message.items():
        fresh = [(j, part) for j, part in others if (i, j) > frozen_until]
        if fresh:
            question = query or own_text.get(i) or _neighbour(i, user_turns, own_text, tool_like)
            content = messages[i]["content"]
            plan.other_parts.extend(
                PartRef(i, j, part, content, question or None) for j, part in fresh
            )
    for i, slots in slots_by_message.items():
        targets = []
        for slot in slots:
            target = _target(slot)
            if target is None:
                continue
            if target.marked is not None:
                plan.unclosed += target.marked.unclosed
            if not (target.marked is None or target.marked.pieces):
                continue
            if slot.position <= frozen_until:
                plan.protected += 1
                continue
            targets.append(target)
        if targets:
            question = query or own_text.get(i) or _neighbour(i, user_turns, own_text, tool_like)
            plan.groups.append(MessageGroup(i, targets, question or None))
    return plan


def _neighbour(
    index: int, user_turns: list[int], own_text: dict[int, str], tool_like: set[int]
) -> str | None:
    after = next((j for j in user_turns if j > index), None)
    before = next((j for j in reversed(user_turns) if j < index), None)
    order = (before, after) if index in tool_like else (after, before)
    return next((own_text[j] for j in order if j is not None), None)


def _walk_content(
    index: int, message: dict[str, Any]
) -> tuple[list[_Slot], list[tuple[int, dict[str, Any]]], Position | None]:
    """Text slots, other parts (with their index), and the last ``cache_control`` position."""
    slots: list[_Slot] = []
    others: list[tuple[int, dict[str, Any]]] = []
    marker: Position | None = None
    content = message.get("content")
    if isinstance(content, str):
        return [_Slot((index, 0), message, "content")], others, None
    if not isinstance(content, list):
        return slots, others, None
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            continue
        position = (index, j)
        if "cache_control" in part or _nested_cache_control(part):
            marker = position
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            slots.append(_Slot(position, part, "text"))
        elif kind == "tool_result":
            inner = part.get("content")
            if isinstance(inner, str):
                slots.append(_Slot(position, part, "content", "tool_result"))
            elif isinstance(inner, list):
                slots.extend(
                    _Slot(position, block, "text", "tool_result")
                    for block in inner
                    if isinstance(block, dict)
                    and block.get("type") == "text"
                    and isinstance(block.get("text"), str)
                )
        elif kind == "document" and _plain_text_document(part):
            slots.append(_Slot(position, part["source"], "data", "document", part.get("title")))
        else:
            others.append((j, part))
    return slots, others, marker


def _nested_cache_control(part: dict[str, Any]) -> bool:
    inner = part.get("content")
    return isinstance(inner, list) and any(
        isinstance(b, dict) and "cache_control" in b for b in inner
    )


def _plain_text_document(part: dict[str, Any]) -> bool:
    source = part.get("source")
    citations = part.get("citations")
    cited = isinstance(citations, dict) and bool(citations.get("enabled"))
    return (
        isinstance(source, dict)
        and source.get("type") == "text"
        and isinstance(source.get("data"), str)
        and not cited
    )


def _target(slot: _Slot) -> Target | None:
    text = slot.holder.get(slot.key)
    if not isinstance(text, str) or not text.strip():
        return None
    if slot.kind == "document":
        title = slot.document_title if isinstance(slot.document_title, str) else None
        return Target(slot.holder, slot.key, None, title)
    return Target(slot.holder, slot.key, find_marked(text))
