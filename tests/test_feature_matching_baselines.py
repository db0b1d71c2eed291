"""Cross-fitting baselines and evaluation helpers of feature_matching (paper 001, Table 1),
checked against naive per-vertex loops and on analytic deformations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.core.metrics import chamfer_distance, emd
from backend.methods.feature_matching import train as train_mod
from backend.methods.feature_matching.baselines import (
    CrossFitConfig,
    arap_energy,
    arap_rotations,
    barycentric_points,
    cross_fit,
    laplacian_energy,
    mesh_edges,
)
from backend.methods.feature_matching.evaluate import part_emd, select_pairs
from tests.conftest import assert_close


def grid_mesh(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed box surface: the unit cube subdivided (float64 vertices, int64 faces)."""
    import trimesh

    box = trimesh.creation.box((0.6, 0.4, 0.5)).subdivide().subdivide()
    return torch.from_numpy(np.asarray(box.vertices)), torch.from_numpy(np.asarray(box.faces))


def neighbours(edges: torch.Tensor, v: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(v)]
    for i, j in edges.tolist():
        out[i].append(j)
        out[j].append(i)
    return out


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_mesh_edges_of_a_tetrahedron():
    faces = np.array([[0, 1, 2], [0, 3, 1], [1, 3, 2], [2, 3, 0]])
    assert mesh_edges(faces).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    with pytest.raises(ValueError, match=r"faces must be \(F, 3\)"):
        mesh_edges(np.zeros((2, 4), int))


def test_barycentric_points_against_loop():
    v, f = grid_mesh()
    rng = np.random.default_rng(0)
    fi = torch.from_numpy(rng.integers(0, len(f), 50))
    bary = torch.from_numpy(rng.dirichlet((1, 1, 1), 50))
    fast = barycentric_points(v, f, fi, bary)
    naive = [sum(float(bary[k, c]) * v[f[fi[k], c]].numpy() for c in range(3)) for k in range(50)]
    assert_close(fast, np.stack(naive), atol=1e-12)


def test_laplacian_energy_against_loop_and_translation_invariance():
    v0, f = grid_mesh()
    edges = mesh_edges(f)
    rng = np.random.default_rng(1)
    x = v0 + 0.02 * torch.from_numpy(rng.standard_normal(v0.shape))
    nb = neighbours(edges, len(v0))
    total = 0.0
    for i in range(len(v0)):
        lx = x[i].numpy() - np.mean([x[j].numpy() for j in nb[i]], axis=0)
        l0 = v0[i].numpy() - np.mean([v0[j].numpy() for j in nb[i]], axis=0)
        total += float(((lx - l0) ** 2).sum())
    assert_close(laplacian_energy(x, v0, edges), total / len(v0), rtol=1e-10)
    assert float(laplacian_energy(v0 + torch.tensor([0.3, -0.1, 0.2]), v0, edges)) < 1e-24


def test_arap_rotations_and_energy_against_loop():
    v0, f = grid_mesh()
    edges = mesh_edges(f)
    rng = np.random.default_rng(2)
    x = v0 * torch.tensor([1.3, 0.8, 1.0]) + 0.01 * torch.from_numpy(rng.standard_normal(v0.shape))
    rot = arap_rotations(x, v0, edges)
    nb = neighbours(edges, len(v0))
    total, count = 0.0, 0
    for i in range(len(v0)):
        s = sum(np.outer(v0[i] - v0[j], x[i] - x[j]) for j in nb[i])
        u, _, vt = np.linalg.svd(s)
        r = vt.T @ u.T
        if np.linalg.det(r) < 0:
            vv = vt.T.copy()
            vv[:, 2] *= -1
            r = vv @ u.T
        assert_close(rot[i], r, atol=1e-8, name=f"rotation {i}")
        for j in nb[i]:
            total += float((((x[i] - x[j]).numpy() - r @ (v0[i] - v0[j]).numpy()) ** 2).sum())
            count += 1
    assert_close(arap_energy(x, v0, edges, rot), total / count, rtol=1e-10)
    assert total > 0


