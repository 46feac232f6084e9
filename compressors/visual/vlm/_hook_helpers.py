"""Helpers shared by the VLM pruning hooks (:mod:`.hooks`, :mod:`.llava_next`).

Imports flow one way: this module <- ``hooks_llava_next`` <- ``hooks``.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ragpress.exceptions import ConfigurationError, MissingDependencyError, RequestValidationError

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="vlm") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

Method = Literal["divprune", "pool", "tome", "vtc_cls", "visionzip", "globalcom2"]
METHODS: tuple[str, ...] = ("divprune", "pool", "tome", "vtc_cls", "visionzip", "globalcom2")
VTC_CLS_LAYERS = (16 / 24, 22 / 24)
"""VTC-CLS ensembles layers 16-22 of CLIP ViT-L/14's 24; other depths use the same fractions."""


@dataclass(frozen=True, slots=True)
class PrunedInputs:
    """Model inputs with fewer visual tokens, and what was kept."""

    inputs: dict[str, Any]
    """Keyword arguments for ``model(**inputs)`` or ``model.generate(**inputs)``."""
    keep_indices: tuple[torch.Tensor, ...]
    """Per image, the sorted indices of its kept tokens (representatives for merges)."""
    tokens_before: int
    """Visual tokens of all images before pruning."""
    tokens_after: int
    budgets: tuple[tuple[int, ...], ...] = ()
    """LLaVA-NeXT only: per image, the feature tokens kept in the base image and in each crop
    (row-major), as the ``budget`` rule split them; image_newline tokens not counted."""

    @property
    def prompt_length(self) -> int:
        """Length of the pruned ``input_ids`` (``generate`` returns it plus the new tokens)."""
        return int(self.inputs["input_ids"].shape[1])


def _llava_features(config: Any) -> tuple[int, str, bool]:
    """A LLaVA-family config's vision feature layer, select strategy, and whether [CLS] stays."""
    layer = config.vision_feature_layer
    strategy = config.vision_feature_select_strategy
    if not isinstance(layer, int):
        raise ConfigurationError("pruning needs a single vision_feature_layer, not a list")
    return layer, strategy, strategy == "default"


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _pad(config: Any) -> int:
    for source in (config, getattr(config, "text_config", None)):
        pad = getattr(source, "pad_token_id", None)
        if isinstance(pad, int):
            return pad
    return 0


def _shrink(
    inputs: Mapping[str, Any],
    image_token_id: int,
    counts: Sequence[int],
    kept: Sequence[torch.Tensor],
    *,
    pad_id: int,
) -> dict[str, Any]:
    """Drop the placeholders of unkept tokens and re-pad the rows.

    Every tensor whose last dimension is the sequence (``input_ids``, ``attention_mask``,
    ``mm_token_type_ids``, ``position_ids`` of shape ``(3, B, L)``) is sliced the same way.
    Image placeholders are matched to images in row-major order, as the model's own
    ``masked_scatter`` does.
    """
    input_ids: torch.Tensor = inputs["input_ids"]
    batch, length = input_ids.shape
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    placeholders = (input_ids == image_token_id).nonzero()
    if placeholders.shape[0] != sum(counts):
        raise RequestValidationError(
            f"input_ids hold {placeholders.shape[0]} image placeholders, but the images give "
            f"{sum(counts)} tokens; pass input_ids and pixel_values from the same processor call"
        )
    keep = (input_ids != image_token_id) & (mask != 0)  # padding is rebuilt below
    for run, index in zip(torch.split(placeholders, list(counts)), kept, strict=True):
        rows, cols = run[index.to(run.device)].unbind(-1)
        keep[rows, cols] = True
    left_padded = bool((mask[:, 0] == 0).any())
    new_length = int(keep.sum(dim=1).max())
    sequence_keys = [
        key for key, value in inputs.items()
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[-1] == length
        and value.shape[-2] == batch and key != "pixel_values"
    ]  # fmt: skip
    out: dict[str, Any] = {
        key: value for key, value in inputs.items() if key not in ("pixel_values", "image_grid_thw")
    }
    fills = {"input_ids": pad_id}
    for key in sequence_keys:
        value = inputs[key]
        padded = value.new_full((*value.shape[:-2], batch, new_length), fills.get(key, 0))
        for b in range(batch):
            row = value[..., b, :][..., keep[b]]
            size = row.shape[-1]
            if left_padded:
                padded[..., b, new_length - size :] = row
            else:
                padded[..., b, :size] = row
        out[key] = padded
    out["attention_mask"] = out.get("attention_mask", mask)
    return out


def _encoder_layers(tower: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer blocks of a CLIP/SigLIP-style vision tower (each with ``self_attn``)."""
    for module in tower.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            attn = getattr(module[0], "self_attn", None)
            if attn is not None and hasattr(attn, "q_proj") and hasattr(attn, "k_proj"):
                return module
    raise ConfigurationError(
        f"{type(tower).__name__} has no blocks with self_attn.q_proj/k_proj; [CLS]-attention "
        "methods need a CLIP-style vision tower, use method='divprune'"
    )


@contextmanager
def _capture_qk(
    layers: torch.nn.ModuleList, wanted: Sequence[int]
) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Record the ``q_proj`` and ``k_proj`` outputs of the ``wanted`` layers during a forward."""
    captured: dict[int, dict[str, torch.Tensor]] = {i: {} for i in wanted}
    handles = []
    for i in wanted:
        for name in ("q_proj", "k_proj"):

            def hook(
                _m: torch.nn.Module, _a: Any, out: torch.Tensor, i: int = i, name: str = name
            ) -> None:
                captured[i][name] = out.detach()

            handles.append(getattr(layers[i].self_attn, name).register_forward_hook(hook))
    result: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    try:
        yield result
    finally:
        for handle in handles:
            handle.remove()
    # Filled after the forward ran inside the ``with`` block.
    result.update({i: (c["q_proj"], c["k_proj"]) for i, c in captured.items()})


def _heads(qk: tuple[torch.Tensor, torch.Tensor], heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, D]`` projections -> ``[B, heads, T, D / heads]``."""

    def split(x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        return x.view(batch, tokens, heads, dim // heads).transpose(1, 2)

    q, k = qk
    return split(q), split(k)
