"""Chat completions answered from soft prompts (CompLLM), in OpenAI's wire format.

A soft prompt is input embeddings, not text, so a request whose method is ``compllm`` is not
forwarded to the upstream API: :class:`SoftChat` reads the question and the marked documents out
of the chat request, compresses the documents into concept embeddings (per-segment cache), frames
them with the model's chat template and generates with the configured backend (the in-process
model, or vLLM's ``prompt_embeds``). The answer goes back as an OpenAI ``chat.completion``, or as
``chat.completion.chunk`` server-sent events when the request streams, with ``usage`` counted in
prompt positions (instruction tokens + concept embeddings + question tokens) and completion
tokens.

What a soft prompt can hold is narrower than a chat request: system/developer text, and user
messages whose ``<context>`` blocks are the documents and whose other text is the question.
Conversation history (assistant and tool turns), non-text parts, tools and the sampling options
the backends do not implement are refused with a 400 naming the field, never dropped silently.

When compression fails or is too slow and the proxy fails open, the same model answers from the
uncompressed prompt (the documents as plain tokens), with ``x-ragpress-compression: failed-open``.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import RequestValidationError
from ragpress.middleware.generation.base import GenerationParams
from ragpress.middleware.serving.chat import (
    Prepared,
    Summary,
    dumps,
    fail_open_or_raise,
    within,
)
from ragpress.middleware.serving.context import find_marked
from ragpress.middleware.serving.errors import sse_error_event
from ragpress.types import Passage

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Mapping

    from ragpress.middleware.generation.service import SoftPrompt, SoftPromptService
    from ragpress.middleware.serving.protocols.openai import RagpressOptions
    from ragpress.types import CompressionOptions

__all__ = ["SoftAnswer", "SoftChat", "SoftQuestion"]

logger = logging.getLogger("ragpress.proxy")

# Request fields a soft prompt cannot honour, with the values that mean "not used".
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "response_format": (None, {"type": "text"}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "logit_bias": (None, {}),
    "frequency_penalty": (None, 0),
    "presence_penalty": (None, 0),
    "n": (None, 1),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "web_search_options": (None,),
}
_OPENAI_DEFAULT_TEMPERATURE = 1.0


@dataclass(frozen=True, slots=True)
class SoftQuestion:
    """A chat request, read as what a soft prompt holds."""

    method: str
    model: str
    """The request's ``model`` (echoed in the answer)."""
    question: str
    system: str | None
    passages: tuple[Passage, ...]
    options: CompressionOptions
    params: GenerationParams
    stream: bool = False
    include_usage: bool = False


@dataclass
class SoftAnswer:
    """The answer to send: headers and metrics in :attr:`prepared`, then a body or a stream."""

    prepared: Prepared
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None


