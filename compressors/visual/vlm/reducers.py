"""Training-free visual-token reducers: plain torch functions on ``[batch, tokens, dim]`` features.

Re-implemented from the papers' descriptions (no code copied; DivPrune and ToMe are CC BY-NC):

* :func:`divprune` — DivPrune (Alvar et al., CVPR 2025): max-min diversity over the projected
  tokens, ``1 - cosine`` distance, greedy with a running minimum. Default keep 9.8%.
* :func:`vtc_cls` — VTC-CLS (arXiv 2412.05819): sum over ViT layers (16-22 of 24 in the paper) of
  the head-mean [CLS]->patch attention; top-k.
* :func:`visionzip` — VisionZip (Yang et al., CVPR 2025): *dominant* tokens by [CLS] attention at
  ViT layer -2, plus *contextual* tokens: uniformly strided targets among the rest, each target
  plus the mean of the tokens whose keys are most similar to it. Defaults 54 + 10.
* :func:`tome_merge` / :func:`tome_reduce` — ToMe (Bolya et al., ICLR 2023): bipartite soft
  matching of alternate tokens on head-mean keys, size-weighted merging; the merged sizes feed
  proportional attention (:func:`proportional_attention_bias`).
* :func:`spatial_pool` — plain 2-D average pooling to the same token count, the baseline every
  method should beat (published comparisons disagree on whether most do; see "Design choices"
  in ``docs/compressors/visual.md``).

Selectors return **sorted original indices** (``[batch, k]``), so the caller can keep positions;
merging methods return :class:`MergedTokens` with a representative original index per output
token, also sorted. Signals: :func:`cls_attention` and :func:`attention_received` compute
attention from captured queries and keys, so they work with SDPA/FlashAttention towers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ragpress.exceptions import MissingDependencyError

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the universal torch alias
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="vlm") from exc

__all__ = [
    "DIVPRUNE_KEEP_RATIO",
    "VISIONZIP_DEFAULTS",
    "MergedTokens",
    "attention_received",
    "cls_attention",
    "divprune",
    "keep_count",
    "proportional_attention_bias",
    "spatial_pool",
    "tome_merge",
    "tome_reduce",
    "visionzip",
    "vtc_cls",
]

DIVPRUNE_KEEP_RATIO = 0.098
"""DivPrune's default share of tokens kept (9.8%: 56 of LLaVA-1.5's 576)."""
VISIONZIP_DEFAULTS = {64: (54, 10), 128: (108, 20), 192: (162, 30)}
"""VisionZip's (dominant, contextual) split for each total it reports."""


def keep_count(tokens: int, keep: float | int) -> int:
    """Tokens to keep: ``keep`` itself when it is an int, else ``round(keep * tokens)``.

    Always between 1 and ``tokens``.

    Raises:
        ValueError: ``keep`` is not a positive int or a fraction in (0, 1].
    """
    if isinstance(keep, bool) or not isinstance(keep, int | float):
        raise TypeError(f"keep must be an int or a float, not {type(keep).__name__}")
    if isinstance(keep, int):
        if keep < 1:
            raise ValueError(f"keep={keep} must be >= 1 token")
        return min(keep, tokens)
    if not 0 < keep <= 1:
        raise ValueError(f"keep={keep} must be a fraction in (0, 1] or a whole number of tokens")
    return max(1, min(tokens, round(keep * tokens)))


def _check_features(features: torch.Tensor, name: str = "features") -> None:
    if features.ndim != 3:
        raise ValueError(f"{name} must be [batch, tokens, dim], got shape {tuple(features.shape)}")


