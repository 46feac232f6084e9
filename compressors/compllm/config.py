"""What a CompLLM adapter folder records about itself (pure Python, no torch).

An adapter folder sits next to its base model id and holds:

* ``compllm.json`` — this :class:`CompLLMConfig`: the base model id and revision it was trained
  on, the compression rate, the segment length, the concept token and the LoRA shape;
* ``adapter_config.json`` + ``adapter_model.safetensors`` — the LoRA weights in PEFT's layout;
* ``projection.safetensors`` — the linear layer that maps last hidden states to input embeddings;
* ``ragpress_compressor.json`` — the registry entry, so ``load_compressor`` recognises the folder.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from ragpress.exceptions import ConfigurationError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ADAPTER_WEIGHTS_FILE",
    "CONFIG_FILE_NAME",
    "DEFAULT_RATE",
    "DEFAULT_SEGMENT_TOKENS",
    "PROJECTION_FILE",
    "CompLLMConfig",
]

CONFIG_FILE_NAME = "compllm.json"
PROJECTION_FILE = "projection.safetensors"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
DEFAULT_RATE = 2.0
DEFAULT_SEGMENT_TOKENS = 20
DEFAULT_LORA_RANK = 16
SCHEMA = 1


@dataclass(frozen=True, slots=True)
class CompLLMConfig:
    """The shape of one trained (or freshly initialised) CompLLM compressor."""

    base_model: str
    """Hub id or local folder of the target LLM (the one that later reads the embeddings)."""
    base_revision: str
    """:func:`ragpress.hub.model_revision` of the base model when the adapter was made."""
    hidden_size: int
    """The base model's embedding width; checked on load."""
    concept_token_id: int
    """Token appended ``ceil(len / rate)`` times to a segment; its last hidden states become
    the concept embeddings (the paper appends EOS tokens)."""
    rate: float = DEFAULT_RATE
    """Compression rate C: a segment of n tokens becomes ``ceil(n / C)`` concept embeddings."""
    segment_tokens: int = DEFAULT_SEGMENT_TOKENS
    """Longest segment, in tokens, compressed independently of the others."""
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = 2 * DEFAULT_LORA_RANK
    lora_target_modules: str | tuple[str, ...] = "all-linear"
    """PEFT target modules: ``"all-linear"`` or explicit module names."""
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate >= 1):
            raise ConfigurationError(f"rate={self.rate} must be a number >= 1 (2 halves tokens)")
        if not 1 <= self.segment_tokens <= 4096:
            raise ConfigurationError(
                f"segment_tokens={self.segment_tokens} must be in [1, 4096]; the paper uses ~20"
            )
        if self.lora_rank < 1:
            raise ConfigurationError(f"lora_rank={self.lora_rank} must be >= 1")
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))

    def concepts_for(self, tokens: int) -> int:
        """Concept embeddings a segment of ``tokens`` tokens becomes."""
        return math.ceil(tokens / self.rate) if tokens > 0 else 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        data = asdict(self)
        if isinstance(self.lora_target_modules, tuple):
            data["lora_target_modules"] = list(self.lora_target_modules)
        return data

    def save(self, folder: Path) -> None:
        """Write ``compllm.json`` into ``folder``."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        (folder / CONFIG_FILE_NAME).write_text(text, encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> CompLLMConfig:
        """Read ``compllm.json`` from an adapter folder.

        Raises:
            ConfigurationError: The folder is not a CompLLM adapter, or was written by a newer
                ragpress.
        """
        path = folder / CONFIG_FILE_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigurationError(
                f"{folder} is not a CompLLM adapter folder (no {CONFIG_FILE_NAME}); train one "
                "with `ragpress train-soft` or pass the folder it wrote"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{path} is not valid JSON ({exc})") from exc
        if data.get("schema", SCHEMA) > SCHEMA:
            raise ConfigurationError(
                f"{path} has schema {data['schema']}, newer than this ragpress understands "
                f"({SCHEMA}); upgrade ragpress"
            )
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