class SoftChat:
    """Answers chat completions from soft prompts.

    Args:
        services: Soft-prompt services by method name (``compllm``).
        default_max_tokens: Completion tokens when a request sets none.
        fail_open: When compression fails or times out, answer from the uncompressed prompt
            instead of failing.
        timeout_seconds: Longest time compression may take; it then goes on in the background,
            warming the cache.
    """

    def __init__(
        self,
        services: Mapping[str, SoftPromptService],
        *,
        default_max_tokens: int = 512,
        fail_open: bool = True,
        timeout_seconds: float = 30.0,
    ) -> None:
        self.services = dict(services)
        self.default_max_tokens = default_max_tokens
        self.fail_open = fail_open
        self.timeout_seconds = timeout_seconds
        self._background: set[asyncio.Task[Any]] = set()

    def read(
        self, data: dict[str, Any], knobs: RagpressOptions, *, method: str
    ) -> SoftQuestion | None:
        """The question, documents and sampling parameters of a chat request body.

        Returns:
            ``None`` when no user message marks any context (the request is then forwarded).

        Raises:
            RequestValidationError: Something a soft prompt cannot represent, or a bad value;
                ``param`` names the field.
        """
        if method not in self.services:
            raise RequestValidationError(
                f"ragpress.method={method!r} has no soft-prompt backend on this server; choose "
                f"one of {sorted(self.services)}",
                param="ragpress.method",
            )
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestValidationError(
                "messages must be a non-empty list of messages", param="messages"
            )
        system: list[str] = []
        asked: list[str] = []
        passages: list[Passage] = []
        for i, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            if role not in ("system", "developer", "user"):
                raise RequestValidationError(
                    f"messages[{i}] has role {role!r}: a soft prompt (method {method}) answers one "
                    "question over documents and cannot hold conversation history or tool turns; "
                    "send system/developer and user messages only, or choose a text method",
                    param=f"messages[{i}].role",
                )
            text = _text_of(message, i, method)
            if role != "user":
                system.append(text)
                continue
            marked = find_marked(text)
            passages += [
                Passage(text[p.start : p.end], title=p.title, id=p.id) for p in marked.pieces
            ]
            if marked.outside:
                asked.append(marked.outside)
        if not passages:
            return None
        question = knobs.query or " ".join(asked).strip()
        if not question:
            raise RequestValidationError(
                "a soft prompt answers a question about the documents, and none was found: "
                "write it outside the <context> block of a user message, or in ragpress.query",
                param="messages",
            )
        _refuse_unsupported(data, method)
        stream_options = data.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        return SoftQuestion(
            method=method,
            model=str(data.get("model") or method),
            question=question,
            system="\n\n".join(t for t in system if t.strip()) or None,
            passages=tuple(passages),
            options=knobs.to_compression_options(param_prefix="ragpress."),
            params=self._params(data),
            stream=data.get("stream") is True,
            include_usage=include_usage,
        )

    async def answer(self, question: SoftQuestion) -> SoftAnswer:
        """Compress, then generate: the whole completion, or a stream of SSE chunks.

        Compression happens before this returns, so its errors are HTTP errors; generation
        errors in a stream become an error event (``data: {"error": ...}``, then ``[DONE]``).

        Raises:
            RequestValidationError: A budget the embeddings cannot meet, and the like.
            CompressionError: Compression failed and ``fail_open`` is off.
            UpstreamError: vLLM failed (non-streaming).
        """
        service = self.services[question.method]
        started = time.perf_counter()
        outcome, error = "compressed", None
        try:
            prompt = await within(
                service.aprepare(
                    question.question,
                    question.passages,
                    system=question.system,
                    options=question.options,
                ),
                self.timeout_seconds,
                self._background,
                what="soft compression",
            )
        except RequestValidationError:
            raise
        except Exception as exc:  # noqa: BLE001 - the fail-open boundary; closed, it re-raises
            error = fail_open_or_raise(
                exc, fail_open=self.fail_open, then="answering from the uncompressed prompt"
            )
            outcome = "failed-open"
            prompt = await service.aprepare_uncompressed(
                question.question, question.passages, system=question.system
            )
        summary = Summary()
        summary.add(prompt.compression)
        prepared = Prepared(
            b"",
            "compressed" if outcome == "compressed" else "failed-open",
            summary=summary,
            ms=(time.perf_counter() - started) * 1e3,
            error=error,
        )
        headers = [*prepared.headers(), ("x-ragpress-soft-backend", service.backend.name)]
        if question.stream:
            return SoftAnswer(prepared, headers, stream=self._events(service, prompt, question))
        text, finish = "", "stop"
        async for chunk in service.astream(prompt, question.params):
            text += chunk.text
            finish = chunk.finish_reason or finish
        body = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": question.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(prompt, service.builder.count_tokens(text)),
        }
        return SoftAnswer(prepared, headers, body=dumps(body))

    async def _events(
        self, service: SoftPromptService, prompt: SoftPrompt, question: SoftQuestion
    ) -> AsyncIterator[bytes]:
        """``chat.completion.chunk`` events, as OpenAI streams them."""
        base = {
            "id": _completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": question.model,
        }
        usage_field = {"usage": None} if question.include_usage else {}

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return b"data: " + dumps({**base, "choices": [choice], **usage_field}) + b"\n\n"

        yield event({"role": "assistant", "content": "", "refusal": None})
        text, finish = "", "stop"
        try:
            async for chunk in service.astream(prompt, question.params):
                if chunk.text:
                    text += chunk.text
                    yield event({"content": chunk.text})
                finish = chunk.finish_reason or finish
        except Exception as exc:  # noqa: BLE001 - the stream has started: report it in-band
            logger.warning("soft generation failed mid-stream: %r", exc)
            yield sse_error_event(exc, flavor="openai")
            return
        yield event({}, finish)
        if question.include_usage:
            usage = _usage(prompt, service.builder.count_tokens(text))
            yield b"data: " + dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
        yield b"data: [DONE]\n\n"

    def _params(self, data: dict[str, Any]) -> GenerationParams:
        max_tokens = data.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = data.get("max_tokens")
        stop = data.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not isinstance(stop, list):
            raise RequestValidationError(
                f"stop={stop!r} must be a string or a list of strings", param="stop"
            )
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise RequestValidationError(f"seed={seed!r} must be an integer", param="seed")
        return GenerationParams(
            max_tokens=self.default_max_tokens if max_tokens is None else max_tokens,
            temperature=_number(data, "temperature", _OPENAI_DEFAULT_TEMPERATURE),
            top_p=_number(data, "top_p", 1.0),
            stop=tuple(stop or ()),
            seed=seed,
        )

    async def averify(self) -> None:
        """Start-up check of every backend (vLLM must read our embeddings as token ids).

        Raises:
            ConfigurationError: A backend reads the embeddings differently.
            UpstreamError: A backend cannot be reached.
        """
        for service in self.services.values():
            await service.averify()

    async def aclose(self) -> None:
        """Close the backends."""
        for service in self.services.values():
            await service.aclose()


def _text_of(message: dict[str, Any], index: int, method: str) -> str:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise RequestValidationError(
            f"messages[{index}].content must be a string or a list of parts",
            param=f"messages[{index}].content",
        )
    texts = []
    for j, part in enumerate(content):
        if not (isinstance(part, dict) and part.get("type") == "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RequestValidationError(
                f"messages[{index}].content[{j}] is a {kind!r} part; a soft prompt (method "
                f"{method}) reads text only: send the text, or choose a text method",
                param=f"messages[{index}].content[{j}]",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise RequestValidationError(
                f"messages[{index}].content[{j}].text must be a string",
                param=f"messages[{index}].content[{j}].text",
            )
        texts.append(text)
    return "\n".join(texts)


def _refuse_unsupported(data: dict[str, Any], method: str) -> None:
    for name, neutral in _UNSUPPORTED.items():
        value = data.get(name)
        if value is None or value in neutral:
            continue
        raise RequestValidationError(
            f"{name}={value!r} is not supported with soft prompts (method {method}); drop it, "
            "or choose a text method with ragpress.method",
            param=name,
        )


def _number(data: dict[str, Any], name: str, default: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestValidationError(f"{name}={value!r} must be a number", param=name)
    return float(value)


def _usage(prompt: SoftPrompt, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt.positions,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt.positions + completion_tokens,
    }


def _completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