def divprune(features: torch.Tensor, keep: float | int = DIVPRUNE_KEEP_RATIO) -> torch.Tensor:
    """DivPrune: the most mutually diverse ``keep`` tokens (max-min diversity, greedy).

    With ``D = 1 - cos`` between tokens, the first pick is the token whose nearest neighbour is
    farthest away; each next pick maximises its distance to the nearest token already picked.

    Args:
        features: ``[batch, tokens, dim]`` tokens (after the projector, as in the paper).
        keep: Tokens to keep, as a count or a fraction.

    Returns:
        ``[batch, k]`` sorted indices of the kept tokens.
    """
    _check_features(features)
    batch, tokens, _ = features.shape
    k = keep_count(tokens, keep)
    x = F.normalize(features.float(), dim=-1)
    distance = 1.0 - x @ x.transpose(1, 2)
    eye = torch.eye(tokens, dtype=torch.bool, device=features.device)
    nearest = distance.masked_fill(eye, math.inf).amin(dim=-1)
    rows = torch.arange(batch, device=features.device)
    picked = torch.empty(batch, k, dtype=torch.long, device=features.device)
    picked[:, 0] = nearest.argmax(dim=-1)
    running = distance[rows, picked[:, 0]].clone()
    running[rows, picked[:, 0]] = -math.inf
    for step in range(1, k):
        choice = running.argmax(dim=-1)
        picked[:, step] = choice
        running = torch.minimum(running, distance[rows, choice])
        running[rows, choice] = -math.inf  # picked tokens stay at -inf through the minimum
    return picked.sort(dim=-1).values


def vtc_cls(cls_attentions: torch.Tensor, keep: float | int) -> torch.Tensor:
    """VTC-CLS: top tokens by [CLS] attention summed over layers, averaged over heads.

    Args:
        cls_attentions: ``[batch, layers, heads, tokens]`` attention of the [CLS] query to each
            patch token (the [CLS] column removed), one row per ViT layer of the ensemble.
        keep: Tokens to keep, as a count or a fraction.

    Returns:
        ``[batch, k]`` sorted indices.
    """
    if cls_attentions.ndim != 4:
        raise ValueError(
            "cls_attentions must be [batch, layers, heads, tokens], "
            f"got shape {tuple(cls_attentions.shape)}"
        )
    score = cls_attentions.float().mean(dim=2).sum(dim=1)
    k = keep_count(score.shape[-1], keep)
    return score.topk(k, dim=-1).indices.sort(dim=-1).values


@dataclass(frozen=True, slots=True)
class MergedTokens:
    """Tokens after merging, in the order of their representative original index."""

    features: torch.Tensor
    """``[batch, k, dim]`` merged tokens."""
    indices: torch.Tensor
    """``[batch, k]`` sorted original index that each output token stands for."""
    sizes: torch.Tensor
    """``[batch, k]`` how many original tokens each output token holds."""


