"""The vLLM backend: the soft prompt goes to a vLLM server as ``prompt_embeds``.

The request is the one vLLM documents for its OpenAI-compatible Completions API (docs
``features/prompt_embeds.md``): ``{"model", "prompt_embeds": <base64 of torch.save(tensor)>,
"max_tokens", ...}`` with a dense ``(positions, hidden)`` float32/bfloat16/float16 tensor. The
server must run vLLM >= 0.11.1 (V1 engine; the fix of CVE-2025-62164) with
``--enable-prompt-embeds``, reachable only by ragpress: anyone who can reach it can send it
arbitrary tensors.

Deliberate choices:

* **No ``prompt`` field.** vLLM treats ``prompt`` and ``prompt_embeds`` in one request as
  *separate* prompts, not a concatenation; the OpenAI client's ``prompt=""`` workaround is not
  needed on the wire, so the body carries ``prompt_embeds`` only.
* **The chat template is already applied** by ragpress (vLLM applies none to embeddings).
* **Compact, dense, CPU tensor.** ``torch.save`` of a view writes its whole storage, so the
  tensor is cloned first; sparse tensors are never sent.
* **Embedding scale.** Some model families (Gemma) disagree on whether input embeddings are
  scaled by sqrt(d). :meth:`VLLMBackend.acheck_embedding_parity` compares greedy output from
  token ids with output from their embeddings, and refuses to run on a mismatch.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import (
    ConfigurationError,
    MissingDependencyError,
    UpstreamError,
    UpstreamTimeoutError,
)
from ragpress.middleware.generation.base import GenerationChunk, GenerationParams

try:
    import httpx2
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "httpx2", extra="compllm") from exc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from ragpress.middleware.generation.base import FinishReason
    from ragpress.types import ArrayLike

__all__ = ["DEFAULT_TIMEOUT_SECONDS", "VLLMBackend", "encode_prompt_embeds"]

logger = logging.getLogger("ragpress.generation")

DEFAULT_TIMEOUT_SECONDS = 120.0
_LARGE_PAYLOAD_BYTES = 32 << 20
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def encode_prompt_embeds(prompt_embeds: ArrayLike) -> str:
    """Base64 of ``torch.save`` of a dense, compact ``(positions, hidden)`` CPU tensor.

    Raises:
        ValueError: Not a 2-D float32/bfloat16/float16 torch tensor.
    """
    tensor = prompt_embeds
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.dtype not in _DTYPES:
        raise ValueError(
            "prompt_embeds must be a 2-D float32/bfloat16/float16 torch tensor, not "
            f"{type(tensor).__name__} {tuple(getattr(tensor, 'shape', ()))}"
        )
    compact = tensor.detach().to("cpu")
    if compact.layout != torch.strided:
        compact = compact.to_dense()
    buffer = io.BytesIO()
    torch.save(compact.contiguous().clone(), buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class VLLMBackend:
    """Streams completions of soft prompts from a vLLM OpenAI-compatible server.

    Args:
        base_url: The server's OpenAI base URL, e.g. ``http://127.0.0.1:8000/v1``.
        model: The served model name (``--served-model-name``, or the model id).
        api_key: Sent as ``Authorization: Bearer`` when the server requires one.
        timeout_seconds: Connect/read timeout per request.
        transport: An ``httpx2`` transport to use instead of the network (tests).
    """

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"vLLM base_url={base_url!r} must be an http(s) URL such as "
                "http://127.0.0.1:8000/v1"
            )
        self.base_url = base_url.rstrip("/") + "/"
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx2.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout_seconds,
            transport=transport,
        )

    def request_body(
        self, prompt_embeds: ArrayLike, params: GenerationParams, *, stream: bool
    ) -> dict[str, Any]:
        """The JSON body of a Completions request carrying ``prompt_embeds``."""
        encoded = encode_prompt_embeds(prompt_embeds)
        if len(encoded) > _LARGE_PAYLOAD_BYTES:
            logger.warning(
                "prompt_embeds payload is %.0f MB; JSON suits a few thousand positions, run the "
                "engine in-process (local backend) for longer prompts",
                len(encoded) / 1e6,
            )
        body: dict[str, Any] = {
            "model": self.model,
            "prompt_embeds": encoded,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": stream,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def astream(
        self, prompt_embeds: ArrayLike, params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        """Stream the completion (server-sent events) of ``prompt_embeds``.

        Raises:
            UpstreamError: The server answered with an error, or broke off.
            UpstreamTimeoutError: It did not answer in time.
        """
        body = self.request_body(prompt_embeds, params, stream=True)
        finish: FinishReason | None = None
        try:
            async with self._client.stream("POST", "completions", json=body) as response:
                if response.status_code >= 400:
                    raise _error(response.status_code, await response.aread())
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    text, reason = _choice(json.loads(data))
                    finish = reason or finish
                    if text:
                        yield GenerationChunk(text)
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeoutError(f"vLLM at {self.base_url} timed out: {exc}") from exc
        except httpx2.TransportError as exc:
            raise UpstreamError(f"vLLM at {self.base_url} unreachable: {exc}") from exc
        yield GenerationChunk("", finish or "stop")

    async def acomplete(
        self, prompt_embeds: ArrayLike, params: GenerationParams
    ) -> GenerationChunk:
        """The whole completion in one response (``stream: false``)."""
        body = self.request_body(prompt_embeds, params, stream=False)
        payload = await self._post(body)
        text, reason = _choice(payload)
        return GenerationChunk(text, reason or "stop")

    async def acheck_embedding_parity(
        self, token_ids: Sequence[int], token_embeds: ArrayLike, *, max_tokens: int = 8
    ) -> None:
        """Refuse to run unless the server reads our embeddings as it reads the token ids.

        Args:
            token_ids: A short templated prompt.
            token_embeds: The same prompt embedded with our copy of the model.
            max_tokens: Greedy tokens to compare.

        Raises:
            ConfigurationError: The two greedy completions differ (embedding scale or model
                mismatch).
        """
        params = GenerationParams(max_tokens=max_tokens, temperature=0.0)
        from_ids = await self._post(
            {
                "model": self.model,
                "prompt": list(token_ids),
                "max_tokens": max_tokens,
                "temperature": 0.0,
            }
        )
        from_embeds = await self.acomplete(token_embeds, params)
        expected, _ = _choice(from_ids)
        if expected != from_embeds.text:
            raise ConfigurationError(
                f"vLLM model {self.model!r} at {self.base_url} reads our prompt embeddings "
                f"differently from the token ids (greedy {expected!r} vs {from_embeds.text!r}): "
                "the served model or its embedding scale differs from ragpress's copy; serve the "
                "same checkpoint as the compressor's base model"
            )

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = await self._client.post("completions", json=body)
        except httpx2.TimeoutException as exc:
            raise UpstreamTimeoutError(f"vLLM at {self.base_url} timed out: {exc}") from exc
        except httpx2.TransportError as exc:
            raise UpstreamError(f"vLLM at {self.base_url} unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise _error(response.status_code, response.content)
        payload: dict[str, Any] = response.json()
        return payload

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()


def _choice(payload: dict[str, Any]) -> tuple[str, FinishReason | None]:
    if "error" in payload:
        raise UpstreamError(f"vLLM reported an error: {payload['error']}", status_code=502)
    try:
        choice = payload["choices"][0]
        text = str(choice.get("text") or "")
    except (KeyError, IndexError, TypeError) as exc:
        raise UpstreamError(f"vLLM sent an unexpected completion: {payload!r:.300}") from exc
    reason = choice.get("finish_reason")
    return text, None if reason is None else ("length" if reason == "length" else "stop")


def _error(status: int, body: bytes) -> UpstreamError:
    detail = body[:500].decode("utf-8", "replace")
    hint = ""
    if status in (400, 422) and b"prompt_embeds" in body:
        hint = " (is the server started with --enable-prompt-embeds, vLLM >= 0.11.1?)"
    return UpstreamError(f"vLLM answered {status}: {detail}{hint}", status_code=status, body=body)
