"""Decoding from a prompt given as embeddings, with the frozen target LLM (adapter off).

The prompt (``[instruction tokens | concept embeddings | question tokens]``) is prefilled once
as ``inputs_embeds``; then tokens are decoded one at a time with the KV cache, and text is
emitted as it becomes final (never half a UTF-8 character, never the start of a stop string).
Each forward pass takes the encoder's lock only for itself, so compression requests interleave
with a long generation instead of waiting for it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ragpress.exceptions import MissingDependencyError, RequestValidationError

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError("torch", extra="compllm") from exc

if TYPE_CHECKING:
    from collections.abc import Generator, Sequence

    from ragpress.compressors.compllm.model import ConceptEncoder

__all__ = ["EmbeddingGenerator", "Prefill", "TextDelta", "kv_cache_bytes"]

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text; the last one carries the finish reason."""

    text: str
    finish_reason: FinishReason | None = None


@dataclass(frozen=True, slots=True)
class Prefill:
    """The prefill of one prompt: what time-to-first-token and KV-cache size measure."""

    first_token: int
    """Greedy first token."""
    prompt_positions: int
    """Sequence positions the prompt occupies (tokens plus concept embeddings)."""
    kv_cache_bytes: int
    """Bytes of keys and values held for the prompt."""
    seconds: float
    """Wall time of the prefill and first-token choice (synchronised on GPU)."""


class EmbeddingGenerator:
    """Generates text from prompt embeddings with the encoder's frozen LLM.

    Args:
        encoder: The loaded CompLLM encoder; its LLM with the adapter off is the reader.
    """

    def __init__(self, encoder: ConceptEncoder) -> None:
        self.encoder = encoder
        self.tokenizer = encoder.tokenizer
        self.eos_token_ids = _eos_ids(encoder)

    def prefill(self, prompt_embeds: torch.Tensor) -> Prefill:
        """Run the prompt and pick the first token greedily (for TTFT and KV measurements)."""
        started = time.perf_counter()
        with torch.inference_mode():
            logits, cache = self._prefill(prompt_embeds)
            token = int(logits.argmax())
        if prompt_embeds.device.type == "cuda":
            torch.cuda.synchronize(prompt_embeds.device)
        return Prefill(
            first_token=token,
            prompt_positions=int(prompt_embeds.shape[0]),
            kv_cache_bytes=kv_cache_bytes(cache),
            seconds=time.perf_counter() - started,
        )

    def stream(
        self,
        prompt_embeds: torch.Tensor,
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int | None = None,
    ) -> Generator[TextDelta, None, None]:
        """Generate from ``prompt_embeds`` (``(n, d)``), yielding text as it becomes final.

        Args:
            prompt_embeds: The whole prompt as input embeddings, chat template included.
            max_new_tokens: Upper bound on generated tokens.
            temperature: 0 decodes greedily; above 0 samples.
            top_p: Nucleus sampling mass (with ``temperature > 0``).
            stop: Strings that end generation; they are not emitted.
            seed: Seed for sampling, for reproducible outputs.

        Raises:
            RequestValidationError: Bad sampling parameters or an empty prompt.
        """
        _check(prompt_embeds, max_new_tokens, temperature, top_p)
        generator = None
        if seed is not None and temperature > 0:
            generator = torch.Generator(device=self.encoder.device).manual_seed(seed)
        ids: list[int] = []
        emitted = ""
        finish: FinishReason = "length"
        stopped_by_string = False
        with torch.inference_mode():
            logits, cache = self._prefill(prompt_embeds)
            for step in range(max_new_tokens):
                token = _sample(logits, temperature, top_p, generator)
                if token in self.eos_token_ids:
                    finish = "stop"
                    break
                ids.append(token)
                text = self._decode(ids)
                cut = _first_stop(text, stop, len(emitted))
                if cut is not None:
                    if cut > len(emitted):
                        yield TextDelta(text[len(emitted) : cut])
                    finish, stopped_by_string = "stop", True
                    break
                ready = _settled(text, stop)
                if len(ready) > len(emitted):
                    yield TextDelta(ready[len(emitted) :])
                    emitted = ready
                if step + 1 < max_new_tokens:
                    logits, cache = self._step(token, cache)
        if ids and not stopped_by_string:
            text = self._decode(ids)
            if len(text) > len(emitted):
                yield TextDelta(text[len(emitted) :])
        yield TextDelta("", finish)

    def generate(self, prompt_embeds: torch.Tensor, **params: object) -> str:
        """The whole generated text (see :meth:`stream` for the parameters)."""
        return "".join(d.text for d in self.stream(prompt_embeds, **params))  # type: ignore[arg-type]

    # -- internals -----------------------------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)
        return text

    def _prefill(self, prompt_embeds: torch.Tensor) -> tuple[torch.Tensor, object]:
        embeds = prompt_embeds.to(device=self.encoder.device, dtype=self.encoder.dtype)
        with self.encoder.frozen() as llm:
            out = llm(inputs_embeds=embeds[None], use_cache=True, logits_to_keep=1)
        return out.logits[0, -1].float(), out.past_key_values

    def _step(self, token: int, cache: object) -> tuple[torch.Tensor, object]:
        ids = torch.tensor([[token]], dtype=torch.long, device=self.encoder.device)
        with self.encoder.frozen() as llm:
            out = llm(input_ids=ids, past_key_values=cache, use_cache=True)
        return out.logits[0, -1].float(), out.past_key_values


def kv_cache_bytes(cache: object) -> int:
    """Bytes of every key and value tensor in a Hugging Face cache object."""
    total = 0
    for layer in getattr(cache, "layers", ()):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def _eos_ids(encoder: ConceptEncoder) -> frozenset[int]:
    found: set[int] = set()
    for value in (encoder.tokenizer.eos_token_id, encoder.llm.generation_config.eos_token_id):
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list | tuple):
            found.update(int(v) for v in value)
    return frozenset(found)


def _check(prompt: torch.Tensor, max_new_tokens: int, temperature: float, top_p: float) -> None:
    if prompt.dim() != 2 or prompt.shape[0] == 0:
        raise RequestValidationError(
            f"prompt embeddings must be a non-empty (positions, width) tensor, not "
            f"{tuple(prompt.shape)}",
            param="prompt_embeds",
        )
    if max_new_tokens < 1:
        raise RequestValidationError(
            f"max_tokens={max_new_tokens} must be >= 1", param="max_tokens"
        )
    if not (math.isfinite(temperature) and temperature >= 0):
        raise RequestValidationError(
            f"temperature={temperature} must be >= 0 (0 is greedy)", param="temperature"
        )
    if not 0 < top_p <= 1:
        raise RequestValidationError(f"top_p={top_p} must be in (0, 1]", param="top_p")


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs[outside] = 0
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


def _first_stop(text: str, stop: Sequence[str], emitted: int) -> int | None:
    """Where the earliest stop string starts, searching only text that can hold a new one."""
    cuts = []
    for s in stop:
        index = text.find(s, max(0, emitted - len(s) + 1))
        if index != -1:
            cuts.append(index)
    return min(cuts) if cuts else None


def _settled(text: str, stop: Sequence[str]) -> str:
    """The part of ``text`` that can no longer change: no partial character or stop string."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":
        end -= 1
    for s in stop:
        for k in range(min(len(s) - 1, end), 0, -1):
            if text[:end].endswith(s[:k]):
                end -= k
                break
    return text[:end]
