"""Prune the visual tokens of Hugging Face LLaVA-NeXT (AnyRes) before the language model.

LLaVA-NeXT sees an image as a **base image** (the whole image at the tower's resolution) plus
**crops** tiling a higher-resolution canvas. ``pack_image_features`` puts the base tokens first,
then the crops stitched into one grid, unpadded, with an ``image_newline`` token after each row.
:func:`prune_llava_next` (called by :func:`.hooks.prune_vlm_inputs`):

1. runs the model's own ``get_image_features`` (so the packed layout, unpadding and newlines are
   exactly the model's) and recovers which base/crop token sits at each packed slot by packing
   a tensor of coordinates with the model's own ``pack_image_features``;
2. splits the image's budget ``keep`` (a count or fraction of its feature tokens: base plus
   crops, newlines excluded) across the base and the crops with :mod:`.budgets`
   (``budget=``, below);
3. selects inside each part with ``method``: ``"divprune"`` on the projected tokens,
   ``"vtc_cls"`` on the part's own [CLS] attention (each crop is a separate tower pass),
   ``"tome"`` merging projected tokens (kept index = each merge's representative), or
   ``"globalcom2"``: the base image keeps its top tokens by its own [CLS] logits, and a crop
   token scores ``l2norm(crop's own [CLS] logits) + l2norm(global score)``, where the global
   score is the base image's [CLS] logits stretched bilinearly over the *unpadded* canvas (the
   base image shows the whole image, which the crops show letterboxed) and read at the token's
   place (:func:`_base_scores_on_crops`). ``"pool"``
   and ``"visionzip"`` raise :class:`ConfigurationError`: unpadded crops are not square grids,
   and VisionZip's dominant/contextual split is per image, not per budgeted crop;
4. keeps an ``image_newline`` only where its row of the crop grid keeps a token, so the LLM
   still sees where rows break and no two newlines follow each other; newlines come on top of
   ``keep`` and count in ``tokens_after``;
5. shrinks the placeholder run with :func:`._hook_helpers._shrink` and passes the kept features
   as ``mm_encoder_outputs`` (the installed ``LlavaNextModel.forward`` and ``generate`` accept
   it), so the model's own placeholder scatter and count check run. 1-D RoPE: contiguous
   positions over the shorter sequence are correct, as for LLaVA.

Budget rules (split across the base image and the crops first, then select within each crop;
see "Design choices" in ``docs/compressors/visual.md``):

* ``"thumbnail"`` (default) — GlobalCom2, made for exactly this thumbnail-plus-crops layout
  (its paper reports >90% of LLaVA-NeXT's performance with 90% of the tokens removed). With
  ``R = keep / tokens``, the base keeps ``floor(R * N_base)`` and the crops share the rest in
  proportion to :func:`.budgets.thumbnail_budgets` (``tau = 10``) on the base image's
  last-layer, head-mean, pre-softmax [CLS] logits (GlobalCom2's signal), mapped uniformly onto the
  crop grid, padding included, as GlobalCom2's own code splits them (the within-crop
  ``"globalcom2"`` method maps onto the unpadded canvas instead). Needs a tower with [CLS].
  ``method="globalcom2"`` with this budget is the whole of GlobalCom2.
* ``"correlation"`` — the token-correlation rule (:func:`.budgets.correlation_budgets`,
  ``tau = 0.9``, at least 16 tokens a part) on the patch keys of the layer the features come
  from; base and crops are parts alike. Works without [CLS]; its recipe is reconstructed from
  the paper (no reference code is published) and aimed at document images, hence not the
  default.
* ``"uniform"`` — every part keeps the same share (a baseline).

With every token kept the result is bit-identical to the unpruned model (tested).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, cast

from ragpress.compressors.visual.vlm._hook_helpers import (
    VTC_CLS_LAYERS,
    PrunedInputs,
    _capture_qk,
    _encoder_layers,
    _heads,
    _llava_features,
    _pad,
    _shrink,
)
from ragpress.compressors.visual.vlm.budgets import allocate, correlation_budgets, thumbnail_budgets
from ragpress.compressors.visual.vlm.reducers import (
    cls_attention,
    divprune,
    keep_count,
    tome_reduce,
)
from ragpress.exceptions import ConfigurationError, MissingDependencyError, RequestValidationError

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the universal torch alias
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.llava_next.modeling_llava_next import (
        get_anyres_image_grid_shape,
        image_size_to_num_patches,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "transformers", extra="vlm") from exc

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["BUDGETS", "LLAVA_NEXT_MODEL_TYPES", "Budget", "prune_llava_next"]

Budget = Literal["uniform", "correlation", "thumbnail"]
BUDGETS: tuple[str, ...] = ("uniform", "correlation", "thumbnail")
LLAVA_NEXT_MODEL_TYPES = frozenset({"llava_next"})
PART_METHODS = ("divprune", "vtc_cls", "tome", "globalcom2")
CLS_LOGIT_METHODS = ("vtc_cls", "globalcom2")
THUMBNAIL_TAU = 10.0
CORRELATION_TAU = 0.9
CORRELATION_MIN_TOKENS = 16


def prune_llava_next(
    model: torch.nn.Module,
    inputs: Mapping[str, Any],
    keep: float | int,
    method: str,
    budget: Budget | None = None,
) -> PrunedInputs:
    """LLaVA-NeXT pruning; see the module docstring. ``budget=None`` means ``"thumbnail"``."""
    budget = budget or "thumbnail"
    if budget not in BUDGETS:
        raise ConfigurationError(f"budget={budget!r} is not one of {list(BUDGETS)}")
    if method not in PART_METHODS:
        raise ConfigurationError(
            f"method={method!r} is not supported for LLaVA-NeXT, whose crops are unpadded to "
            f"uneven shapes and budgeted one by one; use one of {list(PART_METHODS)}"
        )
    if inputs.get("image_sizes") is None:
        raise RequestValidationError(
            "inputs lack 'image_sizes' (each image's (height, width)), which LLaVA-NeXT needs "
            "to lay out its crops; pass the LLaVA-NeXT processor's output"
        )
    base: Any = model.model
    config: Any = model.config
    layer, strategy, has_cls = _llava_features(config)
    if not has_cls and (method in CLS_LOGIT_METHODS or budget == "thumbnail"):
        raise ConfigurationError(
            f"method={method!r} with budget={budget!r} reads [CLS] attention, but this tower's "
            f"features have no [CLS] (vision_feature_select_strategy={strategy!r}); use "
            "method='divprune' with budget='correlation' or 'uniform'"
        )
    pixel_values = inputs["pixel_values"]
    image_sizes = inputs["image_sizes"]
    images = pixel_values.shape[0] if pixel_values.dim() == 5 else len(image_sizes)
    if len(image_sizes) != images:
        raise RequestValidationError(
            f"inputs hold {images} images in 'pixel_values' but {len(image_sizes)} "
            "'image_sizes'; pass both from the same processor call"
        )
    layers = _encoder_layers(base.vision_tower)
    depth = len(layers)
    feature_layer = (layer % (depth + 1)) - 1  # hidden_states[i] is the output of layer i - 1
    vtc_last = min(round(depth * VTC_CLS_LAYERS[1]), feature_layer)
    vtc_layers = list(range(min(round(depth * VTC_CLS_LAYERS[0]), vtc_last), vtc_last + 1))
    last_logits = budget == "thumbnail" or method == "globalcom2"
    wanted = sorted(
        {*(vtc_layers if method == "vtc_cls" else [])}
        | ({depth - 1} if last_logits else set())
        | ({feature_layer} if budget == "correlation" else set())
    )
    heads = base.vision_tower.config.num_attention_heads
    with _capture_qk(layers, wanted) as captured:
        output = base.get_image_features(
            pixel_values=pixel_values,
            image_sizes=image_sizes,
            vision_feature_layer=layer,
            vision_feature_select_strategy=strategy,
            output_hidden_states=True,
            return_dict=True,
        )
    packed: list[torch.Tensor] = list(output.pooler_output)
    patches = [
        image_size_to_num_patches(
            size, config.image_grid_pinpoints, config.vision_config.image_size
        )
        for size in image_sizes
    ]
    side = config.vision_config.image_size // config.vision_config.patch_size
    layouts = _layouts(base, patches, side * side, image_sizes, strategy)
    first = 1 if has_cls else 0  # token t of a patch is tower position t + first
    # Per tower pass (all patches of all images in order): what the rules and methods read.
    signals: dict[str, torch.Tensor] = {}
    if method == "vtc_cls":
        per_layer = [cls_attention(*_heads(captured[i], heads)).mean(dim=1) for i in vtc_layers]
        signals["vtc"] = torch.stack(per_layer).sum(dim=0)  # [passes, tokens]
    if last_logits:  # last layer, head-mean, pre-softmax [CLS] logits
        q, k = _heads(captured[depth - 1], heads)
        logits = q[:, :, :1].float() @ k.float().transpose(-1, -2) / math.sqrt(k.shape[-1])
        signals["cls_logits"] = logits[:, :, 0, first:].mean(dim=1)  # [passes, tokens]
    if budget == "correlation":
        signals["keys"] = captured[feature_layer][1][:, first:]  # [passes, tokens, dim]
    kept, reduced, budgets = [], [], []
    offset = 0
    for i, (features, layout) in enumerate(zip(packed, layouts, strict=True)):
        grid = cast("Any", get_anyres_image_grid_shape)(  # untyped upstream
            image_sizes[i], config.image_grid_pinpoints, config.vision_config.image_size
        )
        index, values, shares = _prune_image(
            features, layout, (offset, patches[i]), tuple(grid), (side, side), signals,
            keep, method, budget,
        )  # fmt: skip
        kept.append(index)
        reduced.append(values)
        budgets.append(tuple(shares))
        offset += patches[i]
    counts = [int(f.shape[0]) for f in packed]
    new = _shrink(inputs, config.image_token_id, counts, kept, pad_id=_pad(config))
    new.pop("image_sizes", None)
    new["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=reduced)}  # type: ignore[arg-type]
    after = sum(int(r.shape[0]) for r in reduced)
    return PrunedInputs(new, tuple(kept), sum(counts), after, tuple(budgets))


def _layouts(
    base: Any, patches: list[int], tokens: int, image_sizes: Any, strategy: str
) -> list[torch.Tensor]:
    """Per image, ``[packed, 2]``: (patch, token) behind each packed slot; ``-1`` for newlines.

    Packs coordinates instead of features with the model's own ``pack_image_features``, so the
    unpadding and the newline slots are the model's, whatever its version does.
    """
    token = torch.arange(tokens, dtype=torch.float64)
    coordinates = [
        torch.stack(
            [torch.arange(n, dtype=torch.float64)[:, None].expand(n, tokens), token.expand(n, -1)],
            dim=-1,
        )
        for n in patches
    ]
    newline = torch.tensor([-1.0, -1.0], dtype=torch.float64)
    layouts, _ = base.pack_image_features(coordinates, image_sizes, strategy, image_newline=newline)
    return [layout.round().long() for layout in layouts]


def _prune_image(
    features: torch.Tensor,
    layout: torch.Tensor,
    passes: tuple[int, int],
    grid: tuple[int, int],
    side: tuple[int, int],
    signals: dict[str, torch.Tensor],
    keep: float | int,
    method: str,
    budget: str,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Kept packed indices (sorted), their features, and the budget of each part."""
    patch, token = layout.unbind(-1)
    patch, token = patch.to(features.device), token.to(features.device)
    offset, parts = passes  # the image's first tower pass, and its passes (base + crops)
    slots = [(patch == p).nonzero()[:, 0] for p in range(parts)]
    capacity = [int(s.numel()) for s in slots]
    total = keep_count(sum(capacity), keep)
    if budget == "uniform":
        shares = allocate(capacity, total, capacity)
    elif budget == "correlation":
        keys = signals["keys"]
        present = [p for p in range(parts) if capacity[p] > 0]
        found = correlation_budgets(
            [keys[offset + p, token[slots[p]]] for p in present],
            total,
            tau=CORRELATION_TAU,
            min_tokens=CORRELATION_MIN_TOKENS,
        )
        shares = [0] * parts
        for p, share in zip(present, found, strict=True):
            shares[p] = share
    else:
        scores = signals["cls_logits"][offset].view(side)
        ratio = total / sum(capacity)
        shares = [math.floor(ratio * capacity[0])]
        if parts > 1:
            weights = thumbnail_budgets(scores, grid, capacity[1:], ratio=ratio, tau=THUMBNAIL_TAU)
            shares += allocate(weights, total - shares[0], capacity[1:])
    global_scores = None  # GlobalCom2: the base image's view of every crop token
    if method == "globalcom2" and parts > 1:
        base_scores = signals["cls_logits"][offset].view(side)
        global_scores = _base_scores_on_crops(base_scores, patch, token, grid, side)
    values = features.clone()
    chosen = []
    for p, share in enumerate(shares):
        if share == 0:
            continue
        where = slots[p]
        x = features[where][None]
        if method == "divprune":
            local = divprune(x, share)[0]
        elif method in CLS_LOGIT_METHODS:
            if method == "vtc_cls":
                score = signals["vtc"][offset + p, token[where]]
            else:
                score = signals["cls_logits"][offset + p, token[where]]
                if global_scores is not None and p > 0:  # a crop: own view + base's, unit length
                    score = F.normalize(score, dim=0) + F.normalize(global_scores[where], dim=0)
            local = score.topk(share).indices.sort().values
        else:
            merged = tome_reduce(x, share)
            local = merged.indices[0]
            values[where[local]] = merged.features[0].to(values.dtype)
        chosen.append(where[local])
    picked = torch.cat(chosen) if chosen else token.new_zeros(0)
    newline = patch == -1
    if parts > 1:  # crop grid: a newline closes each row; keep it where its row keeps a token
        row = newline.long().cumsum(0) - newline.long()
        grid_slot = patch > 0
        kept_rows = torch.unique(row[picked[grid_slot[picked]]])
        newlines = newline.nonzero()[:, 0]
        picked = torch.cat([picked, newlines[torch.isin(row[newlines], kept_rows)]])
    else:  # base only: the model appends one newline after it
        picked = torch.cat([picked, newline.nonzero()[:, 0]])
    picked = picked.sort().values
    return picked, values[picked], shares


def _base_scores_on_crops(
    base_scores: torch.Tensor,
    patch: torch.Tensor,
    token: torch.Tensor,
    grid: tuple[int, int],
    side: tuple[int, int],
) -> torch.Tensor:
    """GlobalCom2's global score of every packed crop slot (0 elsewhere).

    The base image is the whole image squeezed to one tower input; the crops tile a canvas on
    which the image sits letterboxed, and the model drops the padding rows or columns. So the
    base image's ``[rows, cols]`` scores are stretched bilinearly over the canvas part that is
    left (a rectangle, read off the packed layout) and read at each crop token's place.
    """
    crop = patch > 0
    index = patch[crop] - 1  # crops are row-major over the grid
    y = (index // grid[1]) * side[0] + token[crop] // side[1]
    x = (index % grid[1]) * side[1] + token[crop] % side[1]
    top, left = int(y.min()), int(x.min())
    size = (int(y.max()) - top + 1, int(x.max()) - left + 1)
    stretched = F.interpolate(
        base_scores[None, None].float(), size=size, mode="bilinear", align_corners=False
    )[0, 0]
    out = torch.zeros(patch.shape, dtype=torch.float32, device=base_scores.device)
    out[crop] = stretched[y - top, x - left]
    return out
