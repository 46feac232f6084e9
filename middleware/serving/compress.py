"""The compression APIs, without a web framework: ragpress's own and LiteLLM's two contracts."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import CompressionError, RequestValidationError
from ragpress.middleware.serving.context import find_marked
from ragpress.middleware.serving.messages import MessageGroup, Target, plan_compression
from ragpress.middleware.serving.protocols.compress import (
    CompressedDocument,
    CompressionStats,
    CompressResponse,
    GuardrailResponse,
    HeadroomCompressResponse,
)
from ragpress.middleware.serving.protocols.openai import RagpressOptions, parse_options
from ragpress.types import Passage

if TYPE_CHECKING:
    from ragpress.middleware.serving.chat import ChatService, Summary
    from ragpress.middleware.serving.protocols.compress import (
        CompressRequest,
        GuardrailRequest,
        HeadroomCompressRequest,
    )

__all__ = ["CompressService"]

logger = logging.getLogger("ragpress.proxy")


class CompressService:
    """Serves ``/v1/compress`` and the LiteLLM contracts with the proxy's pipelines and policy.

    Args:
        chat: The chat service, whose pipelines, timeout and fail-open policy are shared.
    """

    def __init__(self, chat: ChatService) -> None:
        self.chat = chat

    async def compress(self, request: CompressRequest) -> CompressResponse:
        """Compress documents for a question; provenance and statistics come back.

        Raises:
            RequestValidationError: Bad budget, unknown method, or a document over the limit.
            CompressionError: The compressor failed (this API never fails open: the caller
                asked for compression and gets an error it can act on).
        """
        pipeline = self.chat.pipelines.get(request.method)
        if pipeline.output_kind == "embeddings":
            raise RequestValidationError(
                f"method={pipeline.method!r} produces soft embeddings, not text, so this API "
                "has nothing to return; choose a text method, or send the documents through "
                "/v1/chat/completions, which answers from soft prompts",
                param="method",
            )
        options = request.to_compression_options()
        passages = [
            Passage(d.text, title=d.title, id=d.id, metadata=d.metadata) for d in request.documents
        ]
        started = time.perf_counter()
        result = await pipeline.acompress(request.query or None, passages, options)
        ms = (time.perf_counter() - started) * 1e3
        documents = [
            CompressedDocument(
                text=p.text,
                title=p.title,
                id=p.id,
                metadata=dict(p.metadata),
                spans=None if p.spans is None else [tuple(s) for s in p.spans],
                tokens_before=p.tokens_before,
                tokens_after=p.tokens_after,
            )
            for p in result.passages
        ]
        return CompressResponse(
            documents=documents,
            context=result.context(),
            stats=CompressionStats(
                tokens_before=result.tokens_before,
                tokens_after=result.tokens_after,
                ratio=round(result.ratio, 4) if result.tokens_after else None,
                method=result.method,
                cache_hits=result.cache_hits,
                cache_misses=result.cache_misses,
                ms=round(ms, 2),
                notes=list(result.notes),
            ),
        )

    async def headroom(
        self, request: HeadroomCompressRequest, *, bypass: bool = False
    ) -> HeadroomCompressResponse:
        """The Headroom-style contract: compress the marked context of chat messages.

        The same rules as the proxy apply (system prompts and ``cache_control`` prefixes are
        never rewritten; only ``<context>`` blocks are compressed), and the same number of
        messages comes back. Token counts cover the compressed documents.

        Args:
            request: The messages and options.
            bypass: The caller sent ``x-headroom-bypass: true``: answer unchanged.
        """
        if bypass:
            return HeadroomCompressResponse.unchanged(request.messages)
        raw = (request.config or {}).get("ragpress")
        options = parse_options(raw, source="config.ragpress") if raw is not None else None
        body: dict[str, Any] = {"messages": request.messages}
        summary = await self._compress_body(body, options)
        if summary is None or summary.method == "passthrough":
            return HeadroomCompressResponse.unchanged(request.messages)
        before, after = summary.tokens_before, summary.tokens_after
        return HeadroomCompressResponse(
            messages=body["messages"],
            tokens_before=before,
            tokens_after=after,
            tokens_saved=before - after,
            compression_ratio=round(after / before, 4) if before else 1.0,
            transforms_applied=[f"ragpress:{summary.method}:{summary.ratio:.2f}"],
        )

    async def guardrail(self, request: GuardrailRequest) -> GuardrailResponse:
        """LiteLLM's Generic Guardrail API: compress the marked context of ``texts``.

        LiteLLM sends every text of the request, the system prompt included. A text is only
        compressed when it holds ``<context>`` markers and, where ``structured_messages`` say
        so, belongs to a user or tool turn past the last ``cache_control`` marker.
        """
        if request.input_type != "request" or not request.texts:
            return GuardrailResponse(action="NONE")
        raw = request.ragpress_options()
        options = (
            parse_options(raw, source="additional_provider_specific_params.ragpress")
            if raw is not None
            else None
        )
        if options is not None and options.compress is False:
            return GuardrailResponse(action="NONE")
        texts = list(request.texts)
        allowed = self._compressible_texts(request)
        holders = [{"text": t} for t in texts]
        groups = []
        for i, holder in enumerate(holders):
            if allowed is not None and i not in allowed:
                continue
            marked = find_marked(texts[i])
            if not marked.pieces:
                continue
            query = (options.query if options else None) or marked.outside or None
            if query is None and allowed is not None:
                query = allowed[i]
            groups.append(MessageGroup(i, [Target(holder, "text", marked)], query))
        if not groups:
            return GuardrailResponse(action="NONE")
        summary = await self._run_groups(groups, options)
        if summary is None or summary.method == "passthrough":
            return GuardrailResponse(action="NONE")
        return GuardrailResponse(
            action="GUARDRAIL_INTERVENED", texts=[holder["text"] for holder in holders]
        )

    @staticmethod
    def _compressible_texts(request: GuardrailRequest) -> dict[int, str | None] | None:
        """Positions in ``texts`` the structured messages allow to be rewritten, with questions.

        LiteLLM builds ``texts`` by walking ``structured_messages`` in order: a string
        ``content`` is one text, a list ``content`` gives one text per part with a ``text``
        (issue 21: matching by equality would let a system prompt that reads like a user turn
        be compressed). When the two do not line up, a text is matched only if it occurs
        exactly once on each side; an ambiguous one is left alone.
        """
        if not request.structured_messages:
            return None
        messages = request.structured_messages
        plan = plan_compression({"messages": messages}, "openai")
        allowed = {
            id(target.holder): group.query for group in plan.groups for target in group.targets
        }
        slots: list[tuple[str, int]] = []  # (text, id of the dict that holds it)
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                slots.append((content, id(message)))
            elif isinstance(content, list):
                for part in content:
                    text = part.get("text") if isinstance(part, dict) else None
                    if text is not None:
                        slots.append((text if isinstance(text, str) else "", id(part)))
        texts = request.texts
        if [text for text, _ in slots] == list(texts):
            return {i: allowed[holder] for i, (_, holder) in enumerate(slots) if holder in allowed}
        positions: dict[int, str | None] = {}
        for i, text in enumerate(texts):
            matches = [holder for candidate, holder in slots if candidate == text]
            if texts.count(text) == 1 and len(matches) == 1 and matches[0] in allowed:
                positions[i] = allowed[matches[0]]
        return positions

    async def _compress_body(
        self, body: dict[str, Any], options: RagpressOptions | None
    ) -> Summary | None:
        if options is not None and options.compress is False:
            return None
        knobs = options or RagpressOptions()
        plan = plan_compression(body, "openai", query=knobs.query)
        if not plan.groups:
            return None
        return await self._run_groups(plan.groups, options)

    async def _run_groups(
        self, groups: list[MessageGroup], options: RagpressOptions | None
    ) -> Summary | None:
        knobs = options or RagpressOptions()
        pipeline = self.chat.pipelines.get(knobs.method, param="ragpress.method")
        compression_options = knobs.to_compression_options(param_prefix="ragpress.")
        try:
            return await self.chat.compress_groups(pipeline, groups, compression_options)
        except RequestValidationError:
            raise
        except Exception as exc:
            if not self.chat.fail_open:
                if isinstance(exc, CompressionError):
                    raise
                raise CompressionError(f"compression failed: {type(exc).__name__}: {exc}") from exc
            logger.warning("compression failed; answering uncompressed (fail_open): %r", exc)
            return None
