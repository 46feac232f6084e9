"""The CompLLM network: the target LLM itself, a LoRA adapter, and one linear layer.

CompLLM (Berton et al., 2025, arXiv 2509.19228) compresses a context by cutting it into short
segments and mapping each segment, independently, to ``ceil(n / C)`` *concept embeddings* that
live in the LLM's input-embedding space. To compress a segment, ``ceil(n / C)`` copies of a
concept token (EOS in the paper) are appended to it, the LLM *with the LoRA adapter on* reads the
sequence, and the last-layer hidden states at the appended positions go through the linear
layer. The same LLM *with the adapter off* is the frozen target that later reads the concept
embeddings, so one copy of the weights serves both.

At rest the adapter is off, so reading the LLM costs nothing extra; compression switches it on
for its own forward passes under a lock, so compression and generation may share the model from
several threads.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from ragpress.compressors.compllm.config import (
    ADAPTER_WEIGHTS_FILE,
    DEFAULT_LORA_RANK,
    DEFAULT_RATE,
    DEFAULT_SEGMENT_TOKENS,
    PROJECTION_FILE,
    CompLLMConfig,
)
from ragpress.exceptions import ConfigurationError, MissingDependencyError, RagpressWarning
from ragpress.hub import model_not_found, model_revision, unsafe_checkpoint

try:
    import torch
    from peft import (
        LoraConfig,
        PeftModel,
        get_peft_model,
        get_peft_model_state_dict,
        set_peft_model_state_dict,
    )
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file, save_file
    from safetensors.torch import save as save_tensors
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="compllm") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DTYPES",
    "ConceptEncoder",
    "DTypeName",
    "embedding_table",
    "load_base_model",
    "resolve_dtype",
]

DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DEFAULT_BATCH_SIZE = 64


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` is bfloat16 on a GPU that supports it, float32 elsewhere.

    Raises:
        ConfigurationError: Unknown dtype name.
    """
    if dtype == "auto":
        cuda = device.startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ConfigurationError(
            f"dtype={dtype!r} is not one of auto, {', '.join(DTYPES)}"
        ) from None


