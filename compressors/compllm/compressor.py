"""``compllm``: soft segment compression into cached concept embeddings.

CompLLM (Berton et al., 2025, arXiv 2509.19228) turns every ~20-token segment of the context into
half as many concept embeddings in the target LLM's input-embedding space; the unmodified LLM
reads them as ``inputs_embeds`` in place of the context tokens, with the instruction and the
question kept as text tokens. Nothing is dropped: every segment is represented, at a fixed rate.
Segments are compressed independently, so the work is linear in context length and each
segment's embeddings are cached on their own and reused in any later prompt.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ragpress.compressors._keep import units_holding
from ragpress.compressors.base import CONFIG_FILE, AnalysisUnit, BaseCompressor, saved_config
from ragpress.compressors.compllm.model import DEFAULT_BATCH_SIZE, ConceptEncoder, DTypeName
from ragpress.compressors.compllm.prompt import DEFAULT_INSTRUCTION, PromptParts, PromptTemplate
from ragpress.compressors.compllm.segments import (
    Segment,
    decode_concepts,
    document_text,
    encode_concepts,
    split_document,
)
from ragpress.exceptions import BudgetError, ConfigurationError
from ragpress.hashing import fingerprint_of
from ragpress.hub import model_revision
from ragpress.types import CompressedPassage, CompressionResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ragpress.types import CompressionOptions, Passage

__all__ = ["CompLLMCompressor", "CompLLMStats", "PassageConcepts"]


@dataclass(frozen=True, slots=True)
class PassageConcepts:
    """A passage's segments and the concept embeddings of each (its cacheable analysis)."""

    text: str
    """:func:`~ragpress.compressors.compllm.segments.document_text` of the passage."""
    segments: tuple[Segment, ...]
    concepts: tuple[torch.Tensor, ...]
    """One ``(ceil(n / rate), d)`` tensor per segment."""

    @property
    def tokens(self) -> int:
        """Tokens of the passage's text in the target model's tokenizer."""
        return sum(len(s.ids) for s in self.segments)


@dataclass
class CompLLMStats:
    """Running totals of the compute actually done (cache hits cost none)."""

    segments_encoded: int = 0
    tokens_encoded: int = 0


