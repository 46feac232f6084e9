"""Document-aware budget allocation across crops (AnyRes tiles, document-model crops).

High-resolution and document VLMs see an image as a thumbnail plus crops. A global budget should
not be split evenly: a crop of blank margin needs few tokens, a crop of dense text many. Two
training-free rules, re-implemented from their papers:

* :func:`correlation_budgets` — Token-level Correlation-guided Compression (arXiv 2407.14439):
  a patch is redundant when its key has cosine > ``tau`` with another patch of the crop; each
  crop's budget is proportional to its non-redundant patches.
* :func:`thumbnail_budgets` — GlobalCom2 (AAAI 2026): each crop's share follows the thumbnail's
  importance over the crop's region: ``p = softmax(S / tau)``,
  ``scale_i = min(1, R * (1 + p_i - mean(p)))``, ``keep_i = floor(N_i * scale_i)``.

:func:`select_in_crops` then keeps the top tokens inside each crop.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError

try:
    import torch
    import torch.nn.functional as F  # noqa: N812 - the universal torch alias
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="vlm") from exc

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "allocate",
    "correlation_budgets",
    "redundant_share",
    "select_in_crops",
    "thumbnail_budgets",
]


def allocate(
    weights: Sequence[float], total: int, capacity: Sequence[int], *, minimum: int = 0
) -> list[int]:
    """Split ``total`` tokens in proportion to ``weights`` (largest remainder), within bounds.

    Every share is at least ``min(minimum, capacity_i)`` (when the minimums fit in ``total``)
    and at most ``capacity_i``; what a full crop cannot take goes to the others. The shares add
    up to ``min(total, sum(capacity))``.
    """
    if len(weights) != len(capacity):
        raise ValueError(f"{len(weights)} weights for {len(capacity)} crops")
    total = min(total, sum(capacity))
    floors = [min(minimum, c) for c in capacity]
    if sum(floors) >= total:
        return _proportional(weights, total, floors)
    extra = _proportional(
        weights, total - sum(floors), [c - f for c, f in zip(capacity, floors, strict=True)]
    )
    return [f + e for f, e in zip(floors, extra, strict=True)]


def _proportional(weights: Sequence[float], total: int, caps: Sequence[int]) -> list[int]:
    """Water-filling: proportional shares, capped crops removed and the rest re-split."""
    shares = [0] * len(caps)
    active = [i for i, cap in enumerate(caps) if cap > 0]
    left = total
    while left > 0 and active:
        w = [max(float(weights[i]), 0.0) for i in active]
        mass = sum(w)
        exact = [left * (wi / mass if mass > 0 else 1 / len(active)) for wi in w]
        capped = [i for i, e in zip(active, exact, strict=True) if shares[i] + e >= caps[i]]
        if capped:
            for i in capped:
                left -= caps[i] - shares[i]
                shares[i] = caps[i]
            active = [i for i in active if i not in capped]
            continue
        whole = [math.floor(e) for e in exact]
        for i, g in zip(active, whole, strict=True):
            shares[i] += g
        left -= sum(whole)
        by_remainder = sorted(range(len(active)), key=lambda j: exact[j] - whole[j], reverse=True)
        for j in by_remainder[:left]:
            shares[active[j]] += 1
        left = 0
    return shares


def redundant_share(keys: torch.Tensor, tau: float = 0.9) -> float:
    """Share of patches whose key has cosine > ``tau`` with another patch of the same crop.

    Args:
        keys: ``[tokens, dim]`` patch keys of one crop.
        tau: Similarity above which a patch is redundant (calibrate in 0.8-0.95).
    """
    m = F.normalize(keys.float(), dim=-1)
    similarity = m @ m.T
    similarity.fill_diagonal_(-math.inf)
    return float((similarity.amax(dim=-1) > tau).float().mean())


def correlation_budgets(
    crop_keys: Sequence[torch.Tensor], total: int, *, tau: float = 0.9, min_tokens: int = 16
) -> list[int]:
    """Token budget per crop, proportional to its non-redundant patches.

    Args:
        crop_keys: ``[tokens_i, dim]`` patch keys for each crop.
        total: Tokens to keep over all crops.
        tau: Redundancy threshold.
        min_tokens: Each crop keeps at least this many (or all it has).
    """
    sizes = [k.shape[0] for k in crop_keys]
    weights = [(1.0 - redundant_share(k, tau)) * n for k, n in zip(crop_keys, sizes, strict=True)]
    return allocate(weights, total, sizes, minimum=min_tokens)


def thumbnail_budgets(
    thumbnail_scores: torch.Tensor,
    grid: tuple[int, int],
    crop_tokens: Sequence[int],
    *,
    ratio: float = 0.25,
    tau: float = 10.0,
) -> list[int]:
    """GlobalCom2's per-crop budget from the thumbnail's token importance.

    Args:
        thumbnail_scores: ``[rows, cols]`` importance of each thumbnail token (e.g. its [CLS]
            attention); the thumbnail covers the whole image.
        grid: ``(crop_rows, crop_cols)``: how the crops tile the image, row-major.
        crop_tokens: Tokens in each crop (``crop_rows * crop_cols`` entries).
        ratio: ``R``, the mean share of tokens kept.
        tau: Softmax temperature over the crops' summed scores.

    Returns:
        ``floor(N_i * min(1, R * (1 + p_i - mean(p))))`` for each crop.
    """
    crop_rows, crop_cols = grid
    if crop_rows * crop_cols != len(crop_tokens):
        raise ValueError(f"grid {crop_rows}x{crop_cols} does not match {len(crop_tokens)} crops")
    rows, cols = thumbnail_scores.shape
    row_edges = [round(i * rows / crop_rows) for i in range(crop_rows + 1)]
    col_edges = [round(j * cols / crop_cols) for j in range(crop_cols + 1)]
    region = torch.stack(
        [
            thumbnail_scores[row_edges[i] : row_edges[i + 1], col_edges[j] : col_edges[j + 1]]
            .float()
            .sum()
            for i in range(crop_rows)
            for j in range(crop_cols)
        ]
    )
    p = (region / tau).softmax(dim=0)
    scale = (ratio * (1 + p - p.mean())).clamp(max=1.0)
    return [math.floor(n * float(s)) for n, s in zip(crop_tokens, scale, strict=True)]


def select_in_crops(scores: Sequence[torch.Tensor], budgets: Sequence[int]) -> list[torch.Tensor]:
    """Sorted indices of the ``budgets[i]`` highest-scoring tokens inside each crop."""
    if len(scores) != len(budgets):
        raise ValueError(f"{len(scores)} crops of scores for {len(budgets)} budgets")
    return [
        s.topk(min(b, s.shape[0])).indices.sort().values
        for s, b in zip(scores, budgets, strict=True)
    ]
