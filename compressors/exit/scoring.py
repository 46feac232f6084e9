"""P(Yes) for many EXIT prompts at once: one pass per shared prefix, batched sentence suffixes.

All sentences judged in one context have prompts that agree token for token up to
``Sentence:\\n``. :func:`score_shared_prefix` finds that common prefix of each group (from the
token ids themselves, so it is exact whatever the tokenizer merges), runs every prefix through
the model once, and then scores the sentence suffixes in length-sorted batches on top of the
prefixes' key/value cache:

* prefixes of several groups run together, right-padded (causal attention never lets a real
  token see the padding after it);
* a suffix batch may mix groups: each row's cache holds its own prefix, padded to the longest
  prefix of the batch; suffixes are left-padded, so the last position of every row is its last
  real token and only that position's logits are computed (``logits_to_keep=1``);
* padding is masked out of attention and the position ids continue each row's own prefix, so
  every score equals the one-prompt-at-a-time score up to floating-point summation order.

:func:`score_each` is that one-prompt-at-a-time computation (what the EXIT reference code does),
kept as the baseline for benchmarks and for models whose cache cannot be padded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragpress.exceptions import MissingDependencyError

try:
    import torch
    from transformers import DynamicCache
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingDependencyError(exc.name or "torch", extra="exit") from exc

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from transformers import PreTrainedModel

__all__ = [
    "DEFAULT_LIMITS",
    "ScoringLimits",
    "common_prefix_length",
    "score_each",
    "score_shared_prefix",
]

logger = logging.getLogger("ragpress.compressors.exit")


@dataclass(frozen=True, slots=True)
class ScoringLimits:
    """How much work goes into one forward pass."""

    batch_size: int = 32
    """Most prompts (prefixes or suffixes) per forward pass."""
    max_batch_tokens: int = 16_384
    """Most token positions per forward pass, cached prefix included (bounds memory)."""


@dataclass(frozen=True, slots=True)
class _Split:
    prefix: list[int]
    suffixes: list[list[int]]


@dataclass(frozen=True, slots=True)
class _Item:
    group: int
    index: int
    suffix: list[int]


DEFAULT_LIMITS = ScoringLimits()

_LayerKV = tuple["torch.Tensor", "torch.Tensor"]

# Length buckets: a suffix batch never pads its shortest row by more than about a third.
_BUCKET_GROWTH = 1.3
_BUCKET_SLACK = 8


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all ``prompts`` share, leaving each at least one token.

    Args:
        prompts: Token ids of each prompt (at least one).
    """
    first = list(prompts[0])
    length = min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        candidate = list(prompt[:length])
        if candidate == first[:length]:
            continue
        length = next(i for i, (a, b) in enumerate(zip(candidate, first, strict=False)) if a != b)
    return max(length, 0)


def score_shared_prefix(
    model: PreTrainedModel,
    groups: Sequence[Sequence[Sequence[int]]],
    *,
    yes_id: int,
    no_id: int,
    pad_id: int,
    limits: ScoringLimits = DEFAULT_LIMITS,
) -> list[list[float]]:
    """P(Yes) of every prompt, computing each group's shared prefix once.

    Args:
        model: A causal LM in eval mode (full attention in every layer).
        groups: Token ids of the prompts, grouped by shared context; prompts in different
            groups may share nothing.
        yes_id: Token id of ``"Yes"``.
        no_id: Token id of ``"No"``.
        pad_id: Any valid token id; padded positions are masked out.
        limits: Batch size and token bound per forward pass.

    Returns:
        ``softmax([logit_yes, logit_no])[0]`` at each prompt's last position, grouped like
        ``groups``.
    """
    splits = [_split(group) for group in groups]
    results: list[list[float]] = [[0.0] * len(group) for group in groups]
    device = next(model.parameters()).device
    with torch.inference_mode():
        for wave in _waves(splits, 4 * limits.max_batch_tokens):
            prefix_cache = _run_prefixes(model, splits, wave, pad_id, limits, device)
            items = [
                _Item(g, i, suffix) for g in wave for i, suffix in enumerate(splits[g].suffixes)
            ]
            for batch in _suffix_batches(items, splits, limits):
                probabilities = _run_suffixes(
                    model, batch, splits, prefix_cache, yes_id, no_id, pad_id, device
                )
                for item, p in zip(batch, probabilities, strict=True):
                    results[item.group][item.index] = p
    return results