def visionzip(
    features: torch.Tensor,
    cls_attention: torch.Tensor,
    keys: torch.Tensor,
    *,
    dominant: int = 54,
    contextual: int = 10,
) -> MergedTokens:
    """VisionZip: dominant tokens by [CLS] attention plus merged contextual tokens.

    Args:
        features: ``[batch, tokens, dim]`` patch tokens (ViT layer -2 in the paper, before the
            projector); no [CLS] token.
        cls_attention: ``[batch, heads, tokens]`` [CLS]->patch attention at the same layer.
        keys: ``[batch, tokens, key_dim]`` head-mean keys at the same layer.
        dominant: Tokens kept by attention.
        contextual: Merged tokens made from the rest.

    Returns:
        ``dominant + contextual`` tokens (fewer if there are not enough), ordered by original
        index; a contextual token's index is its target's.
    """
    _check_features(features)
    batch, tokens, dim = features.shape
    if cls_attention.shape != (batch, cls_attention.shape[1], tokens):
        raise ValueError(
            f"cls_attention must be [batch, heads, {tokens}], got {tuple(cls_attention.shape)}"
        )
    dominant = min(dominant, tokens)
    score = cls_attention.float().sum(dim=1)
    top = score.topk(dominant, dim=-1).indices.sort(dim=-1).values
    keep_mask = torch.zeros(batch, tokens, dtype=torch.bool, device=features.device)
    keep_mask.scatter_(1, top, True)
    rest = (~keep_mask).nonzero()[:, 1].view(batch, tokens - dominant)
    count = min(contextual, rest.shape[1])
    if count == 0:
        ones = torch.ones(batch, dominant, device=features.device)
        return MergedTokens(features.gather(1, top[..., None].expand(-1, -1, dim)), top, ones)
    stride = rest.shape[1] // count
    target_pos = torch.arange(0, stride * count, stride, device=features.device)
    is_target = torch.zeros(rest.shape[1], dtype=torch.bool, device=features.device)
    is_target[target_pos] = True
    targets = rest[:, is_target]
    others = rest[:, ~is_target]
    metric = F.normalize(keys.float(), dim=-1)

    def take(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return source.gather(1, index[..., None].expand(-1, -1, source.shape[-1]))

    similarity = take(metric, others) @ take(metric, targets).transpose(1, 2)
    assign = F.one_hot(similarity.argmax(dim=-1), count).to(features.dtype)  # [B, others, c]
    counts = assign.sum(dim=1)  # [B, c]
    merged = assign.transpose(1, 2) @ take(features, others)
    contextual_tokens = take(features, targets) + merged / counts.clamp(min=1)[..., None]
    all_features = torch.cat([take(features, top), contextual_tokens], dim=1)
    all_indices = torch.cat([top, targets], dim=1)
    sizes = torch.cat([torch.ones_like(top, dtype=features.dtype), counts + 1], dim=1)
    order = all_indices.argsort(dim=-1)
    return MergedTokens(
        take(all_features, order), all_indices.gather(1, order), sizes.gather(1, order)
    )


def tome_merge(
    features: torch.Tensor,
    metric: torch.Tensor,
    r: int,
    *,
    sizes: torch.Tensor | None = None,
    protect_first: bool = False,
    indices: torch.Tensor | None = None,
) -> MergedTokens:
    """One ToMe step: merge ``r`` tokens by bipartite soft matching.

    Tokens alternate into sets A (even positions) and B (odd positions). Each A token finds its
    most similar B token (cosine of ``metric``); the ``r`` best-matched A tokens are merged into
    their B partners by size-weighted mean.

    Args:
        features: ``[batch, tokens, dim]``.
        metric: ``[batch, tokens, metric_dim]`` similarity features (head-mean keys in a ViT).
        r: Tokens to remove (at most the number of A tokens that may merge).
        sizes: ``[batch, tokens]`` tokens already merged into each (ones when ``None``).
        protect_first: Never merge token 0 (the [CLS] token).
        indices: ``[batch, tokens]`` representative original indices (``arange`` when ``None``).

    Returns:
        ``tokens - r`` tokens in order of representative index.
    """
    _check_features(features)
    batch, tokens, dim = features.shape
    if sizes is None:
        sizes = torch.ones(batch, tokens, dtype=features.dtype, device=features.device)
    if indices is None:
        indices = torch.arange(tokens, device=features.device).expand(batch, tokens)
    mergeable = (tokens + 1) // 2 - int(protect_first)
    r = max(0, min(r, mergeable, tokens // 2))
    if r == 0:
        return MergedTokens(features, indices, sizes)
    m = F.normalize(metric.float(), dim=-1)
    scores = m[:, 0::2] @ m[:, 1::2].transpose(1, 2)
    if protect_first:
        scores[:, 0, :] = -math.inf
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    merged_a, kept_a = order[:, :r], order[:, r:]

    def rows(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if source.ndim == 2:
            return source.gather(1, index)
        return source.gather(1, index[..., None].expand(-1, -1, source.shape[-1]))

    weighted = features * sizes[..., None]
    a_feat, b_feat = weighted[:, 0::2], weighted[:, 1::2].clone()
    a_size, b_size = sizes[:, 0::2], sizes[:, 1::2].clone()
    dst = partner.gather(1, merged_a)
    b_feat.scatter_add_(1, dst[..., None].expand(-1, -1, dim), rows(a_feat, merged_a))
    b_size.scatter_add_(1, dst, rows(a_size, merged_a))
    out_feat = torch.cat([rows(a_feat, kept_a), b_feat], dim=1)
    out_size = torch.cat([rows(a_size, kept_a), b_size], dim=1)
    out_index = torch.cat([rows(indices[:, 0::2], kept_a), indices[:, 1::2]], dim=1)
    ordering = out_index.argsort(dim=-1)
    out_size = out_size.gather(1, ordering)
    out_feat = rows(out_feat, ordering) / out_size[..., None]
    return MergedTokens(out_feat.to(features.dtype), out_index.gather(1, ordering), out_size)


def tome_reduce(
    features: torch.Tensor, keep: float | int, *, metric: torch.Tensor | None = None
) -> MergedTokens:
    """Apply :func:`tome_merge` until ``keep`` tokens remain (ToMe as a final selector).

    Args:
        features: ``[batch, tokens, dim]``.
        keep: Tokens to keep, as a count or a fraction.
        metric: Similarity features; ``features`` themselves when ``None``. Merged metrics are
            size-weighted means too.
    """
    _check_features(features)
    target = keep_count(features.shape[1], keep)
    both = features if metric is None else torch.cat([features, metric.to(features.dtype)], -1)
    dim = features.shape[-1]
    state = MergedTokens(both, *_identity(features))
    while state.features.shape[1] > target:
        current = state.features
        state = tome_merge(
            current,
            current[..., dim:] if metric is not None else current,
            current.shape[1] - target,
            sizes=state.sizes,
            indices=state.indices,
        )
    return MergedTokens(state.features[..., :dim], state.indices, state.sizes)


def _identity(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch, tokens, _ = features.shape
    index = torch.arange(tokens, device=features.device).expand(batch, tokens)
    return index, torch.ones(batch, tokens, dtype=features.dtype, device=features.device)


def proportional_attention_bias(sizes: torch.Tensor) -> torch.Tensor:
    """ToMe's proportional attention: ``log(size)`` added to the attention logits of each key.

    Returns:
        ``[batch, 1, 1, tokens]``, broadcastable over heads and queries.
    """
    return sizes.float().log()[:, None, None, :]


def spatial_pool(features: torch.Tensor, grid: tuple[int, int], keep: float | int) -> MergedTokens:
    """Average-pool a ``grid`` of tokens to about ``keep`` tokens (the downsampling baseline).

    Args:
        features: ``[batch, rows * cols, dim]`` tokens in row-major grid order.
        grid: ``(rows, cols)``.
        keep: Target count or fraction; the pooled grid keeps the aspect ratio.
    """
    _check_features(features)
    rows, cols = grid
    batch, tokens, dim = features.shape
    if rows * cols != tokens:
        raise ValueError(f"grid {rows}x{cols} does not hold {tokens} tokens")
    target = keep_count(tokens, keep)
    scale = math.sqrt(target / tokens)
    out_rows, out_cols = max(1, round(rows * scale)), max(1, round(cols * scale))
    image = features.transpose(1, 2).reshape(batch, dim, rows, cols)
    pooled = F.adaptive_avg_pool2d(image.float(), (out_rows, out_cols)).to(features.dtype)
    # Representative index: the grid cell at the centre of each pooled window.
    r_idx = ((torch.arange(out_rows) + 0.5) * rows / out_rows).long().clamp(max=rows - 1)
    c_idx = ((torch.arange(out_cols) + 0.5) * cols / out_cols).long().clamp(max=cols - 1)
    index = (r_idx[:, None] * cols + c_idx[None, :]).flatten().to(features.device)
    sizes = torch.full((batch, out_rows * out_cols), tokens / (out_rows * out_cols))
    return MergedTokens(
        pooled.flatten(2).transpose(1, 2), index.expand(batch, -1), sizes.to(features.device)
    )


def cls_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """``softmax(q_cls . k^T / sqrt(d))`` per head, [CLS] column dropped.

    Args:
        queries: ``[batch, heads, tokens, head_dim]`` with [CLS] at token 0.
        keys: Same shape.

    Returns:
        ``[batch, heads, tokens - 1]`` attention of [CLS] to each patch token.
    """
    logits = queries[:, :, :1].float() @ keys.float().transpose(-1, -2) / math.sqrt(keys.shape[-1])
    return logits.softmax(dim=-1)[:, :, 0, 1:]


def attention_received(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Mean attention each token receives (column mean over queries and heads).

    The signal for towers without a [CLS] token (SigLIP, Qwen2-VL): tokens many others attend
    to carry the image's content.

    Args:
        queries: ``[batch, heads, tokens, head_dim]``.
        keys: Same shape.

    Returns:
        ``[batch, tokens]``.
    """
    logits = queries.float() @ keys.float().transpose(-1, -2) / math.sqrt(keys.shape[-1])
    return logits.softmax(dim=-1).mean(dim=(1, 2))
