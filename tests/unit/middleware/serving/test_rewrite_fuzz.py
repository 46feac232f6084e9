"""Property-based fuzzing of the body rewriting the proxy runs on every request (issue 21).

``ChatService.prepare`` gets hostile OpenAI and Anthropic bodies: arbitrary JSON values, lone
surrogates, numbers Python cannot round-trip, deep nesting, odd ``x-ragpress`` headers. For
every one of them:

* no exception escapes except a :class:`~ragpress.exceptions.RagpressError` that the error
  table maps to a client error (400, or 431 for an oversized options header);
* bytes ragpress writes are strict JSON in valid UTF-8 (no ``NaN``/``Infinity``, no surrogate
  that UTF-8 cannot carry);
* what is not marked for compression stays as sent: byte for byte when nothing had to be
  removed, value for value when the ``ragpress`` field was (the body is then re-encoded).

The compressor is the real sentence selection on the hashing embedder, so the whole rewrite
path runs. Hypothesis runs derandomized with no example database: the same examples every run.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from ragpress.compressors.sentence_selection import SentenceSelectionCompressor
from ragpress.exceptions import RagpressError
from ragpress.middleware.pipeline.core import Pipeline, Stage
from ragpress.middleware.pipeline.factory import PipelineSet
from ragpress.middleware.serving.chat import ChatService, Prepared
from ragpress.middleware.serving.errors import error_status
from ragpress.middleware.serving.protocols.openai import Flavor
from ragpress.tokens import get_token_counter
from ragpress.types import CompressionOptions
from tests.support.fakes import HashingEmbedder

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
COMPRESSIBLE = {"openai": {"user", "tool"}, "anthropic": {"user"}}


@pytest.fixture(scope="module")
def chat() -> ChatService:
    pipeline = Pipeline(
        [Stage(SentenceSelectionCompressor(HashingEmbedder()))],
        defaults=CompressionOptions(target_ratio=2),
        token_counter=get_token_counter(),
    )
    return ChatService(PipelineSet({"sentence_selection": pipeline}), timeout_seconds=30)


# -- strategies --------------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
CHARACTERS = st.one_of(st.characters(exclude_categories=()), SURROGATES)
PIECES = st.sampled_from(
    [
        "<context>",
        "</context>",
        '<document title="T">',
        "</document>",
        "<doc>",
        "</doc>",
        "Alpha is first. ",
        "Beta is second.\n",
        "Where is Gamma? ",
        "\\u003ccontext>",
        '"ragpress"',
        " ",
    ]
)
TEXT = st.lists(st.one_of(PIECES, st.text(CHARACTERS, max_size=12)), max_size=8).map("".join)
SENTENCES = st.lists(
    st.one_of(
        st.sampled_from(["Alpha is first. ", "Beta is second. ", "Gamma is third!\n"]),
        st.text(CHARACTERS, max_size=20),
    ),
    min_size=1,
    max_size=6,
).map("".join)
DOCUMENTS = st.one_of(
    SENTENCES,
    st.lists(SENTENCES.map(lambda t: f'<document title="T">{t}</document>'), max_size=3).map(
        "".join
    ),
)
MARKED_TEXT = st.builds(
    lambda before, docs, after: f"{before}<context>{docs}</context>{after}", TEXT, DOCUMENTS, TEXT
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
OPTIONS = st.one_of(
    st.none(),
    VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "compress": st.one_of(st.booleans(), VALUES),
            "target_ratio": st.one_of(NUMBERS, VALUES),
            "rate": NUMBERS,
            "target_tokens": NUMBERS,
            "keep": st.lists(TEXT, max_size=3),
            "query": TEXT,
            "method": st.sampled_from(["sentence_selection", "llmlingua2", "compllm", ""]),
            "images": st.booleans(),
        },
    ),
)
# Most messages carry no cache_control: a marker protects its message and all before it.
CACHE_CONTROL = st.sampled_from([None, None, None, "ephemeral", "odd", None, None, None]).flatmap(
    lambda kind: {
        "ephemeral": st.just({"type": "ephemeral"}),
        "odd": VALUES,
    }.get(str(kind), st.none())
)


def _part(kind: str) -> st.SearchStrategy[Any]:
    if kind == "text":
        return st.builds(lambda t: {"type": "text", "text": t}, MARKED_TEXT | TEXT)
    if kind == "document":
        return st.builds(
            lambda t, cite: {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": t},
                **({"citations": {"enabled": cite}} if cite is not None else {}),
            },
            SENTENCES,
            st.one_of(st.none(), st.booleans()),
        )
    if kind == "tool_result":
        return st.builds(
            lambda c: {"type": "tool_result", "tool_use_id": "t1", "content": c},
            st.one_of(TEXT, st.lists(_part("text"), max_size=2)),
        )
    return st.dictionaries(TEXT, VALUES, max_size=3)


PARTS = st.sampled_from(["text", "text", "document", "tool_result", "other"]).flatmap(_part)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    role = draw(st.sampled_from(["user", "system", "assistant", "tool", "developer", "user"]))
    content = draw(
        st.one_of(MARKED_TEXT, MARKED_TEXT, TEXT, st.lists(PARTS, max_size=4), st.none(), VALUES)
    )
    message: dict[str, Any] = {"role": role, "content": content}
    cache_control = draw(CACHE_CONTROL)
    if cache_control is not None:
        message["cache_control"] = cache_control
    return draw(st.one_of(st.just(message), VALUES, st.just(message)))


@st.composite
def bodies(draw: st.DrawFn) -> tuple[Flavor, dict[str, Any]]:
    flavor: Flavor = draw(st.sampled_from(["openai", "anthropic"]))
    body: dict[str, Any] = {
        "model": draw(TEXT),
        "messages": draw(
            st.one_of(
                st.lists(messages(), min_size=1, max_size=5),
                VALUES,
                st.lists(messages(), min_size=1, max_size=5),
            )
        ),
    }
    if flavor == "anthropic":
        body["system"] = draw(st.one_of(TEXT, st.lists(_part("text"), max_size=2)))
    if draw(st.integers(0, 2)) == 0:
        body["ragpress"] = draw(OPTIONS)
    extra = draw(st.dictionaries(TEXT, VALUES, max_size=3))
    body.update({key: value for key, value in extra.items() if key != "messages"})
    return flavor, body


def _encode(body: Any, ascii_only: bool) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # lone surrogates: JSON escapes them, UTF-8 cannot carry them
        return json.dumps(body, ensure_ascii=True).encode()


# -- checks ------------------------------------------------------------------------------------


def _strict(raw: bytes) -> Any:
    def refuse(constant: str) -> Any:
        raise AssertionError(f"{constant} is not JSON")

    return json.loads(raw.decode("utf-8"), parse_constant=refuse)


def _prepare(chat: ChatService, body: bytes, flavor: Flavor, header: str | None) -> Prepared | None:
    """``prepare``'s answer, or ``None`` when it refused the request with a client error."""

    async def run() -> Prepared:
        return await chat.prepare(body, flavor=flavor, header=header)

    try:
        prepared = asyncio.run(run())
    except RagpressError as exc:
        status, _ = error_status(exc)
        assert status in (400, 431), f"{type(exc).__name__} -> {status}: {exc}"
        event(f"{flavor}: refused {status}")
        return None
    event(f"{flavor}: {prepared.outcome}")  # --hypothesis-show-statistics shows the spread
    return prepared


