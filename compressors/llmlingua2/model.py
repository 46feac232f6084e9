"""Load a token-classification checkpoint and run it fast: length-sorted, dynamically padded.

Shared by the LLMLingua-2 compressor (both modes) and the distillation trainer. Any Hugging Face
encoder with a 2-label token-classification head works; label 1 is "keep" (the LLMLingua-2
convention: ``softmax(logits)[..., 1]`` is the probability of preserving a token).
"""

from __future__ import annotations

import contextlib
import pickle
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, MissingDependencyError
from ragpress.hub import model_not_found, unsafe_checkpoint

try:
    import numpy as np
    import torch
    import transformers
    from tokenizers import Tokenizer
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "transformers", extra="llmlingua2") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import numpy.typing as npt

__all__ = [
    "DType",
    "RequestBatcher",
    "TokenClassifier",
    "load_token_classifier",
    "plain_backend",
    "resolve_dtype",
    "seeded",
]

DType = Literal["auto", "float32", "float16", "bfloat16"]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: DType, device: str) -> torch.dtype:
    """``auto`` is float32 on CPU and float16 on CUDA (the checkpoints are stored in F32)."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ConfigurationError(f"dtype={dtype!r} must be one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


@dataclass
class TokenClassifier:
    """A tokenizer and a token-classification model, ready for batched inference.

    Attributes:
        tokenizer: The transformers tokenizer (for compat mode's string-level calls).
        model: The ``...ForTokenClassification`` model, in eval mode.
        backend: A private copy of the fast tokenizer, without truncation or padding.
        prefix_ids: Special tokens the tokenizer puts before a sequence (e.g. ``[CLS]``).
        suffix_ids: Special tokens it puts after (e.g. ``[SEP]``, ``</s>``).
        pad_id: The id used for padding (masked out).
        max_length: Longest model input, special tokens included.
        device: Torch device string.
    """

    tokenizer: Any
    model: Any
    backend: Tokenizer
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    pad_id: int
    max_length: int
    device: str
    onnx_session: Any = None
    """An ONNX Runtime session that replaces ``model`` for inference (see :meth:`use_onnx`)."""

    @property
    def content_length(self) -> int:
        """Tokens of text per model input (``max_length`` minus the special tokens)."""
        return self.max_length - len(self.prefix_ids) - len(self.suffix_ids)

    def keep_probabilities(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        add_special_tokens: bool = True,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 64,
        pad_id: int | None = None,
    ) -> list[npt.NDArray[np.float32]]:
        """P(keep) for every token of every sequence (special tokens excluded from the output).

        Sequences are sorted by length and batched under a token budget with dynamic padding,
        so short inputs never pay for 512 positions.

        Args:
            sequences: Token ids, each at most :attr:`content_length` long (or
                :attr:`max_length` without special tokens).
            add_special_tokens: Wrap each sequence in the tokenizer's own special tokens.
            max_batch_tokens: Padded tokens per forward pass.
            max_batch_size: Sequences per forward pass.
            pad_id: Padding id (masked out); the tokenizer's pad token by default.
        """
        prefix = list(self.prefix_ids) if add_special_tokens else []
        suffix = list(self.suffix_ids) if add_special_tokens else []
        rows = [[*prefix, *seq, *suffix] for seq in sequences]
        out: list[npt.NDArray[np.float32]] = [np.zeros(0, dtype=np.float32)] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]), reverse=True)
        for batch in _batches(order, [len(r) for r in rows], max_batch_tokens, max_batch_size):
            width = len(rows[batch[0]])
            ids = np.full(
                (len(batch), width), self.pad_id if pad_id is None else pad_id, dtype=np.int64
            )
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, index in enumerate(batch):
                seq = rows[index]
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            probs = self.forward(ids, mask)
            for row, index in enumerate(batch):
                n = len(rows[index])
                out[index] = probs[row, len(prefix) : n - len(suffix)]
        return out

    def forward(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.float32]:
        """P(keep) of each position of a padded batch, as float32 on the CPU."""
        if self.onnx_session is not None:
            raw = self.onnx_session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            scores = np.asarray(raw, dtype=np.float32)
            shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
            keep: npt.NDArray[np.float32] = shifted[..., 1] / shifted.sum(axis=-1)
            return keep
        with torch.inference_mode():
            logits = self.model(
                input_ids=torch.from_numpy(ids).to(self.device),
                attention_mask=torch.from_numpy(mask).to(self.device),
            ).logits
            probs = torch.softmax(logits.float(), dim=-1)[..., 1]
        return probs.cpu().numpy().astype(np.float32, copy=False)

    def use_onnx(
        self, path: str | Path, *, int8: bool = False, check_existing: bool = True
    ) -> None:
        """Run the model with ONNX Runtime from ``path``, exporting it there first if absent.

        The export traces the loaded model (after any embedding resize), so outputs match the
        torch model to float rounding. With ``int8``, the export is quantized (see
        :mod:`ragpress.compressors.llmlingua2.quantize`) and only the int8 model is kept at
        ``path``. A file already there is used if its precision is the one asked for; with
        ``check_existing=False`` (paths whose name already says the precision) it is not read
        twice to find out.

        Raises:
            MissingDependencyError: onnxruntime or onnx is not installed (extra ``onnx``).
            ConfigurationError: The file at ``path`` holds the other precision.
        """
        try:
            import onnxruntime
        except ImportError as exc:
            raise MissingDependencyError("onnxruntime", extra="onnx") from exc
        target = Path(path)
        if target.is_file():
            if check_existing:
                _check_onnx_precision(target, int8=int8)
        elif int8:
            from ragpress.compressors.llmlingua2.quantize import quantize_int8

            with tempfile.TemporaryDirectory(prefix="ragpress-onnx-") as folder:
                exported = Path(folder) / "model.onnx"
                _export_onnx(self.model, exported)
                quantize_int8(exported, target)
        else:
            _export_onnx(self.model, target)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning, so between forward passes they leave
        # the cores to the rest of the process (the proxy's event loop, torch, tokenization).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if self.device.startswith("cuda")
            else ["CPUExecutionProvider"]
        )
        self.onnx_session = onnxruntime.InferenceSession(str(target), options, providers=providers)


def _check_onnx_precision(path: Path, *, int8: bool) -> None:
    """Refuse an existing ONNX file whose precision is not the one asked for.

    Its probabilities would be cached under the other precision's keys.
    """
    try:
        import onnx
    except ImportError as exc:
        raise MissingDependencyError("onnx", extra="onnx") from exc

    ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
    quantized = bool(ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"})
    if quantized != int8:
        found, wanted = ("an int8", "float32") if quantized else ("a float32", "int8")
        raise ConfigurationError(
            f"onnx_path={str(path)!r} holds {found} model but this compressor runs {wanted} "
            f"(quantize={'int8' if int8 else None!r}); point onnx_path at another file (it is "
            "exported there on first use) or delete this one"
        )


def _export_onnx(model: Any, target: Path) -> None:
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError as exc:
        raise MissingDependencyError("onnx", extra="onnx") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    sample = torch.ones((2, 8), dtype=torch.long, device=next(model.parameters()).device)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter is deprecated upstream but handles these encoders fine.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (sample, sample),
            str(partial),
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "logits": axes},
            dynamo=False,
        )
    partial.replace(target)


@dataclass
class _Job:
    sequences: list[list[int]]
    result: list[npt.NDArray[np.float32]] | None = None
    error: BaseException | None = None
    done: bool = False


class RequestBatcher:
    """Runs concurrent requests' sequences through the model together.

    Callers that arrive while a forward pass is running queue up; the next caller to get the
    model takes every queued request and runs them as one length-sorted batch set, so
    concurrent requests (the proxy, ``ragpress batch --workers``) share padding-free batches
    instead of taking turns with small ones.

    Args:
        classifier: The model to run.
        max_batch_tokens: Padded tokens per forward pass.
    """

    def __init__(self, classifier: TokenClassifier, *, max_batch_tokens: int) -> None:
        self.classifier = classifier
        self.max_batch_tokens = max_batch_tokens
        self._queue_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._queue: list[_Job] = []

    def keep_probabilities(self, sequences: list[list[int]]) -> list[npt.NDArray[np.float32]]:
        """P(keep) per token of each sequence (special tokens added and removed)."""
        job = _Job(sequences)
        with self._queue_lock:
            self._queue.append(job)
        with self._model_lock:
            if not job.done:
                with self._queue_lock:
                    jobs, self._queue = self._queue, []
                self._run(jobs)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run(self, jobs: list[_Job]) -> None:
        merged = [s for j in jobs for s in j.sequences]
        try:
            probs = self.classifier.keep_probabilities(
                merged, max_batch_tokens=self.max_batch_tokens
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised in every waiting caller
            for j in jobs:
                j.error, j.done = exc, True
            return
        offset = 0
        for j in jobs:
            j.result = probs[offset : offset + len(j.sequences)]
            j.done = True
            offset += len(j.sequences)


def _batches(
    order: list[int], lengths: list[int], max_tokens: int, max_size: int
) -> Iterator[list[int]]:
    batch: list[int] = []
    for index in order:
        width = lengths[batch[0]] if batch else lengths[index]
        full = len(batch) >= max_size or (len(batch) + 1) * width > max_tokens
        # A row much shorter than the batch's longest would be mostly padding: start anew.
        wasteful = 4 * lengths[index] < 3 * width
        if batch and (full or wasteful):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def load_token_classifier(
    model: str,
    *,
    revision: str | None = None,
    device: str = "cpu",
    dtype: DType = "auto",
    max_length: int = 512,
    trust_remote_code: bool = False,
) -> TokenClassifier:
    """Load a token-classification checkpoint by hub id or local folder.

    Raises:
        ModelNotFoundError: The checkpoint cannot be had (offline, misspelt, not downloaded);
            the message says how to point at a local copy.
        ConfigurationError: It is not a 2-label token classifier with a fast tokenizer.
    """
    torch_dtype = resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model, **kwargs)
        network = transformers.AutoModelForTokenClassification.from_pretrained(
            model, dtype=torch_dtype, **kwargs
        )
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint(model, exc, what="token-classification model") from None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError) and "Unrecognized" not in str(exc):
            raise ConfigurationError(f"model {model!r} cannot be loaded: {exc}") from exc
        raise model_not_found(model, exc, what="token-classification model") from exc
    if network.config.num_labels != 2:
        raise ConfigurationError(
            f"model {model!r} has {network.config.num_labels} labels; LLMLingua-2 needs a "
            "2-label token classifier (0 = drop, 1 = keep), e.g. "
            "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
        )
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise ConfigurationError(
            f"model {model!r} has no fast (tokenizers-backed) tokenizer; word boundaries come "
            "from its offsets. Save a tokenizer.json with the checkpoint"
        )
    try:
        network.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise ConfigurationError(f"device={device!r} is not usable: {exc}") from exc
    network.eval()
    limit = min(max_length, _position_limit(network.config))
    prefix_ids, suffix_ids = _special_affixes(backend)
    return TokenClassifier(
        tokenizer=tokenizer,
        model=network,
        backend=plain_backend(backend),
        prefix_ids=prefix_ids,
        suffix_ids=suffix_ids,
        pad_id=_pad_id(tokenizer),
        max_length=limit,
        device=device,
    )


def plain_backend(backend: Tokenizer) -> Tokenizer:
    """A copy of a fast tokenizer with truncation and padding switched off."""
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _special_affixes(backend: Tokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    plain = plain_backend(backend)
    bare = plain.encode("a", add_special_tokens=False).ids
    full = plain.encode("a", add_special_tokens=True).ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return tuple(full[:start]), tuple(full[start + len(bare) :])
    return (), ()


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    if isinstance(pad, int):
        return pad
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk if isinstance(unk, int) else 0


def _position_limit(config: Any) -> int:
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    # RoBERTa-family models reserve padding_idx + 1 positions.
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return limit


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch inside a forked RNG state, leaving the caller's global state untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
