"""Token reducers against straightforward reference computations on random tensors."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ragpress.compressors.visual.vlm.budgets import (  # noqa: E402
    allocate,
    correlation_budgets,
    redundant_share,
    select_in_crops,
    thumbnail_budgets,
)
from ragpress.compressors.visual.vlm.reducers import (  # noqa: E402
    attention_received,
    cls_attention,
    divprune,
    keep_count,
    proportional_attention_bias,
    spatial_pool,
    tome_merge,
    tome_reduce,
    visionzip,
    vtc_cls,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
        ],
    ),
]


def cos(a, b) -> float:
    return float(torch.dot(a.double(), b.double()) / (a.double().norm() * b.double().norm()))


def divprune_reference(x, k: int) -> list[int]:
    n = x.shape[0]
    d = [[1 - cos(x[i], x[j]) for j in range(n)] for i in range(n)]
    seed = max(range(n), key=lambda i: min(d[i][j] for j in range(n) if j != i))
    picked = [seed]
    while len(picked) < k:
        rest = [i for i in range(n) if i not in picked]
        picked.append(max(rest, key=lambda i: min(d[i][j] for j in picked)))
    return sorted(picked)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n", "k"), [(40, 1), (40, 5), (57, 12), (30, 30)])
def test_divprune_matches_the_greedy_max_min_reference(n: int, k: int, device: str) -> None:
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(3, n, 16, generator=gen)
    got = divprune(x.to(device), k).cpu()
    assert got.shape == (3, k)
    for b in range(3):
        assert got[b].tolist() == divprune_reference(x[b], k)


def test_divprune_default_keeps_9_8_percent() -> None:
    assert divprune(torch.randn(1, 576, 8)).shape == (1, 56)


def test_vtc_cls_matches_reference() -> None:
    att = torch.rand(2, 7, 4, 50)
    got = vtc_cls(att, 9)
    for b in range(2):
        score = [sum(float(att[b, layer, :, t].mean()) for layer in range(7)) for t in range(50)]
        expected = sorted(sorted(range(50), key=lambda t: -score[t])[:9])
        assert got[b].tolist() == expected


def visionzip_reference(x, att, keys, dominant: int, contextual: int):
    n = x.shape[0]
    score = att.sum(0)
    dom = sorted(sorted(range(n), key=lambda t: -float(score[t]))[:dominant])
    rest = [t for t in range(n) if t not in dom]
    stride = len(rest) // contextual
    targets = rest[::stride][:contextual]
    others = [t for t in rest if t not in targets]
    groups: dict[int, list[int]] = {t: [] for t in targets}
    for o in others:
        groups[max(targets, key=lambda t: cos(keys[o], keys[t]))].append(o)
    out = {t: x[t] for t in dom}
    for t, members in groups.items():
        out[t] = x[t] + (torch.stack([x[m] for m in members]).mean(0) if members else 0)
    order = sorted(out)
    return order, torch.stack([out[t] for t in order]), [len(groups.get(t, [])) + 1 for t in order]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n", "dominant", "contextual"), [(64, 10, 4), (50, 7, 6), (20, 19, 5)])
def test_visionzip_matches_reference(n: int, dominant: int, contextual: int, device: str) -> None:
    gen = torch.Generator().manual_seed(n)
    x, keys = torch.randn(2, n, 12, generator=gen), torch.randn(2, n, 8, generator=gen)
    att = torch.rand(2, 3, n, generator=gen)
    merged = visionzip(x.to(device), att.to(device), keys.to(device), dominant=dominant,
                       contextual=contextual)  # fmt: skip
    got = type(merged)(merged.features.cpu(), merged.indices.cpu(), merged.sizes.cpu())
    for b in range(2):
        count = min(contextual, n - dominant)
        order, features, sizes = visionzip_reference(x[b], att[b], keys[b], dominant, count)
        assert got.indices[b].tolist() == order
        torch.testing.assert_close(got.features[b], features)
        assert got.sizes[b].tolist() == [float(size) for size in sizes]


def tome_reference(x, metric, sizes, r: int, protect_first: bool):
    n = x.shape[0]
    a, b = list(range(0, n, 2)), list(range(1, n, 2))
    best = {}
    for i in a:
        sims = [cos(metric[i], metric[j]) for j in b]
        j = max(range(len(b)), key=lambda q: sims[q])
        best[i] = (-math.inf if protect_first and i == 0 else sims[j], b[j])
    merged = sorted(a, key=lambda i: -best[i][0])[:r]
    groups = {j: [j] for j in b}
    for i in merged:
        groups[best[i][1]].append(i)
    out = {i: [i] for i in a if i not in merged} | groups
    order = sorted(out)
    feats, sz = [], []
    for t in order:
        total = sum(float(sizes[m]) for m in out[t])
        feats.append(sum(x[m] * sizes[m] for m in out[t]) / total)
        sz.append(total)
    return order, torch.stack(feats), sz


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("n", "r", "protect"), [(20, 5, False), (21, 10, True), (9, 4, False)])
def test_tome_merge_matches_reference(n: int, r: int, protect: bool, device: str) -> None:
    gen = torch.Generator().manual_seed(n * r)
    x, metric = torch.randn(2, n, 6, generator=gen), torch.randn(2, n, 5, generator=gen)
    sizes = torch.randint(1, 4, (2, n), generator=gen).float()
    merged = tome_merge(x.to(device), metric.to(device), r, sizes=sizes.to(device),
                        protect_first=protect)  # fmt: skip
    got = type(merged)(merged.features.cpu(), merged.indices.cpu(), merged.sizes.cpu())
    assert got.features.shape == (2, n - r, 6)
    for b in range(2):
        order, features, sz = tome_reference(x[b], metric[b], sizes[b], r, protect)
        assert got.indices[b].tolist() == order
        torch.testing.assert_close(got.features[b], features)
        assert got.sizes[b].tolist() == sz
    if protect:
        assert (got.indices[:, 0] == 0).all() and (got.sizes[:, 0] == sizes[:, 0]).all()


def test_tome_reduce_reaches_the_target_and_conserves_mass() -> None:
    x = torch.randn(2, 576, 8, dtype=torch.float64)
    got = tome_reduce(x, 64)
    assert got.features.shape == (2, 64, 8)
    assert got.sizes.sum(-1).tolist() == [576.0, 576.0]
    torch.testing.assert_close((got.features * got.sizes[..., None]).sum(1), x.sum(1))
    assert (got.indices.diff(dim=-1) > 0).all()
    bias = proportional_attention_bias(got.sizes)
    assert bias.shape == (2, 1, 1, 64) and torch.allclose(bias.exp()[:, 0, 0], got.sizes.float())


def test_spatial_pool_averages_blocks() -> None:
    x = torch.randn(1, 24, 3)  # 4 x 6 grid -> 2 x 3 grid of 2 x 2 blocks
    got = spatial_pool(x, (4, 6), 6)
    grid = x[0].view(4, 6, 3)
    expected = torch.stack(
        [
            grid[2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean((0, 1))
            for r in range(2)
            for c in range(3)
        ]
    )
    torch.testing.assert_close(got.features[0], expected)
    assert got.indices[0].tolist() == [7, 9, 11, 19, 21, 23]


def test_attention_signals_match_manual_softmax() -> None:
    q, k = torch.randn(2, 3, 10, 4), torch.randn(2, 3, 10, 4)
    manual = torch.empty(2, 3, 10, 10)
    for b in range(2):
        for h in range(3):
            for i in range(10):
                logits = torch.tensor([float(q[b, h, i] @ k[b, h, j]) / 2 for j in range(10)])
                manual[b, h, i] = logits.softmax(0)
    torch.testing.assert_close(cls_attention(q, k), manual[:, :, 0, 1:])
    torch.testing.assert_close(attention_received(q, k), manual.mean(dim=(1, 2)))


def test_keep_count_and_input_checks() -> None:
    assert keep_count(576, 0.1) == 58 and keep_count(576, 64) == 64 and keep_count(10, 99) == 10
    assert keep_count(5, 0.01) == 1
    with pytest.raises(ValueError, match="fraction"):
        keep_count(10, 1.5)
    with pytest.raises(ValueError, match=">= 1"):
        keep_count(10, 0)
    with pytest.raises(ValueError, match=r"\[batch, tokens, dim\]"):
        divprune(torch.randn(5, 4), 2)


@settings(max_examples=80, deadline=None)
@given(
    weights=st.lists(st.floats(0, 10), min_size=1, max_size=8),
    data=st.data(),
)
def test_allocate_respects_total_and_bounds(weights: list[float], data: st.DataObject) -> None:
    capacity = data.draw(st.lists(st.integers(0, 50), min_size=len(weights), max_size=len(weights)))
    total = data.draw(st.integers(0, 300))
    minimum = data.draw(st.integers(0, 20))
    shares = allocate(weights, total, capacity, minimum=minimum)
    assert sum(shares) == min(total, sum(capacity))
    assert all(0 <= s <= c for s, c in zip(shares, capacity, strict=True))
    if sum(min(minimum, c) for c in capacity) <= total:
        assert all(s >= min(minimum, c) for s, c in zip(shares, capacity, strict=True))


def test_allocate_is_proportional() -> None:
    assert allocate([1, 3], 40, [100, 100]) == [10, 30]
    assert allocate([1, 3], 40, [100, 20]) == [20, 20]  # the full crop's excess moves over
    assert allocate([0, 0, 0], 7, [5, 5, 5]) == [3, 2, 2]


def test_correlation_budgets_favour_crops_with_distinct_patches() -> None:
    gen = torch.Generator().manual_seed(0)
    distinct = torch.randn(64, 32, generator=gen)
    blank = torch.randn(1, 32, generator=gen).repeat(64, 1) + 1e-3 * torch.randn(64, 32)
    assert redundant_share(blank) == 1.0 and redundant_share(distinct) == 0.0
    budgets = correlation_budgets([distinct, blank, distinct], 100, min_tokens=8)
    assert budgets == [46, 8, 46]


def test_thumbnail_budgets_follow_the_formula() -> None:
    scores = torch.rand(6, 6)
    budgets = thumbnail_budgets(scores, (2, 3), [100] * 6, ratio=0.25, tau=0.1)
    s = torch.tensor(
        [
            float(scores[3 * r : 3 * r + 3, 2 * c : 2 * c + 2].sum())
            for r in range(2)
            for c in range(3)
        ]
    )
    p = (s / 0.1).softmax(0)
    expected = [math.floor(100 * min(1.0, 0.25 * (1 + float(pi) - float(p.mean())))) for pi in p]
    assert budgets == expected
    picked = select_in_crops([torch.tensor([0.1, 0.9, 0.5]), torch.tensor([3.0, 1.0])], [2, 1])
    assert [t.tolist() for t in picked] == [[1, 2], [0]]
