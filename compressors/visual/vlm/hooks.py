"""Prune visual tokens of Hugging Face VLMs between the vision tower and the language model.

The pruning runs *before* the LLM (``docs/compressors/visual.md``, "Design choices"), so
FlashAttention/SDPA, ``generate()`` and the KV cache keep working. :func:`prune_vlm_inputs`
takes the processor's output and returns keyword arguments for the model's own ``forward`` or
``generate``:

* the image features are computed once and reduced per image
  (:mod:`~ragpress.compressors.visual.vlm.reducers`);
* each image's placeholder run in ``input_ids`` shrinks to the tokens kept, and the reduced
  features go in as ``mm_encoder_outputs`` (transformers 5), so the model's own placeholder
  scatter and its count check see consistent inputs; rows are re-padded on the side they were
  padded on;
* **LLaVA family** (1-D RoPE): contiguous positions over the shorter sequence are correct.
* **LLaVA-NeXT** (AnyRes: base image + crops + row newlines;
  :mod:`~ragpress.compressors.visual.vlm.llava_next`): the budget is split across the base
  image and the crops (``budget=``), then selected per crop;
  a row's ``image_newline`` stays while the row keeps a token.
* **Qwen2-VL** (M-RoPE): positions are computed on the *unpruned* sequence with the model's own
  ``get_rope_index`` and sliced at the kept tokens, so every kept token keeps its original
  ``(t, h, w)`` position and the text after the image keeps its position; ``generate`` then
  continues from the last prompt position + 1, exactly as without pruning.

With every token kept the result is bit-identical to the unpruned model (tested).

Methods: ``"divprune"`` (default; any tower), ``"pool"`` (2-D average pooling baseline),
``"tome"`` (merging on features), and for towers with a [CLS] token (CLIP in LLaVA)
``"vtc_cls"`` and ``"visionzip"``, which read [CLS] attention from the tower's ``q_proj`` and
``k_proj`` outputs (so SDPA towers work; no eager attention needed). LLaVA-NeXT takes
``"divprune"``, ``"vtc_cls"``, ``"tome"`` and ``"globalcom2"`` (per crop; GlobalCom2's
global-guided scoring, LLaVA-NeXT only).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ragpress.compressors.visual.vlm._hook_helpers import (
    METHODS,
    VTC_CLS_LAYERS,
    Method,
    PrunedInputs,
    _capture_qk,
    _encoder_layers,
    _gather,
    _heads,
    _llava_features,
    _pad,
    _shrink,
)
from ragpress.compressors.visual.vlm.llava_next import (
    LLAVA_NEXT_MODEL_TYPES,
    Budget,
    prune_llava_next,
)
from ragpress.compressors.visual.vlm.reducers import (
    cls_attention,
    divprune,
    keep_count,
    spatial_pool,
    tome_reduce,
    visionzip,
    vtc_cls,
)
from ragpress.exceptions import ConfigurationError, MissingDependencyError, RequestValidationError

try:
    import torch
    from transformers.modeling_outputs import BaseModelOutputWithPooling
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "transformers", extra="vlm") from exc

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "LLAVA_MODEL_TYPES",
    "LLAVA_NEXT_MODEL_TYPES",
    "QWEN2_VL_MODEL_TYPES",
    "Budget",
    "Method",
    "PrunedInputs",
    "generate_pruned",
    "prune_vlm_inputs",
]

LLAVA_MODEL_TYPES = frozenset({"llava"})
QWEN2_VL_MODEL_TYPES = frozenset({"qwen2_vl"})


def prune_vlm_inputs(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    *,
    keep: float | int = 0.25,
    method: Method = "divprune",
    budget: Budget | None = None,
) -> PrunedInputs:
    """Reduce each image's visual tokens to ``keep`` before the language model sees them.

    Args:
        model: A ``LlavaForConditionalGeneration``, ``LlavaNextForConditionalGeneration`` or
            ``Qwen2VLForConditionalGeneration``.
        inputs: The processor's output: ``input_ids``, ``attention_mask``, ``pixel_values``
            (for LLaVA-NeXT ``image_sizes``; for Qwen2-VL ``image_grid_thw`` and
            ``mm_token_type_ids``).
        keep: Tokens kept per image, as a count or a fraction (1.0 keeps all). For LLaVA-NeXT
            it is the image's global budget over its base image and crops (feature tokens;
            the row newlines kept come on top, see
            :mod:`~ragpress.compressors.visual.vlm.llava_next`).
        method: Reducer; see the module docstring.
        budget: LLaVA-NeXT only: how ``keep`` is split across the base image and the crops,
            ``"thumbnail"`` (GlobalCom2; the default), ``"correlation"`` or ``"uniform"``
            (see :mod:`~ragpress.compressors.visual.vlm.llava_next`).

    Returns:
        Inputs for ``model(**inputs)`` / ``model.generate(**inputs)``.

    Raises:
        ConfigurationError: Unsupported model, a [CLS] method on a tower without [CLS], a
            method LLaVA-NeXT's crops do not support, or ``budget`` for a model without crops.
        RequestValidationError: ``inputs`` lack a required field.

    Example:
        >>> pruned = prune_vlm_inputs(model, processor(images=img, text=prompt,
        ...                                           return_tensors="pt"), keep=0.1)
        >>> model.generate(**pruned.inputs, max_new_tokens=32)  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ConfigurationError(f"method={method!r} is not one of {list(METHODS)}")
    model_type = getattr(model.config, "model_type", None)
    for name in ("input_ids", "pixel_values"):
        if inputs.get(name) is None:
            raise RequestValidationError(f"inputs lack {name!r}; pass the processor's output")
    if budget is not None and model_type not in LLAVA_NEXT_MODEL_TYPES:
        raise ConfigurationError(
            f"budget={budget!r} splits a budget across AnyRes crops; model_type={model_type!r} "
            "has none, leave budget unset"
        )
    if method == "globalcom2" and model_type not in LLAVA_NEXT_MODEL_TYPES:
        raise ConfigurationError(
            f"method='globalcom2' selects inside AnyRes crops guided by the base image; "
            f"model_type={model_type!r} has no crops, use method='divprune' or 'vtc_cls'"
        )
    with torch.no_grad():
        if model_type in LLAVA_NEXT_MODEL_TYPES:
            return prune_llava_next(model, inputs, keep, method, budget)
        if model_type in LLAVA_MODEL_TYPES:
            return _prune_llava(model, inputs, keep, method)
        if model_type in QWEN2_VL_MODEL_TYPES:
            return _prune_qwen2_vl(model, inputs, keep, method)
    raise ConfigurationError(
        f"model_type={model_type!r} is not supported; supported: "
        f"{sorted(LLAVA_MODEL_TYPES | LLAVA_NEXT_MODEL_TYPES | QWEN2_VL_MODEL_TYPES)}"
    )


