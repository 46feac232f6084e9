"""Segmenting documents into token runs, and the cache format of their concept embeddings.

A document is tokenised once with the target LLM's tokenizer and cut into runs of at most
``segment_tokens`` tokens. Each run is compressed on its own, so its concept embeddings depend
on nothing but its token ids: they are cached under a digest of those ids (the segment's text as
the model reads it; the tokenizer is pinned by the compressor's fingerprint) and reused in any
later prompt that contains the same segment.

Cached values are safetensors bytes: a JSON header with dtype and shape, then the raw tensor
data, bit-exact for float32, float16 and bfloat16, and never pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.hashing import content_hash

try:
    import torch
    from safetensors.torch import load as load_tensors
    from safetensors.torch import save as save_tensors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="compllm") from exc

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from ragpress.types import Passage

__all__ = [
    "DOCUMENT_SEPARATOR",
    "Segment",
    "decode_concepts",
    "document_text",
    "encode_concepts",
    "split_document",
]

DOCUMENT_SEPARATOR = "\n\n"
"""Ends every document's text, so documents stay apart in the prompt with and without CEs."""
_SCHEMA = "1"
_TENSOR = "concepts"
_ALLOWED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True, slots=True)
class Segment:
    """A run of at most ``segment_tokens`` tokens of one document."""

    ids: tuple[int, ...]
    """Token ids, exactly as the compressor reads them."""
    span: tuple[int, int]
    """Character range ``[start, end)`` of the segment in :func:`document_text`."""

    @property
    def digest(self) -> str:
        """Content hash of the token ids (the segment's cache identity)."""
        return content_hash("compllm-segment", ",".join(map(str, self.ids)))


def document_text(passage: Passage) -> str:
    """The text a passage contributes to the prompt: title line, text, separator.

    Empty or whitespace-only passages contribute nothing.
    """
    if not passage.text.strip():
        return ""
    head = f"{passage.title}\n" if passage.title else ""
    return f"{head}{passage.text}{DOCUMENT_SEPARATOR}"


def split_document(
    tokenizer: PreTrainedTokenizerBase, text: str, segment_tokens: int
) -> list[Segment]:
    """Tokenise ``text`` (no special tokens) and cut it into runs of ``segment_tokens``.

    Raises:
        ConfigurationError: The tokenizer is not a fast (Rust) tokenizer, which is needed for
            character offsets.
    """
    if not text:
        return []
    if not tokenizer.is_fast:
        raise ConfigurationError(
            f"CompLLM needs a fast tokenizer for character offsets; {type(tokenizer).__name__} "
            "is not one (save the model's tokenizer with tokenizer.json)"
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    offsets: list[tuple[int, int]] = encoded["offset_mapping"]
    segments = []
    for start in range(0, len(ids), segment_tokens):
        chunk = slice(start, start + segment_tokens)
        chunk_offsets = offsets[chunk]
        segments.append(
            Segment(tuple(ids[chunk]), (chunk_offsets[0][0], max(e for _, e in chunk_offsets)))
        )
    return segments


def encode_concepts(concepts: torch.Tensor) -> bytes:
    """Serialise a ``(k, d)`` concept tensor: safetensors header (dtype, shape) + raw bytes."""
    if concepts.dim() != 2 or concepts.dtype not in _ALLOWED_DTYPES:
        raise ValueError(
            f"concept embeddings must be a 2-D float32/float16/bfloat16 tensor, not "
            f"{tuple(concepts.shape)} {concepts.dtype}"
        )
    tensor = concepts.detach().to("cpu").contiguous()
    return save_tensors({_TENSOR: tensor}, metadata={"schema": _SCHEMA})


def decode_concepts(data: bytes) -> torch.Tensor:
    """Inverse of :func:`encode_concepts` (a CPU tensor with the stored dtype and shape).

    Raises:
        ValueError: The bytes are not a concept entry of this schema.
    """
    header_length = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    try:
        header = json.loads(data[8 : 8 + header_length])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a safetensors entry ({exc})") from exc
    schema = header.get("__metadata__", {}).get("schema") if isinstance(header, dict) else None
    if schema != _SCHEMA:
        raise ValueError(f"concept entry has schema {schema!r}, expected {_SCHEMA!r}")
    tensors = load_tensors(data)
    if set(tensors) != {_TENSOR}:
        raise ValueError(f"not a CompLLM concept entry: tensors {sorted(tensors)}")
    tensor = tensors[_TENSOR]
    if tensor.dim() != 2:
        raise ValueError(f"concept entry has shape {tuple(tensor.shape)}, expected (k, d)")
    return tensor