def load_base_model(
    name_or_path: str, *, device: str, dtype: torch.dtype, revision: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer, frozen and in eval mode, on ``device``.

    Raises:
        ModelNotFoundError: The model cannot be loaded (offline, misspelt, not a causal LM).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        llm = AutoModelForCausalLM.from_pretrained(name_or_path, revision=revision, dtype=dtype)
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint(name_or_path, exc, what="CompLLM base model") from None
    except (OSError, ValueError) as exc:
        raise model_not_found(name_or_path, exc, what="CompLLM base model") from exc
    movable: Any = llm  # transformers types .to() through a decorator mypy cannot follow
    movable.to(device).eval()
    llm.requires_grad_(False)
    return llm, tokenizer


def embedding_table(llm: PreTrainedModel) -> torch.nn.Embedding:
    """The model's input embedding layer."""
    table: Any = llm.get_input_embeddings()
    return cast("torch.nn.Embedding", table)


class ConceptEncoder:
    """Segments in, concept embeddings out; and the frozen LLM for reading them.

    Build one with :meth:`create` (fresh adapter) or :meth:`load` (a saved adapter folder).

    Args:
        model: The base LLM wrapped by PEFT with the LoRA adapter.
        tokenizer: The base LLM's tokenizer.
        config: The adapter's shape and provenance.
        projection: Linear map from last hidden states to input embeddings (float32).
    """

    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        config: CompLLMConfig,
        projection: torch.nn.Linear,
    ) -> None:
        self._peft = model
        self.tokenizer = tokenizer
        self.config = config
        self.projection = projection
        self._lock = threading.RLock()
        self._digest: str | None = None
        self._trainable = False
        self._tuner_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
        self._lora_parameters = [p for n, p in model.named_parameters() if "lora_" in n]
        self._set_adapter(False)  # at rest the model is the plain target LLM

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        base_model: str,
        *,
        rate: float = DEFAULT_RATE,
        segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
        lora_rank: int = DEFAULT_LORA_RANK,
        lora_alpha: int | None = None,
        device: str = "cpu",
        dtype: DTypeName = "auto",
        seed: int = 0,
    ) -> ConceptEncoder:
        """A fresh, untrained compressor on ``base_model`` (LoRA B = 0, projection ~ identity).

        The projection starts as the identity scaled to the RMS of the embedding table, so the
        untrained encoder already emits vectors of the right magnitude.

        Raises:
            ConfigurationError: Bad shape arguments, or a tokenizer with no EOS token.
            ModelNotFoundError: The base model cannot be loaded.
        """
        torch_dtype = resolve_dtype(dtype, device)
        llm, tokenizer = load_base_model(base_model, device=device, dtype=torch_dtype)
        concept = tokenizer.eos_token_id
        if concept is None:
            raise ConfigurationError(
                f"the tokenizer of {base_model!r} has no EOS token to use as the concept token"
            )
        hidden = int(embedding_table(llm).weight.shape[1])
        config = CompLLMConfig(
            base_model=base_model,
            base_revision=model_revision(base_model),
            hidden_size=hidden,
            concept_token_id=int(concept),
            rate=float(rate),
            segment_tokens=segment_tokens,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
        )
        rng_devices = [llm.device] if llm.device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):  # seed LoRA init, leave global RNG be
            torch.manual_seed(seed)
            with _quiet_peft():
                peft_model = get_peft_model(llm, _lora_config(config))
        table = embedding_table(llm).weight.detach().float()
        projection = torch.nn.Linear(hidden, hidden, device=device, dtype=torch.float32)
        with torch.no_grad():
            projection.weight.copy_(torch.eye(hidden) * table.pow(2).mean().sqrt())
            projection.bias.zero_()
        encoder = cls(peft_model, tokenizer, config, projection)
        encoder.set_trainable(False)
        return encoder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        *,
        base_model: str | None = None,
        device: str = "cpu",
        dtype: DTypeName = "auto",
        trainable: bool = False,
    ) -> ConceptEncoder:
        """Load a saved adapter folder onto its base model (or ``base_model`` instead).

        Raises:
            ConfigurationError: Not an adapter folder, or its width does not match the model.
            ModelNotFoundError: The base model cannot be loaded.
        """
        path = Path(folder)
        config = CompLLMConfig.load(path)
        base = base_model or config.base_model
        torch_dtype = resolve_dtype(dtype, device)
        llm, tokenizer = load_base_model(base, device=device, dtype=torch_dtype)
        hidden = int(embedding_table(llm).weight.shape[1])
        if hidden != config.hidden_size:
            raise ConfigurationError(
                f"adapter {path} was trained for hidden size {config.hidden_size}, but {base!r} "
                f"has {hidden}; load it on the model it was trained on ({config.base_model!r})"
            )
        revision = model_revision(base)
        if "unresolved" not in (revision, config.base_revision) and revision != (
            config.base_revision
        ):
            warnings.warn(
                f"adapter {path} was trained on {config.base_model!r} revision "
                f"{config.base_revision}, but {base!r} is revision {revision}; its concept "
                "embeddings may be off",
                RagpressWarning,
                stacklevel=2,
            )
        try:
            with _quiet_peft():
                peft_model = PeftModel.from_pretrained(llm, str(path), is_trainable=trainable)
            weights = load_file(str(path / PROJECTION_FILE))
        except pickle.UnpicklingError as exc:
            raise unsafe_checkpoint(str(path), exc, what="adapter folder") from None
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"adapter folder {path} is incomplete ({exc})") from exc
        projection = torch.nn.Linear(hidden, hidden, device=device, dtype=torch.float32)
        projection.load_state_dict({k: v.float() for k, v in weights.items()})
        encoder = cls(peft_model, tokenizer, config, projection)
        encoder.set_trainable(trainable)
        return encoder

    def save(self, folder: str | Path) -> None:
        """Write the adapter folder: ``compllm.json``, PEFT adapter, projection."""
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.config.save(path)
        lora = self._peft.peft_config["default"]
        lora.base_model_name_or_path = self.config.base_model
        lora.save_pretrained(str(path))
        state = get_peft_model_state_dict(self._peft)
        save_file(
            {k: v.detach().contiguous() for k, v in state.items()},
            str(path / ADAPTER_WEIGHTS_FILE),
            metadata={"format": "pt"},
        )
        save_file(
            {k: v.detach().contiguous() for k, v in self.projection.state_dict().items()},
            str(path / PROJECTION_FILE),
            metadata={"format": "pt"},
        )

    def load_weights(self, folder: str | Path) -> None:
        """Replace the adapter and projection weights with those saved in ``folder``."""
        path = Path(folder)
        device = str(self.device)
        set_peft_model_state_dict(self._peft, load_file(str(path / ADAPTER_WEIGHTS_FILE), device))
        self.projection.load_state_dict(load_file(str(path / PROJECTION_FILE), device))
        self._digest = None

    # -- properties ----------------------------------------------------------------------------

    @property
    def llm(self) -> PreTrainedModel:
        """The causal LM (LoRA layers inside; use :meth:`frozen` to read it without them)."""
        return cast("PreTrainedModel", self._peft.get_base_model())

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return self.projection.weight.device

    @property
    def dtype(self) -> torch.dtype:
        """The LLM's floating-point type; concept embeddings come out in it."""
        return embedding_table(self.llm).weight.dtype

    @property
    def hidden_size(self) -> int:
        """Width of the input embeddings."""
        return self.config.hidden_size

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The LoRA matrices and the projection: all that training changes."""
        return [*self._lora_parameters, *self.projection.parameters()]

    def set_trainable(self, enabled: bool) -> None:
        """Turn gradients of the LoRA and projection on or off (the LLM stays frozen)."""
        self._trainable = enabled
        for parameter in self.trainable_parameters():
            parameter.requires_grad_(enabled)
        self._digest = None

    def _set_adapter(self, enabled: bool) -> None:
        for layer in self._tuner_layers:
            layer.enable_adapters(enabled)
        for parameter in self._lora_parameters:  # PEFT's toggle also flips requires_grad
            parameter.requires_grad_(self._trainable)

    @contextmanager
    def _adapted(self) -> Iterator[None]:
        with self._lock:
            self._set_adapter(True)
            try:
                yield
            finally:
                self._set_adapter(False)

    def forget_digest(self) -> None:
        """Recompute :meth:`weights_digest` on next use (the weights have changed)."""
        self._digest = None

    def weights_digest(self) -> str:
        """Hash of the adapter and projection weights (part of the compressor fingerprint)."""
        if self._digest is None:
            state = {f"lora.{k}": v for k, v in get_peft_model_state_dict(self._peft).items()}
            state.update({f"projection.{k}": v for k, v in self.projection.state_dict().items()})
            blob = save_tensors({k: v.detach().cpu().contiguous() for k, v in state.items()})
            self._digest = hashlib.sha256(blob).hexdigest()[:16]
        return self._digest

    # -- compute -------------------------------------------------------------------------------

    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """Input embeddings of token ids, ``(len(ids), d)`` in the LLM's dtype."""
        table = embedding_table(self.llm)
        with torch.no_grad():
            ids_tensor = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
            embedded: torch.Tensor = table(ids_tensor)[0]
        return embedded

    def encode(
        self, segments: Sequence[Sequence[int]], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[torch.Tensor]:
        """Concept embeddings of each segment, ``(ceil(n / rate), d)`` each, no gradients.

        Segments are compressed independently (each starts at position 0 and sees only
        itself) and batched by length, so the cost is linear in the total number of tokens.
        On a bfloat16/float16 model the LoRA runs in that dtype too (autocast), instead of
        PEFT's float32 adapter path, which converts every adapted layer's input and output
        (``bench/compllm.py`` times both routes; figures in ``docs/compressors/compllm.md``).
        The stored adapter weights stay float32.
        """
        with torch.inference_mode():
            return self._encode(segments, batch_size, adapter_in_model_dtype=True)

    def encode_with_grad(
        self, segments: Sequence[Sequence[int]], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> list[torch.Tensor]:
        """:meth:`encode` with autograd on, for training."""
        return self._encode(segments, batch_size, adapter_in_model_dtype=False)

    def _encode(
        self, segments: Sequence[Sequence[int]], batch_size: int, *, adapter_in_model_dtype: bool
    ) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [self._empty()] * len(segments)
        order = sorted(
            (i for i, s in enumerate(segments) if len(s)), key=lambda i: -len(segments[i])
        )
        decoder: Any = self.llm.get_decoder()  # type: ignore[no-untyped-call]
        concept = self.config.concept_token_id
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            lengths = [len(segments[i]) for i in batch]
            counts = [self.config.concepts_for(n) for n in lengths]
            width = max(n + c for n, c in zip(lengths, counts, strict=True))
            # Right padding with the concept token: causal attention never lets the positions
            # we read see the padding, so no attention mask is needed.
            ids = torch.full((len(batch), width), concept, dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : lengths[row]] = torch.tensor(segments[i], dtype=torch.long)
            rows = torch.repeat_interleave(torch.arange(len(batch)), torch.tensor(counts))
            cols = torch.cat([torch.arange(n, n + c) for n, c in zip(lengths, counts, strict=True)])
            with self._adapted(), self._autocast(adapter_in_model_dtype):
                hidden = decoder(input_ids=ids.to(self.device), use_cache=False).last_hidden_state
            picked = hidden[rows.to(self.device), cols.to(self.device)]
            concepts = self.projection(picked.float()).to(self.dtype)
            for i, chunk in zip(batch, concepts.split(counts), strict=True):
                out[i] = chunk
        return out

    def _autocast(self, enabled: bool) -> AbstractContextManager[object]:
        """Autocast to the model's dtype, which puts PEFT's float32 LoRA path in it too."""
        if not enabled or self.dtype == torch.float32 or self.device.type not in ("cpu", "cuda"):
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _empty(self) -> torch.Tensor:
        return torch.zeros((0, self.hidden_size), dtype=self.dtype, device=self.device)

    @contextmanager
    def frozen(self) -> Iterator[PreTrainedModel]:
        """The unmodified target LLM (adapter off), held exclusively for the block."""
        with self._lock:
            yield self.llm


@contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide a transformers deprecation that PEFT triggers; nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _lora_config(config: CompLLMConfig) -> LoraConfig:
    targets = config.lora_target_modules
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        bias="none",
        target_modules=list(targets) if isinstance(targets, tuple) else targets,
        base_model_name_or_path=config.base_model,
    )