def _unmarked_unchanged(before: Any, after: Any, flavor: Flavor) -> None:
    """Everything except the marked text of compressible turns arrived value for value."""
    assert isinstance(after, dict) and "ragpress" not in after
    expected = {k: v for k, v in before.items() if k != "ragpress"}
    assert after.keys() == expected.keys()
    for key, value in expected.items():
        if key != "messages" or not isinstance(value, list):
            assert after[key] == value, key
            continue
        assert len(after[key]) == len(value)
        for old, new in zip(value, after[key], strict=True):
            if not _may_change(old, flavor):
                assert new == old, (old, new)


def _may_change(message: Any, flavor: Flavor) -> bool:
    """A compressible turn with something marked: a <context> block, or a document block."""
    if not isinstance(message, dict) or message.get("role") not in COMPRESSIBLE[flavor]:
        return False
    text = json.dumps(message, ensure_ascii=False).lower()
    return "<context" in text or (flavor == "anthropic" and '"document"' in text)


# -- properties --------------------------------------------------------------------------------


@settings(FUZZ, max_examples=250)
@given(bodies(), st.booleans(), st.one_of(st.none(), st.sampled_from(['{"rate": 0.5}', "{}"])))
@example(("openai", {"model": "\ud800", "messages": [], "ragpress": None}), False, None)
@example(
    (
        "anthropic",
        {
            "model": "m",
            "ragpress": {"rate": 0.5},
            "messages": [{"role": "user", "content": "\udfff <context>Alpha. Beta.</context>"}],
        },
    ),
    False,
    None,
)
def test_any_json_body_is_forwarded_as_sent_rewritten_strictly_or_refused(
    chat: ChatService, case: tuple[Flavor, dict[str, Any]], ascii_only: bool, header: str | None
) -> None:
    flavor, body = case
    raw = _encode(body, ascii_only)
    prepared = _prepare(chat, raw, flavor, header)
    if prepared is None or prepared.outcome == "soft":
        return
    after = _strict(prepared.body)
    if "ragpress" not in body and prepared.outcome != "compressed":
        assert prepared.body == raw  # nothing had to change: the very bytes
    else:
        _unmarked_unchanged(body, after, flavor)