def generate_pruned(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    *,
    keep: float | int = 0.25,
    method: Method = "divprune",
    budget: Budget | None = None,
    **generate_kwargs: Any,
) -> torch.Tensor:
    """Prune with :func:`prune_vlm_inputs`, run ``model.generate``, return only the new tokens."""
    pruned = prune_vlm_inputs(model, inputs, keep=keep, method=method, budget=budget)
    output = model.generate(**pruned.inputs, **generate_kwargs)  # type: ignore[operator]
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    return sequences[:, pruned.prompt_length :]


# --- LLaVA ---------------------------------------------------------------------------------


def _prune_llava(
    model: torch.nn.Module, inputs: Mapping[str, Any], keep: float | int, method: Method
) -> PrunedInputs:
    base: Any = model.model
    config: Any = model.config
    layer, strategy, has_cls = _llava_features(config)
    if method in ("vtc_cls", "visionzip") and not has_cls:
        raise ConfigurationError(
            f"method={method!r} reads [CLS] attention, but this tower's features have no [CLS] "
            f"(vision_feature_select_strategy={strategy!r}); use method='divprune'"
        )
    layers = _encoder_layers(base.vision_tower)
    depth = len(layers)
    feature_layer = (layer % (depth + 1)) - 1  # hidden_states[i] is the output of layer i - 1
    last = min(round(depth * VTC_CLS_LAYERS[1]), feature_layer)
    first = min(round(depth * VTC_CLS_LAYERS[0]), last)
    wanted = {"vtc_cls": list(range(first, last + 1)), "visionzip": [feature_layer]}.get(method, [])
    heads = base.vision_tower.config.num_attention_heads
    with _capture_qk(layers, wanted) as captured:
        output = base.get_image_features(
            pixel_values=inputs["pixel_values"],
            vision_feature_layer=layer,
            vision_feature_select_strategy=strategy,
            output_hidden_states=True,
            return_dict=True,
        )
    projected = torch.stack(list(output.pooler_output))  # [images, tokens, text_dim]
    images, tokens, _ = projected.shape
    k = keep_count(tokens, keep)
    side = math.isqrt(tokens)
    if method == "divprune":
        kept = divprune(projected, k)
        reduced = _gather(projected, kept)
    elif method == "vtc_cls":
        stacked = torch.stack([cls_attention(*_heads(captured[i], heads)) for i in wanted], dim=1)
        kept = vtc_cls(stacked, k)
        reduced = _gather(projected, kept)
    else:
        hidden = output.hidden_states[layer]
        hidden = hidden[:, 1:] if has_cls else hidden
        if method == "visionzip":
            q, keys = _heads(captured[feature_layer], heads)
            contextual = max(1, round(k * 10 / 64)) if k > 1 else 0
            merged = visionzip(
                hidden, cls_attention(q, keys), keys.mean(dim=1)[:, 1:],
                dominant=k - contextual, contextual=contextual,
            )  # fmt: skip
        elif method == "tome":
            merged = tome_reduce(hidden, k)
        elif method == "pool":
            if side * side != tokens:
                raise ConfigurationError(f"method='pool' needs a square grid, not {tokens} tokens")
            merged = spatial_pool(hidden, (side, side), k)
        else:  # prune_vlm_inputs rejects the rest (globalcom2) up front
            raise ConfigurationError(f"method={method!r} is not supported for LLaVA")
        kept = merged.indices
        reduced = base.multi_modal_projector(merged.features)
    per_image = [reduced[i] for i in range(images)]
    new = _shrink(inputs, config.image_token_id, [tokens] * images, list(kept), pad_id=_pad(config))
    new["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=per_image)}  # type: ignore[arg-type]
    return PrunedInputs(new, tuple(kept), tokens * images, sum(int(r.shape[0]) for r in per_image))


# --- Qwen2-VL ------------------------------------------------------------------------------


def _prune_qwen2_vl(
    model: torch.nn.Module, inputs: Mapping[str, Any], keep: float | int, method: Method
) -> PrunedInputs:
    base: Any = model.model
    config: Any = model.config
    if method in ("vtc_cls", "visionzip"):
        raise ConfigurationError(
            f"method={method!r} reads [CLS] attention; Qwen2-VL's vision tower has no [CLS] "
            "token, use method='divprune'"
        )
    for name in ("image_grid_thw", "mm_token_type_ids"):
        if inputs.get(name) is None:
            raise RequestValidationError(
                f"inputs lack {name!r}; pass the Qwen2-VL processor's output"
            )
    input_ids = inputs["input_ids"]
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(input_ids)
    grid = inputs["image_grid_thw"]
    positions, _ = base.get_rope_index(
        input_ids, inputs["mm_token_type_ids"], grid, attention_mask=mask
    )
    output = base.get_image_features(inputs["pixel_values"], grid, return_dict=True)
    merge = config.vision_config.spatial_merge_size
    kept, reduced = [], []
    for features, (t, h, w) in zip(output.pooler_output, grid.tolist(), strict=True):
        n = features.shape[0]
        k = keep_count(n, keep)
        x = features[None]
        if method == "divprune":
            index = divprune(x, k)
            chosen = _gather(x, index)
        else:
            if method == "pool" and t != 1:
                raise ConfigurationError("method='pool' supports single-frame images only")
            merged = (
                tome_reduce(x, k)
                if method == "tome"
                else spatial_pool(x, (h // merge, w // merge), k)
            )
            index, chosen = merged.indices, merged.features
        kept.append(index[0])
        reduced.append(chosen[0])
    counts = [int(f.shape[0]) for f in output.pooler_output]
    extra = {"position_ids": positions, "mm_token_type_ids": inputs["mm_token_type_ids"]}
    new = _shrink({**inputs, "attention_mask": mask, **extra}, config.image_token_id, counts, kept,
                  pad_id=_pad(config))  # fmt: skip
    text_positions = (new["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    text_positions = text_positions.masked_fill(new["attention_mask"] == 0, 0)
    new["position_ids"] = torch.cat([text_positions[None], new["position_ids"]], dim=0)
    new["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=reduced)}  # type: ignore[arg-type]
    return PrunedInputs(new, tuple(kept), sum(counts), sum(int(r.shape[0]) for r in reduced))