def test_arap_energy_is_zero_for_rigid_motion():
    v0, f = grid_mesh()
    edges = mesh_edges(f)
    r = torch.from_numpy(random_rotation(np.random.default_rng(3)))
    x = v0 @ r.T + torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    rot = arap_rotations(x, v0, edges)
    assert_close(rot, r.expand(len(v0), 3, 3), atol=1e-9, name="recovered rotation")
    assert float(arap_energy(x, v0, edges, rot)) < 1e-20


def test_cross_fit_fits_target_and_regularisers_keep_rigidity():
    v0, f = grid_mesh()
    v0, f = v0.float(), f
    rng = np.random.default_rng(4)
    fi = torch.from_numpy(rng.integers(0, len(f), 400))
    bary = torch.from_numpy(rng.dirichlet((1, 1, 1), 400)).float()
    # target: the same box moved (both regularisers are zero on a translation)
    target = barycentric_points(v0 + torch.tensor([0.12, -0.08, 0.05]), f, fi, bary)
    src = barycentric_points(v0, f, fi, bary)
    before = float(chamfer_distance(src[None], target[None]).chamfer_mean[0])
    edges = mesh_edges(f)
    fitted = {}
    for reg, w in (("none", 0.0), ("laplacian", 10.0), ("arap", 10.0)):
        x = cross_fit(v0, f, fi, bary, target, CrossFitConfig(reg, weight=w, iterations=100,
                                                              lr=5e-3))
        fitted[reg] = x
        after = float(chamfer_distance(barycentric_points(x, f, fi, bary)[None],
                                       target[None]).chamfer_mean[0])
        assert after < 0.2 * before, reg
    # the regularisers keep the edges rigid: lower ARAP energy than free fitting
    e_free = arap_energy(fitted["none"], v0, edges, arap_rotations(fitted["none"], v0, edges))
    e_arap = arap_energy(fitted["arap"], v0, edges, arap_rotations(fitted["arap"], v0, edges))
    assert float(e_arap) < 0.5 * float(e_free)
    assert laplacian_energy(fitted["laplacian"], v0, edges) < laplacian_energy(fitted["none"], v0,
                                                                               edges)
    with pytest.raises(ValueError, match="regularizer must be one of"):
        CrossFitConfig("cage")


def test_part_emd_matches_per_label_emd():
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.random((40, 3)))
    y = torch.from_numpy(rng.random((40, 3)))
    lx = torch.tensor([0] * 20 + [1] * 20)
    ly = torch.tensor([0] * 20 + [2] * 20)  # only label 0 is shared
    value = part_emd(x, lx, y, ly, 256, np.random.default_rng(0))
    assert_close(value, float(emd(x[None, :20], y[None, :20])[0]), rtol=1e-9)
    assert part_emd(x, lx, x, lx, 256, np.random.default_rng(0)) < 1e-12
    assert np.isnan(part_emd(x, lx, y, ly + 5, 256, np.random.default_rng(0)))


def test_armchair_pairs_meet_the_condition():
    pairs = select_pairs("chair", 3, 0, lambda a, b: a.attributes["arms"] and not b.attributes["arms"])
    assert len(pairs) == 3
    assert all(a.attributes["arms"] and not b.attributes["arms"] for a, b in pairs)


def test_training_schedules():
    cpu = train_mod.TrainConfig.from_schedule("cpu", category="table", lr=None)
    assert (cpu.preset, cpu.batch_shapes, cpu.points_per_shape) == ("cpu", 8, 2048)
    assert cpu.category == "table" and cpu.extra["schedule"] == "cpu"
    assert cpu.sampling == "imnet"  # IM-Net's point sampling by default (session 26)
    paper = train_mod.TrainConfig.from_schedule("paper")
    assert (paper.preset, paper.batch_shapes, paper.lr) == ("paper", 32, 5e-5)
    assert train_mod.TrainConfig() == train_mod.TrainConfig(preset="paper", batch_shapes=32)
    with pytest.raises(ValueError, match="unknown schedule"):
        train_mod.TrainConfig.from_schedule("gpu")