class CompLLMCompressor(BaseCompressor):
    """CompLLM soft compression: context segments become concept embeddings for the LLM.

    The result's ``embeddings`` holds the concept embeddings of all passages, in passage order
    (passage i owns ``passages[i].tokens_after`` rows); passage texts are empty, because the
    output is not text. Feed it to a model that accepts ``inputs_embeds`` — the local
    Hugging Face backend or a vLLM server with ``--enable-prompt-embeds`` — with
    :meth:`prompt_embeddings`. The query does not change the compression.

    Args:
        adapter: A folder written by ``ragpress train-soft`` (or :meth:`save`).
        model: Load the adapter onto this base model id or folder instead of the one it names.
        segment_tokens: Segment length in tokens; defaults to the adapter's.
        device: Torch device.
        dtype: Model dtype; ``auto`` is bfloat16 on a capable GPU, float32 elsewhere.
        batch_size: Segments per forward pass.
        instruction: The line before the documents in the prompt.
        encoder: An already loaded :class:`ConceptEncoder` (instead of ``adapter``).
    """

    name: ClassVar[str] = "compllm"
    version: ClassVar[str] = "2"  # 2: the LoRA runs in the model's dtype when encoding
    config_keys: ClassVar[tuple[str, ...]] = (
        "adapter",
        "model",
        "segment_tokens",
        "device",
        "dtype",
        "batch_size",
        "instruction",
    )
    injected_keys: ClassVar[tuple[str, ...]] = ("encoder",)
    analysis_artefact: ClassVar[str | None] = "concepts"
    output_kind = "embeddings"

    def __init__(
        self,
        adapter: str | None = None,
        *,
        model: str | None = None,
        segment_tokens: int | None = None,
        device: str = "cpu",
        dtype: DTypeName = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        instruction: str = DEFAULT_INSTRUCTION,
        encoder: ConceptEncoder | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigurationError(f"batch_size={batch_size} must be >= 1")
        if segment_tokens is not None and not 1 <= segment_tokens <= 4096:
            raise ConfigurationError(f"segment_tokens={segment_tokens} must be in [1, 4096]")
        if encoder is None:
            if adapter is None:
                raise ConfigurationError(
                    "compllm needs a trained adapter folder: set params.adapter (for example "
                    'RAGPRESS_COMPRESSION__PARAMS=\'{"adapter": "./adapter"}\'); train one with '
                    "`ragpress train-soft`"
                )
            encoder = ConceptEncoder.load(adapter, base_model=model, device=device, dtype=dtype)
        self.encoder = encoder
        self.adapter = adapter
        self.model = model or encoder.config.base_model
        self.segment_tokens = segment_tokens or encoder.config.segment_tokens
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.instruction = instruction
        self.template = PromptTemplate(encoder.tokenizer, instruction=instruction)
        self.stats = CompLLMStats()
        self._stats_lock = threading.Lock()

    @classmethod
    def create(
        cls,
        model: str,
        *,
        rate: float = 2.0,
        segment_tokens: int = 20,
        lora_rank: int = 16,
        device: str = "cpu",
        dtype: DTypeName = "auto",
        seed: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> CompLLMCompressor:
        """A fresh, untrained compressor on ``model``: the starting point of training."""
        encoder = ConceptEncoder.create(
            model,
            rate=rate,
            segment_tokens=segment_tokens,
            lora_rank=lora_rank,
            device=device,
            dtype=dtype,
            seed=seed,
        )
        return cls(encoder=encoder, device=device, dtype=dtype, batch_size=batch_size)

    # -- identity ------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        """Compression rate C of the adapter."""
        return self.encoder.config.rate

    def model_revision(self) -> str:
        """Base model revision plus a hash of the adapter weights."""
        return f"{model_revision(self.model)}+adapter:{self.encoder.weights_digest()}"

    def fingerprint(self) -> str:
        """Hash of what determines the concept embeddings (not device, paths or batching)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint_of(
                {
                    "name": self.name,
                    "version": self.version,
                    "segment_tokens": self.segment_tokens,
                    "rate": self.rate,
                    "concept_token_id": self.encoder.config.concept_token_id,
                    "dtype": str(self.encoder.dtype),
                    "revision": self.model_revision(),
                }
            )
        return self._fingerprint

    def refresh_fingerprint(self) -> None:
        """Forget the cached fingerprint (after the weights change, e.g. in training)."""
        self._fingerprint = None
        self.encoder.forget_digest()

    # -- cacheable analysis: one unit per segment ----------------------------------------------

    def segments(self, passage: Passage) -> list[Segment]:
        """The passage's segments, as they are compressed and cached."""
        return split_document(self.encoder.tokenizer, document_text(passage), self.segment_tokens)

    def analysis_units(self, passages: Sequence[Passage]) -> list[list[AnalysisUnit]]:
        """One unit per segment, keyed by the digest of its token ids."""
        return [[AnalysisUnit(s.digest, s) for s in self.segments(p)] for p in passages]

    def analyze_units(self, items: Sequence[Any]) -> list[Any]:
        """Compress segments into concept embeddings, batched across all of them."""
        segments: Sequence[Segment] = items
        concepts = self.encoder.encode([s.ids for s in segments], batch_size=self.batch_size)
        with self._stats_lock:
            self.stats.segments_encoded += len(segments)
            self.stats.tokens_encoded += sum(len(s.ids) for s in segments)
        return concepts

    def join_analyses(
        self, passage: Passage, units: Sequence[AnalysisUnit], parts: Sequence[Any]
    ) -> PassageConcepts:
        """A passage's segments with their concept embeddings."""
        return PassageConcepts(document_text(passage), tuple(u.item for u in units), tuple(parts))

    def analyze(self, passages: Sequence[Passage]) -> list[PassageConcepts]:
        """Compress every segment of every passage (each distinct segment once)."""
        units = self.analysis_units(passages)
        distinct = {u.key: u.item for pu in units for u in pu}
        concepts = dict(zip(distinct, self.analyze_units(list(distinct.values())), strict=True))
        return [
            self.join_analyses(p, pu, [concepts[u.key] for u in pu])
            for p, pu in zip(passages, units, strict=True)
        ]

    def encode_analysis(self, analysis: Any) -> bytes:
        """One segment's concept embeddings as safetensors bytes (dtype/shape header)."""
        tensor: torch.Tensor = analysis
        return encode_concepts(tensor)

    def decode_analysis(self, data: bytes) -> torch.Tensor:
        """Inverse of :meth:`encode_analysis`.

        Raises:
            ValueError: The entry does not fit this model (the pipeline then recomputes it).
        """
        tensor = decode_concepts(data)
        if tensor.shape[1] != self.encoder.hidden_size or tensor.dtype != self.encoder.dtype:
            raise ValueError(
                f"cached concepts {tuple(tensor.shape)} {tensor.dtype} do not fit width "
                f"{self.encoder.hidden_size} {self.encoder.dtype}"
            )
        return tensor

    def check_analysis(self, item: Any, analysis: Any) -> None:
        """Refuse cached concepts that cannot be this segment's (issue 21).

        A segment of n tokens has ``ceil(n / rate)`` concept embeddings of the model's width,
        all finite.

        Raises:
            ValueError: Saying what does not fit; the pipeline then recomputes the segment.
        """
        segment: Segment = item
        tensor: torch.Tensor = analysis
        expected = (self.encoder.config.concepts_for(len(segment.ids)), self.encoder.hidden_size)
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"cached concepts have shape {tuple(tensor.shape)}, expected {expected} for a "
                f"segment of {len(segment.ids)} tokens"
            )
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError("cached concepts hold NaN or infinite values")

    # -- compression ---------------------------------------------------------------------------

    def compress(
        self,
        query: str | None,
        passages: Sequence[Passage],
        options: CompressionOptions,
        *,
        analyses: Sequence[Any] | None = None,
    ) -> CompressionResult:
        """Concept embeddings for ``passages``; segments holding a ``keep`` string stay tokens.

        The rate is fixed by the adapter; a ``target_tokens`` budget is checked against it.

        Raises:
            BudgetError: The embeddings need more positions than ``options.target_tokens``.
        """
        if analyses is None:
            analyses = self.analyze(passages)
        device = self.encoder.device
        rows: list[torch.Tensor] = []
        compressed: list[CompressedPassage] = []
        verbatim = 0
        for passage, analysis in zip(passages, analyses, strict=True):
            keep = units_holding(analysis.text, [s.span for s in analysis.segments], options.keep)
            verbatim += len(keep)
            parts = [
                self.encoder.embed_ids(segment.ids) if i in keep else concepts.to(device)
                for i, (segment, concepts) in enumerate(
                    zip(analysis.segments, analysis.concepts, strict=True)
                )
            ]
            after = sum(int(p.shape[0]) for p in parts)
            rows.extend(parts)
            compressed.append(CompressedPassage(passage, "", None, analysis.tokens, after))
        before = sum(p.tokens_before for p in compressed)
        after = sum(p.tokens_after for p in compressed)
        if options.target_tokens is not None and after > options.target_tokens:
            raise BudgetError(
                f"target_tokens={options.target_tokens} is below the {after} concept embeddings "
                f"that {before} tokens need at the adapter's fixed rate {self.rate:g}x; raise "
                "target_tokens or send fewer documents"
            )
        notes = [
            f"compllm: {before} context tokens -> {after} concept embeddings in "
            "result.embeddings (passage texts are empty); send them to a model that accepts "
            "inputs_embeds (local or vLLM prompt_embeds)"
        ]
        requested = _requested_ratio(options)
        if requested is not None and abs(requested - self.rate) > 1e-6:
            notes.append(
                f"the compression rate is fixed by the adapter at {self.rate:g}x; the requested "
                f"{requested:g}x was not applied"
            )
        if verbatim:
            notes.append(f"{verbatim} segment(s) holding keep strings were passed as tokens")
        embeddings = (
            torch.cat([r.to(self.encoder.dtype) for r in rows])
            if rows
            else self.encoder.embed_ids([])
        )
        return CompressionResult(
            passages=tuple(compressed),
            method=self.name,
            tokens_before=before,
            tokens_after=after,
            notes=tuple(notes),
            embeddings=embeddings,
        )

    # -- prompts -------------------------------------------------------------------------------

    def prompt_parts(self, question: str, *, system: str | None = None) -> PromptParts:
        """Token ids of the instruction before, and the question after, the context."""
        return self.template.parts(question, system=system)

    def prompt_embeddings(
        self, question: str, concepts: torch.Tensor, *, system: str | None = None
    ) -> torch.Tensor:
        """``[instruction tokens | concepts | question tokens]`` as one ``(n, d)`` tensor.

        This is what the frozen LLM reads as ``inputs_embeds`` (or vLLM as ``prompt_embeds``);
        the chat template is already applied.
        """
        parts = self.prompt_parts(question, system=system)
        return torch.cat(
            [
                self.encoder.embed_ids(parts.prefix),
                concepts.to(device=self.encoder.device, dtype=self.encoder.dtype),
                self.encoder.embed_ids(parts.suffix),
            ]
        )

    def probe_prompt(self, question: str = "Say hello.") -> tuple[list[int], torch.Tensor]:
        """A short templated prompt with no documents, as token ids and as input embeddings.

        A serving backend must turn both into the same output; see
        ``VLLMBackend.acheck_embedding_parity``.
        """
        ids = self.prompt_parts(question).around([])
        return ids, self.encoder.embed_ids(ids)

    def full_prompt_ids(
        self, question: str, passages: Sequence[Passage], *, system: str | None = None
    ) -> list[int]:
        """The same prompt with the full context as tokens (the uncompressed baseline)."""
        context = [i for p in passages for s in self.segments(p) for i in s.ids]
        return self.prompt_parts(question, system=system).around(context)

    def full_prompt_embeddings(
        self, question: str, passages: Sequence[Passage], *, system: str | None = None
    ) -> torch.Tensor:
        """:meth:`full_prompt_ids` as input embeddings: the prompt without compression.

        Serving code falls back to it when compression fails: the same model and template read
        the documents as plain tokens.
        """
        return self.encoder.embed_ids(self.full_prompt_ids(question, passages, system=system))

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the base model's tokenizer (e.g. a completion's usage)."""
        return len(self.encoder.tokenizer.encode(text, add_special_tokens=False))

    # -- persistence ---------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the adapter folder (weights, ``compllm.json``) and the registry entry."""
        folder = Path(path)
        self.encoder.save(folder)
        payload = {
            "name": self.name,
            "version": self.version,
            "config": {"segment_tokens": self.segment_tokens, "instruction": self.instruction},
        }
        (folder / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> CompLLMCompressor:
        """Load an adapter folder written by :meth:`save` or ``ragpress train-soft``."""
        saved: dict[str, Any] = {}
        config_file = Path(path) / CONFIG_FILE
        if config_file.is_file():
            saved = saved_config(config_file, json.loads(config_file.read_text()).get("config", {}))
        return cls(adapter=str(path), **{**saved, **overrides})


def _requested_ratio(options: CompressionOptions) -> float | None:
    options = options.fixed()  # concept embeddings have no evidence-sized budget
    if options.target_ratio is not None and not isinstance(options.target_ratio, str):
        return options.target_ratio
    if options.rate is not None:
        return 1 / options.rate
    return None