def score_each(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    *,
    yes_id: int,
    no_id: int,
) -> list[float]:
    """P(Yes) of every prompt, one forward pass per prompt and nothing shared (the baseline)."""
    device = next(model.parameters()).device
    out: list[float] = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
            logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1]
            out.append(_p_yes(logits[None, :], yes_id, no_id)[0])
    return out


# -- internals ---------------------------------------------------------------------------------


def _split(group: Sequence[Sequence[int]]) -> _Split:
    if not group:
        return _Split([], [])
    k = common_prefix_length(group)
    return _Split(list(group[0][:k]), [list(p[k:]) for p in group])


def _waves(splits: Sequence[_Split], max_prefix_tokens: int) -> Iterator[list[int]]:
    """Groups whose prefix caches are held in memory together."""
    wave: list[int] = []
    held = 0
    for g, split in enumerate(splits):
        if not split.suffixes:
            continue
        if wave and held + len(split.prefix) > max_prefix_tokens:
            yield wave
            wave, held = [], 0
        wave.append(g)
        held += len(split.prefix)
    if wave:
        yield wave


def _run_prefixes(
    model: PreTrainedModel,
    splits: Sequence[_Split],
    wave: Sequence[int],
    pad_id: int,
    limits: ScoringLimits,
    device: torch.device,
) -> dict[int, list[_LayerKV]]:
    """Key/value states of each group's prefix, per layer, shaped ``(1, heads, p, dim)``.

    On accelerators, prefixes of different lengths share a right-padded batch. On CPU a padded
    batch costs more than it saves (attention with a padding mask cannot use the fused causal
    kernel), so only prefixes of equal length are batched there.
    """
    pad_batches = device.type != "cpu"
    order = sorted((g for g in wave if splits[g].prefix), key=lambda g: len(splits[g].prefix))
    cache: dict[int, list[_LayerKV]] = {}
    chunk: list[int] = []
    for g in [*order, None]:
        if g is not None and chunk:
            length = len(splits[g].prefix)
            fits = (
                len(chunk) < limits.batch_size
                and (len(chunk) + 1) * length <= limits.max_batch_tokens
                and (pad_batches or length == len(splits[chunk[0]].prefix))
            )
            if fits:
                chunk.append(g)
                continue
        if chunk:
            cache.update(
                _prefix_chunk(model, [splits[c].prefix for c in chunk], chunk, pad_id, device)
            )
        chunk = [] if g is None else [g]
    return cache


def _prefix_chunk(
    model: PreTrainedModel,
    prefixes: Sequence[list[int]],
    groups: Sequence[int],
    pad_id: int,
    device: torch.device,
) -> dict[int, list[_LayerKV]]:
    """One right-padded forward pass over ``prefixes``; their caches, sliced per row."""
    width = max(len(p) for p in prefixes)
    ids = torch.full((len(prefixes), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long)
    for r, prefix in enumerate(prefixes):
        ids[r, : len(prefix)] = torch.tensor(prefix, dtype=torch.long)
        mask[r, : len(prefix)] = 1
    padded = any(len(p) < width for p in prefixes)
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device) if padded else None,
        use_cache=True,
        logits_to_keep=1,
    )
    layers = out.past_key_values.layers
    return {
        g: [
            (layer.keys[r : r + 1, :, : len(p)], layer.values[r : r + 1, :, : len(p)])
            for layer in layers
        ]
        for r, (g, p) in enumerate(zip(groups, prefixes, strict=True))
    }


