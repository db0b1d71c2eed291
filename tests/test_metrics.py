"""backend.core.metrics against slow, obviously correct loops and hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from backend.core import metrics as M

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_close(
    actual, expected, *, rtol: float = 1e-5, atol: float = 1e-6, name: str = ""
) -> None:
    """allclose for tensors/arrays that says where the largest difference is (NaNs must match)."""
    a = np.asarray(torch.as_tensor(actual).detach().cpu().double())
    e = np.asarray(torch.as_tensor(expected).detach().cpu().double())
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), (
        f"{name}: NaN at {np.argwhere(nan_a != nan_e)[:5].tolist()}"
    )
    a, e = np.where(nan_a, 0.0, a), np.where(nan_e, 0.0, e)
    excess = np.abs(a - e) - (atol + rtol * np.abs(e))
    if a.size and excess.max() > 0:
        idx = np.unravel_index(np.argmax(excess), a.shape)
        raise AssertionError(
            f"{name}: largest difference at index {tuple(int(i) for i in idx)}: "
            f"{a[idx]!r} vs expected {e[idx]!r} (|diff| {abs(a[idx] - e[idx]):.3g}; "
            f"{int((excess > 0).sum())} of {a.size} entries beyond tolerance)"
        )


# ---------------------------------------------------------------------------
# naive references


def _point_dist(p: torch.Tensor, q: torch.Tensor, norm: int, squared: bool) -> torch.Tensor:
    d = p - q
    if norm == 1:
        return d.abs().sum()
    sq = (d * d).sum()
    return sq if squared else torch.sqrt(sq)


def naive_directional(p, q, n_p, n_q, norm, squared, reduction):
    """Mean/sum over p[:n_p] of the distance to the nearest of q[:n_q], by double loop."""
    terms = [
        torch.stack([_point_dist(p[i], q[j], norm, squared) for j in range(n_q)]).min()
        for i in range(n_p)
    ]
    total = torch.stack(terms).sum()
    return total / n_p if reduction == "mean" else total


def naive_chamfer(x, y, xl, yl, norm=2, squared=True, reduction="mean"):
    acc = torch.stack(
        [
            naive_directional(x[b], y[b], xl[b], yl[b], norm, squared, reduction)
            for b in range(len(x))
        ]
    )
    comp = torch.stack(
        [
            naive_directional(y[b], x[b], yl[b], xl[b], norm, squared, reduction)
            for b in range(len(x))
        ]
    )
    return acc, comp


def naive_emd(x: np.ndarray, y: np.ndarray) -> float:
    """Minimum mean matched distance over every permutation (tiny N only)."""
    n = len(x)
    best = min(
        sum(np.linalg.norm(x[i] - y[p[i]]) for i in range(n))
        for p in itertools.permutations(range(n))
    )
    return best / n


def naive_graph_distance(points: np.ndarray, knn: int, src: int, dst: int) -> float:
    """Floyd-Warshall on the symmetrised kNN graph, built by explicit loops."""
    p = len(points)
    dist = [[math.inf] * p for _ in range(p)]
    for i in range(p):
        dist[i][i] = 0.0
        order = sorted(range(p), key=lambda j: float(np.sum((points[i] - points[j]) ** 2)))
        for j in order[1 : knn + 1]:
            w = float(np.linalg.norm(points[i] - points[j]))
            dist[i][j] = dist[j][i] = min(dist[i][j], w)
    for k in range(p):
        for i in range(p):
            for j in range(p):
                if dist[i][k] + dist[k][j] < dist[i][j]:
                    dist[i][j] = dist[i][k] + dist[k][j]
    return dist[src][dst]


# ---------------------------------------------------------------------------
# chamfer


SIZES = [(1, 1, 1), (2, 5, 7), (3, 17, 9), (2, 40, 33)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("b,n,m", SIZES)
@pytest.mark.parametrize("norm,squared", [(2, True), (2, False), (1, False)])
def test_chamfer_matches_naive_forward_and_backward(device, b, n, m, norm, squared):
    g = torch.Generator().manual_seed(n * 100 + m)
    x0 = torch.rand(b, n, 3, generator=g) - 0.5
    y0 = torch.rand(b, m, 3, generator=g) - 0.5
    w = torch.rand(b, generator=g) + 0.5
    x, y = x0.clone().to(device).requires_grad_(), y0.clone().to(device).requires_grad_()
    res = M.chamfer_distance(x, y, norm=norm, squared=squared)
    (w.to(device) * (res.chamfer + 0.3 * res.accuracy)).sum().backward()

    xr, yr = x0.double().requires_grad_(), y0.double().requires_grad_()
    acc, comp = naive_chamfer(xr, yr, [n] * b, [m] * b, norm, squared)
    (w.double() * (acc + comp + 0.3 * acc)).sum().backward()

    assert_close(res.accuracy, acc, name="accuracy")
    assert_close(res.completeness, comp, name="completeness")
    assert_close(res.chamfer, acc + comp, name="chamfer")
    assert_close(res.chamfer_mean, (acc + comp) / 2, name="chamfer_mean")
    assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5, name="grad x")
    assert_close(y.grad, yr.grad, rtol=1e-4, atol=1e-5, name="grad y")


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_chamfer_ragged_lengths_match_naive_and_ignore_padding(reduction):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(3, 12, 3, generator=g)
    y0 = torch.rand(3, 9, 3, generator=g)
    xl, yl = [12, 5, 1], [2, 9, 4]
    x0[1, 5:] = 100.0  # padding far away must not count
    y0[0, 2:] = -100.0
    x = x0.clone().requires_grad_()
    res = M.chamfer_distance(
        x, y0, reduction=reduction, x_lengths=torch.tensor(xl), y_lengths=torch.tensor(yl)
    )
    res.chamfer.sum().backward()
    acc, comp = naive_chamfer(x0.double(), y0.double(), xl, yl, reduction=reduction)
    assert_close(res.accuracy, acc, name="accuracy")
    assert_close(res.completeness, comp, name="completeness")
    assert torch.all(x.grad[1, 5:] == 0) and torch.all(x.grad[2, 1:] == 0), "padding got a gradient"


@pytest.mark.parametrize("budget", [7, 1 << 24])
def test_dense_nearest_index_matches_pytorch3d_knn(budget):
    """The CPU block path picks the same neighbours as pytorch3d's knn_points, with
    blocks smaller than one row (budget 7) and with padded clouds."""
    from pytorch3d.ops import knn_points

    g = torch.Generator().manual_seed(11)
    p = torch.rand(3, 50, 3, generator=g)
    q = torch.rand(3, 40, 3, generator=g)
    q_len = torch.tensor([40, 13, 1])
    q[1, 13:] = p[1, :27]  # padding that would be the exact nearest must be skipped
    ours = M._nearest_index_dense(p, q, q_len, budget=budget)
    ref = knn_points(p, q, lengths2=q_len, K=1).idx[..., 0]
    assert torch.equal(ours, ref)
    q[2, 1:] = float("nan")  # whatever the padding holds, it is never chosen
    only = M._nearest_index_dense(p, q, q_len, budget=budget)[2]
    assert torch.equal(only, torch.zeros(50, dtype=torch.int64))


def test_chamfer_unsquared_gradient_is_finite_on_coincident_points():
    x = torch.zeros(1, 4, 3, requires_grad=True)
    y = torch.zeros(1, 4, 3)
    M.chamfer_distance(x, y, squared=False).chamfer.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_chamfer_known_value():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    y = torch.tensor([[[0.0, 0, 0.5]]])
    res = M.chamfer_distance(x, y)  # squared L2
    assert_close(res.accuracy, [(0.25 + 1.25) / 2])
    assert_close(res.completeness, [0.25])
    res = M.chamfer_distance(x, y, norm=1)
    assert_close(res.accuracy, [(0.5 + 1.5) / 2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"norm": 1, "squared": True}, "Euclidean"),
        ({"norm": 3}, "norm"),
        ({"reduction": "max"}, "reduction"),
        ({"x_lengths": torch.tensor([0, 2])}, "at least one point"),
        ({"y_lengths": torch.tensor([2])}, "shape"),
    ],
)
def test_chamfer_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.chamfer_distance(torch.rand(2, 4, 3), torch.rand(2, 5, 3), **kwargs)


def test_chamfer_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="batch size"):
        M.chamfer_distance(torch.rand(2, 4, 3), torch.rand(3, 4, 3))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        M.chamfer_distance(torch.rand(4, 3), torch.rand(4, 3))
    with pytest.raises(ValueError, match="dtype"):
        M.chamfer_distance(torch.rand(1, 4, 3), torch.rand(1, 4, 3).double())


# ---------------------------------------------------------------------------
# F-score and IoU


@pytest.mark.parametrize("b,n,m", SIZES)
@pytest.mark.parametrize("threshold", [0.05, 0.2])
def test_fscore_matches_naive(b, n, m, threshold):
    g = torch.Generator().manual_seed(n + m)
    x = torch.rand(b, n, 3, generator=g)
    y = torch.rand(b, m, 3, generator=g)
    res = M.f_score(x, y, threshold)
    for i in range(b):
        dx = [min(float(torch.dist(p, q)) for q in y[i]) for p in x[i]]
        dy = [min(float(torch.dist(q, p)) for p in x[i]) for q in y[i]]
        prec = sum(d < threshold for d in dx) / n
        rec = sum(d < threshold for d in dy) / m
        f = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        assert_close(res.precision[i], prec, name="precision")
        assert_close(res.recall[i], rec, name="recall")
        assert_close(res.fscore[i], f, name="fscore")


def test_fscore_hand_case_and_zero():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0]]])
    y = torch.tensor([[[0.0, 0, 0.01]]])
    res = M.f_score(x, y, 0.02)
    assert_close(res.precision, [0.5])
    assert_close(res.recall, [1.0])
    assert_close(res.fscore, [2 * 0.5 / 1.5])
    assert M.f_score(x, y + 5, 0.02).fscore.item() == 0.0
    with pytest.raises(ValueError, match="positive"):
        M.f_score(x, y, 0.0)


def test_volumetric_iou_matches_naive_and_edge_cases():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 6, 5, 4, generator=g) > 0.5
    b = torch.rand(3, 6, 5, 4, generator=g) > 0.4
    iou = M.volumetric_iou(a, b)
    for i in range(3):
        inter = union = 0
        for va, vb in zip(a[i].flatten().tolist(), b[i].flatten().tolist()):
            inter += va and vb
            union += va or vb
        assert_close(iou[i], inter / union)
    probs = torch.tensor([[0.2, 0.5, 0.9, 0.7]])
    assert_close(M.volumetric_iou(probs, torch.tensor([[False, True, True, False]])), [2 / 3])
    empty = torch.zeros(2, 8, dtype=torch.bool)
    assert_close(M.volumetric_iou(empty, empty), [1.0, 1.0])
    with pytest.raises(ValueError, match="same shape"):
        M.volumetric_iou(a, b[:, :3])


# ---------------------------------------------------------------------------
# EMD


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_emd_exact_matches_permutation_search(n):
    g = torch.Generator().manual_seed(n)
    x = torch.rand(2, n, 3, generator=g)
    y = torch.rand(2, n, 3, generator=g)
    expected = [naive_emd(x[b].double().numpy(), y[b].double().numpy()) for b in range(2)]
    assert_close(M.emd(x, y), expected, name="emd exact")
    assert_close(M.emd(x, y, exact=False), expected, rtol=0.01, name="emd auction")


@pytest.mark.parametrize("rel_tol", [0.01, 0.05])
def test_emd_approximation_within_its_bound_at_mid_size(rel_tol):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 512, 3, generator=g) - 0.5
    y = (torch.rand(2, 512, 3, generator=g) - 0.5) * torch.tensor([1.0, 0.6, 0.8])
    exact = M.emd(x, y, exact=True).double()
    approx = M.emd(x, y, exact=False, rel_tol=rel_tol).double()
    assert torch.all(approx >= exact * (1 - 1e-6)), (approx, exact)  # a real matching
    assert torch.all(approx <= exact * (1 + rel_tol)), (approx, exact)


def test_emd_of_a_permutation_is_zero_and_differentiable():
    x = torch.rand(1, 300, 3)
    y = x[:, torch.randperm(300)].clone().requires_grad_()
    assert M.emd(x, y).item() == pytest.approx(0.0, abs=1e-6)
    assert M.emd(x, y, exact=False).item() == pytest.approx(0.0, abs=1e-6)
    same = torch.zeros(1, 3000, 3)  # all points coincide: no bidding war
    assert M.emd(same, same, exact=False).item() == 0.0
    y2 = (y.detach() + 0.1).requires_grad_()
    M.emd(x, y2).sum().backward()
    assert_close(y2.grad, torch.full_like(y2, 1 / (300 * math.sqrt(3))), rtol=1e-4, name="grad")


def test_emd_rejects_unequal_sizes():
    with pytest.raises(ValueError, match="equal size"):
        M.emd(torch.rand(1, 5, 3), torch.rand(1, 6, 3))


# ---------------------------------------------------------------------------
# part chamfer


def test_part_chamfer_matches_per_label_naive_and_reports_missing_labels():
    g = torch.Generator().manual_seed(11)
    x = torch.rand(2, 30, 3, generator=g)
    y = torch.rand(2, 25, 3, generator=g)
    xl = torch.randint(0, 3, (2, 30), generator=g)  # labels 0..2
    yl = torch.randint(0, 3, (2, 25), generator=g)
    xl[0][xl[0] == 2] = 5  # sample 0: label 5 only in x, label 2 only in y
    yl[1, :4] = -1  # padding
    xr = x.clone().requires_grad_()
    res = M.part_chamfer(xr, xl, y, yl, squared=False)
    res.chamfer.sum().backward()
    assert res.n_parts.tolist() == [2, 3]
    assert res.n_missing.tolist() == [2, 0]
    for b in range(2):
        shared = sorted(set(xl[b][xl[b] >= 0].tolist()) & set(yl[b][yl[b] >= 0].tolist()))
        values = []
        for label in shared:
            px, py = x[b][xl[b] == label].double(), y[b][yl[b] == label].double()
            acc, comp = naive_chamfer(px[None], py[None], [len(px)], [len(py)], squared=False)
            values.append(float(acc + comp))
        assert_close(res.chamfer[b], np.mean(values), name=f"part chamfer {b}")
    assert torch.isfinite(xr.grad).all() and xr.grad.abs().sum() > 0


def test_part_chamfer_without_shared_labels_is_nan():
    x, y = torch.rand(1, 5, 3), torch.rand(1, 5, 3)
    res = M.part_chamfer(
        x, torch.zeros(1, 5, dtype=torch.long), y, torch.ones(1, 5, dtype=torch.long)
    )
    assert math.isnan(res.chamfer.item()) and res.n_parts.item() == 0 and res.n_missing.item() == 2


# ---------------------------------------------------------------------------
# PCK


def test_pck_2d_hand_computed():
    gt = torch.zeros(2, 4, 2)
    pred = torch.tensor(
        [[[5.0, 0], [6, 8], [10.5, 0], [0, 0]], [[3.0, 4], [0, 0], [30, 0], [0, 0]]]
    )  # distances: 5, 10, 10.5, 0 | 5, 0, 30, 0
    visible = torch.tensor([[True, True, True, False], [True, False, True, True]])
    res = M.pck_2d(pred, gt, visible, image_size=torch.tensor([[100.0, 50], [40, 60]]))
    # thresholds 0.1 * max(w, h) = 10 and 6
    assert res.correct.tolist() == [[True, True, False, False], [True, False, False, True]]
    assert_close(res.per_sample, [2 / 3, 2 / 3])
    assert_close(res.pck, 4 / 6)
    res = M.pck_2d(pred, gt, alpha=0.2, bbox_size=torch.tensor([[10.0, 20], [10, 10]]))
    assert res.correct.tolist() == [[False, False, False, True], [False, True, False, True]]
    with pytest.raises(ValueError, match="exactly one"):
        M.pck_2d(pred, gt, visible)
    with pytest.raises(ValueError, match="no valid keypoint"):
        M.pck_2d(pred, gt, torch.zeros(2, 4, dtype=torch.bool), image_size=torch.ones(2, 2))


def test_pck_3d_euclidean_positions_and_indices():
    surface = torch.tensor([[[0.0, 0, 0], [0.05, 0, 0], [0.3, 0, 0], [0, 0.1, 0]]])
    gt = torch.tensor([[0, 0, 3]])
    pred = torch.tensor([[1, 2, 0]])  # distances 0.05, 0.3, 0.1
    res = M.pck_3d(pred, gt, 0.1, surface_points=surface)
    assert res.correct.tolist() == [[True, False, True]]
    res_pos = M.pck_3d(surface[:, [1, 2, 0]], surface[:, [0, 0, 3]], 0.1)
    assert res_pos.correct.tolist() == res.correct.tolist()
    with pytest.raises(ValueError, match="surface_points"):
        M.pck_3d(pred, gt, 0.1)


def test_pck_3d_geodesic_walks_around_a_gap():
    # A U: two vertical arms 0.1 apart, joined at the bottom; spacing 0.02.
    t = np.arange(0, 1.0001, 0.02)
    left = np.stack([np.zeros_like(t), 1 - t, np.zeros_like(t)], 1)
    bottom = np.stack([np.arange(0.02, 0.1, 0.02), np.zeros(4), np.zeros(4)], 1)
    right = np.stack([np.full_like(t, 0.1), t, np.zeros_like(t)], 1)
    cloud = torch.tensor(np.concatenate([left, bottom, right]), dtype=torch.float32)[None]
    top_left, top_right = 0, len(cloud[0]) - 1
    gt = torch.tensor([[top_left]])
    pred = torch.tensor([[top_right]])
    assert M.pck_3d(pred, gt, 0.15, surface_points=cloud).pck.item() == 1.0
    assert M.pck_3d(pred, gt, 0.15, surface_points=cloud, geodesic=True, knn=2).pck.item() == 0.0
    assert M.pck_3d(pred, gt, 2.2, surface_points=cloud, geodesic=True, knn=2).pck.item() == 1.0


def test_pck_3d_geodesic_matches_floyd_warshall():
    g = torch.Generator().manual_seed(5)
    cloud = torch.rand(1, 30, 3, generator=g)
    pairs = [(0, 7), (3, 29), (12, 12), (21, 4)]
    pred = torch.tensor([[p for p, _ in pairs]])
    gt = torch.tensor([[q for _, q in pairs]])
    expected = [naive_graph_distance(cloud[0].double().numpy(), 4, p, q) for p, q in pairs]
    for k, d in enumerate(expected):
        res_in = M.pck_3d(pred, gt, d * 1.0001 + 1e-9, surface_points=cloud, geodesic=True, knn=4)
        res_out = M.pck_3d(
            pred, gt, max(d * 0.9999 - 1e-9, 0.0), surface_points=cloud, geodesic=True, knn=4
        )
        assert res_in.correct[0, k] and (not res_out.correct[0, k] or d == 0), (k, d)
    # positions snap to their nearest surface point
    snapped = M.pck_3d(
        cloud[:, pred[0]] + 1e-4,
        gt,
        expected[1] * 1.0001,
        surface_points=cloud,
        geodesic=True,
        knn=4,
    )
    assert snapped.correct[0, 1]


# ---------------------------------------------------------------------------
# bootstrap


def test_bootstrap_ci_is_deterministic_and_matches_normal_theory():
    rng = np.random.default_rng(1)
    values = rng.normal(2.0, 1.0, size=400)
    ci = M.bootstrap_ci(values, n_resamples=2000)
    assert ci == M.bootstrap_ci(values, n_resamples=2000)
    assert ci != M.bootstrap_ci(values, n_resamples=2000, seed=1)
    assert ci.value == pytest.approx(values.mean())
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert ci.low < ci.value < ci.high
    assert (ci.high - ci.low) / 2 == pytest.approx(half, rel=0.15)
    assert M.bootstrap_ci(np.full(10, 3.0)) == (3.0, 3.0, 3.0)
    med = M.bootstrap_ci(values, stat=np.median, level=0.5)
    assert med.value == pytest.approx(np.median(values)) and med.low <= med.high
    with pytest.raises(ValueError, match="NaN"):
        M.bootstrap_ci(np.array([1.0, np.nan]))


def test_paired_bootstrap_cancels_shared_target_difficulty():
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 5.0, size=200)
    a = difficulty + 0.3 + rng.normal(0, 0.1, size=200)
    b = difficulty
    paired = M.paired_bootstrap_ci(a, b)
    assert paired.value == pytest.approx(a.mean() - b.mean())
    assert 0 < paired.low < paired.value < paired.high
    unpaired_a, unpaired_b = M.bootstrap_ci(a), M.bootstrap_ci(b)
    assert unpaired_a.low < unpaired_b.high  # unpaired intervals overlap: no ordering visible
    assert M.paired_bootstrap_ci(b + 0.5, b) == pytest.approx((0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="same length"):
        M.paired_bootstrap_ci(a, b[:-1])


def test_guards_raise_clear_errors():
    cloud = torch.rand(1, 10, 3)
    idx = torch.tensor([[0, 1]])
    with pytest.raises(ValueError, match="non-negative"):
        M.pck_3d(idx, idx, -0.1, surface_points=cloud)
    with pytest.raises(ValueError, match="knn"):
        M.pck_3d(idx, idx, 0.1, surface_points=cloud, geodesic=True, knn=10)
    with pytest.raises(ValueError, match="indices must lie"):
        M.pck_3d(idx + 9, idx, 0.1, surface_points=cloud)
    with pytest.raises(ValueError, match="geodesic PCK needs"):
        M.pck_3d(cloud[:, :2], cloud[:, :2], 0.1, geodesic=True)
    with pytest.raises(ValueError, match="rel_tol"):
        M.emd(cloud, cloud, rel_tol=0.0)
    with pytest.raises(ValueError, match="level"):
        M.bootstrap_ci(np.ones(3), level=1.5)
    with pytest.raises(ValueError, match="lengths"):
        labels = torch.zeros(1, 10, dtype=torch.long)
        M.part_chamfer(cloud, labels, cloud, labels, x_lengths=torch.tensor([10]))
