"""Readers: the LLM that answers the evaluation's questions.

* :class:`TransformersReader` — a local causal LM (default: the embedded SmolLM2-135M-Instruct,
  see :mod:`ragpress.embedded`), greedy decoding, prompts sorted by length and batched under a
  token budget so the cores are used and little is padded;
* :class:`OpenAIReader` — any OpenAI-compatible chat endpoint (vLLM, a hosted API, the ragpress
  proxy itself), ``temperature=0``, a few requests in flight.

Both answer a list of chat prompts and return one :class:`ReaderReply` each; a prompt that
fails gets its error in the reply instead of failing the run.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ragpress.embedded import EMBEDDED_READER, resolve_model
from ragpress.exceptions import ConfigurationError, MissingDependencyError, UpstreamError
from ragpress.hub import model_not_found, model_revision

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from ragpress.middleware.evaluation.records import Message

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "OpenAIReader",
    "Reader",
    "ReaderReply",
    "TransformersReader",
    "native_dtype",
]

DEFAULT_MAX_NEW_TOKENS = 32
"""Tokens a reply may have; short-answer QA needs few, and decoding dominates short prompts."""


@dataclass(frozen=True, slots=True)
class ReaderReply:
    """What the reader answered to one prompt."""

    text: str
    ms: float
    """This prompt's share of the reader's wall time (batches are shared by prompt length)."""
    error: str | None = None


class Reader(Protocol):
    """Answers chat prompts."""

    def fingerprint(self) -> str:
        """Identifies the model and decoding settings (answers are cached under it)."""
        ...

    def answer(
        self,
        prompts: Sequence[Sequence[Message]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ReaderReply]:
        """One reply per prompt, in order; ``on_progress(n)`` after every ``n`` answered."""
        ...

    def close(self) -> None:
        """Release the model or the connections."""
        ...


class TransformersReader:
    """A local Hugging Face causal LM as the reader.

    Args:
        model: Hub id, local folder, or an embedded model's name (default: the embedded
            SmolLM2-135M-Instruct, materialised on first use).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        dtype: Weights and activations. ``"float32"`` is the reference; ``"bfloat16"`` is
            about 3x faster on CPUs with AMX or AVX512-BF16 and on GPUs, with slightly
            different answers; ``"auto"`` picks bfloat16 where the hardware runs it natively
            (CUDA with bf16, CPUs with AMX or AVX512-BF16), else float32.
        max_new_tokens: Longest reply.
        batch_tokens: Padded prompt tokens per forward pass (prompts are sorted by length).
        max_batch: Prompts per forward pass.
        threads: Torch intra-op threads for this process (``None``: torch's default, one per
            core).
        cache_dir: Where embedded models are materialised.
    """

    def __init__(
        self,
        model: str = EMBEDDED_READER,
        *,
        device: str = "cpu",
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32",
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        batch_tokens: int = 16_384,
        max_batch: int = 32,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise MissingDependencyError(exc.name or "transformers", extra="eval") from exc
        if max_new_tokens < 1 or batch_tokens < 1 or max_batch < 1:
            raise ConfigurationError(
                f"max_new_tokens={max_new_tokens}, batch_tokens={batch_tokens} and "
                f"max_batch={max_batch} must all be >= 1"
            )
        if threads is not None:
            torch.set_num_threads(threads)
        self.model_name = model
        self.path = resolve_model(model, cache_dir=cache_dir)
        self.device = device
        self.dtype = native_dtype(device) if dtype == "auto" else dtype
        self.max_new_tokens = max_new_tokens
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=getattr(torch, self.dtype)
            )
        except OSError as exc:
            raise model_not_found(self.path, exc, what="reader") from exc
        self._model: Any = loaded.to(device)  # transformers types .to() through a decorator
        if self._tokenizer.chat_template is None:
            raise ConfigurationError(
                f"reader {model!r} has no chat template; use an instruction-tuned model"
            )
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model.eval()
        self._torch = torch

    def fingerprint(self) -> str:
        """Model revision, dtype and reply length."""
        return (
            f"transformers:{self.model_name}@{model_revision(self.path)}:{self.dtype}:"
            f"{self.max_new_tokens}"
        )

    def answer(
        self,
        prompts: Sequence[Sequence[Message]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ReaderReply]:
        """Greedy replies, computed in length-sorted batches."""
        encoded = [self._encode(messages) for messages in prompts]
        replies: list[ReaderReply | None] = [None] * len(prompts)
        for batch in _length_batches([len(e) for e in encoded], self.batch_tokens, self.max_batch):
            started = time.perf_counter()
            texts = self._generate([encoded[i] for i in batch])
            seconds = time.perf_counter() - started
            total = sum(len(encoded[i]) for i in batch)
            for i, text in zip(batch, texts, strict=True):
                replies[i] = ReaderReply(text, seconds * 1e3 * len(encoded[i]) / total)
            if on_progress is not None:
                on_progress(len(batch))
        return [r for r in replies if r is not None]

    def close(self) -> None:
        """Drop the model (the memory is freed once nothing else holds it)."""
        self._model = None

    def _encode(self, messages: Sequence[Message]) -> list[int]:
        rendered = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False
        )
        assert isinstance(rendered, str)
        ids: list[int] = self._tokenizer(rendered, add_special_tokens=False)["input_ids"]
        return ids

    def _generate(self, rows: list[list[int]]) -> list[str]:
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = self._tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor(
            [[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device
        )
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad,
            )
        return [
            text.strip()
            for text in self._tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        ]


class OpenAIReader:
    """Any OpenAI-compatible ``/chat/completions`` endpoint as the reader.

    Args:
        base_url: The API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: The ``model`` field of each request.
        api_key: Sent as a bearer token when given.
        max_new_tokens: ``max_tokens`` of each request.
        concurrency: Requests in flight.
        timeout_seconds: Per request.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        concurrency: int = 8,
        timeout_seconds: float = 120.0,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", extra="eval") from exc
        if concurrency < 1:
            raise ConfigurationError(f"concurrency={concurrency} must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.concurrency = concurrency
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout_seconds
        )
        self._httpx = httpx

    def fingerprint(self) -> str:
        """Endpoint, model and reply length."""
        return f"openai:{self.base_url}:{self.model}:{self.max_new_tokens}"

    def answer(
        self,
        prompts: Sequence[Sequence[Message]],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> list[ReaderReply]:
        """Replies with ``temperature=0``; a failed request's reply carries its error."""

        def one(messages: Sequence[Message]) -> ReaderReply:
            started = time.perf_counter()
            try:
                text = self._complete(messages)
                reply = ReaderReply(text, (time.perf_counter() - started) * 1e3)
            except UpstreamError as exc:
                reply = ReaderReply("", (time.perf_counter() - started) * 1e3, error=str(exc))
            if on_progress is not None:
                on_progress(1)
            return reply

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, prompts))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def _complete(self, messages: Sequence[Message]) -> str:
        body = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": self.max_new_tokens,
            "temperature": 0,
        }
        try:
            response = self._client.post("/chat/completions", json=body)
        except self._httpx.HTTPError as exc:
            raise UpstreamError(f"reader at {self.base_url} unreachable: {exc}") from exc
        if response.status_code != 200:
            raise UpstreamError(
                f"reader at {self.base_url} answered {response.status_code}: {response.text[:200]}",
                status_code=response.status_code,
            )
        try:
            data: Any = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"reader at {self.base_url} sent no completion: {exc}") from exc
        return str(content or "").strip()


def native_dtype(device: str) -> Literal["float32", "bfloat16"]:
    """``"bfloat16"`` where ``device`` computes it natively, else ``"float32"``."""
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        if any(getattr(torch.cpu, name, lambda: False)() for name in probes):
            return "bfloat16"
    return "float32"


def _length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size within ``batch_tokens``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        # Sorted longest first, so the group's first prompt sets its padded width.
        if (
            current is not None
            and len(current) < max_batch
            and lengths[current[0]] * (len(current) + 1) <= batch_tokens
        ):
            current.append(i)
        else:
            batches.append([i])
    return batches