def _suffix_batches(
    items: Sequence[_Item], splits: Sequence[_Split], limits: ScoringLimits
) -> Iterator[list[_Item]]:
    """Items sorted by suffix length (then prefix length), cut into bounded batches."""
    order = sorted(
        range(len(items)),
        key=lambda i: (len(items[i].suffix), len(splits[items[i].group].prefix)),
    )
    batch: list[_Item] = []
    widest_prefix = widest_suffix = 0
    for index in order:
        item = items[index]
        prefix = max(widest_prefix, len(splits[item.group].prefix))
        suffix = max(widest_suffix, len(item.suffix))
        if batch and (
            len(batch) + 1 > limits.batch_size
            or (len(batch) + 1) * (prefix + suffix) > limits.max_batch_tokens
            or suffix > _BUCKET_GROWTH * len(batch[0].suffix) + _BUCKET_SLACK
        ):
            yield batch
            batch = []
            prefix, suffix = len(splits[item.group].prefix), len(item.suffix)
        batch.append(item)
        widest_prefix, widest_suffix = prefix, suffix
    if batch:
        yield batch


def _run_suffixes(
    model: PreTrainedModel,
    batch: Sequence[_Item],
    splits: Sequence[_Split],
    prefix_cache: dict[int, list[_LayerKV]],
    yes_id: int,
    no_id: int,
    pad_id: int,
    device: torch.device,
) -> list[float]:
    rows = len(batch)
    prefix_lengths = [len(splits[item.group].prefix) for item in batch]
    width = max(len(item.suffix) for item in batch)
    cached = max(prefix_lengths)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    positions = torch.zeros((rows, width), dtype=torch.long)
    mask = torch.zeros((rows, cached + width), dtype=torch.long)
    for r, (item, p) in enumerate(zip(batch, prefix_lengths, strict=True)):
        n = len(item.suffix)
        ids[r, width - n :] = torch.tensor(item.suffix, dtype=torch.long)
        positions[r, : width - n] = p  # padding: any valid position, it is masked out
        positions[r, width - n :] = torch.arange(p, p + n)
        mask[r, :p] = 1
        mask[r, cached + width - n :] = 1
    past = None
    if cached:
        past = DynamicCache(
            ddp_cache_data=_stack_prefixes(batch, prefix_lengths, prefix_cache, cached),
            config=model.config,
        )
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        past_key_values=past,
        use_cache=past is not None,
        logits_to_keep=1,
    )
    return _p_yes(out.logits[:, -1], yes_id, no_id)


def _stack_prefixes(
    batch: Sequence[_Item],
    prefix_lengths: Sequence[int],
    prefix_cache: dict[int, list[_LayerKV]],
    cached: int,
) -> list[_LayerKV]:
    """Per layer, the rows' prefix keys and values, right-padded with zeros to ``cached``."""
    reference = next(prefix_cache[item.group] for item in batch if item.group in prefix_cache)
    layers: list[_LayerKV] = []
    for layer, (keys, values) in enumerate(reference):
        shape_k = (len(batch), keys.shape[1], cached, keys.shape[3])
        shape_v = (len(batch), values.shape[1], cached, values.shape[3])
        k_out = keys.new_zeros(shape_k)
        v_out = values.new_zeros(shape_v)
        for r, (item, p) in enumerate(zip(batch, prefix_lengths, strict=True)):
            if p:
                k_row, v_row = prefix_cache[item.group][layer]
                k_out[r, :, :p] = k_row[0]
                v_out[r, :, :p] = v_row[0]
        layers.append((k_out, v_out))
    return layers


def _p_yes(logits: torch.Tensor, yes_id: int, no_id: int) -> list[float]:
    pair = logits[:, [yes_id, no_id]].float()
    return [float(p) for p in torch.softmax(pair, dim=-1)[:, 0].cpu()]