LITERALS = st.sampled_from(
    [
        b"1e400",
        b"-1E+999",
        b"1e-400",
        b"-0.0",
        b"1E+2",
        b"0.1",
        b"123456789012345678901234567890",
        b"9" * 5000,
        b"NaN",
        b"-Infinity",
        b'"\\ud800"',
        b'"\\udfff\\ud800 x"',
        b'"\xed\xa0\x80"',  # a surrogate encoded as UTF-8 bytes: not UTF-8 at all
        b'"\xff"',
    ]
)
MARKED = b'{"role":"user","content":"<context>Alpha is first. Beta is second.</context> Beta?"}'


@FUZZ
@given(
    st.sampled_from(["openai", "anthropic"]),
    st.one_of(LITERALS, st.integers(1, 6000).map(lambda d: b"[" * d + b"]" * d)),
    st.booleans(),
    st.booleans(),
)
def test_numbers_surrogates_and_depth_never_escape_as_errors(
    chat: ChatService, flavor: Flavor, literal: bytes, field: bool, in_message: bool
) -> None:
    options = b'"ragpress":{"rate":0.5},' if field else b""
    if in_message:
        message = b'{"role":"user","content":"<context>Alpha. Beta.</context> x","n":' + literal
        raw = b'{"model":"m",' + options + b'"messages":[' + message + b"}]}"
    else:
        raw = b'{"model":"m",' + options + b'"x":' + literal + b',"messages":[' + MARKED + b"]}"
    prepared = _prepare(chat, raw, flavor, None)
    if prepared is None:
        assert field or in_message  # refused only what had to be rewritten
        return
    if prepared.body is raw or prepared.body == raw:
        return  # forwarded as the client sent it (the upstream judges it)
    after = _strict(prepared.body)
    if not in_message:
        assert after["x"] == json.loads(literal)  # (bytes: decoded with surrogatepass)


HEADERS = st.one_of(
    st.text(st.characters(max_codepoint=255), max_size=300),
    st.builds(json.dumps, OPTIONS),
    st.integers(1, 5000).map(lambda d: "[" * d + "]" * d),
    st.integers(1, 3).map(lambda n: json.dumps({"query": "q" * 5000 * n})),
)


@FUZZ
@given(HEADERS, st.sampled_from(["openai", "anthropic"]))
def test_any_options_header_is_accepted_or_refused_with_a_client_error(
    chat: ChatService, header: str, flavor: Flavor
) -> None:
    raw = b'{"model":"m","messages":[' + MARKED + b"]}"
    prepared = _prepare(chat, raw, flavor, header)
    if prepared is not None and prepared.outcome != "soft":
        _strict(prepared.body)
