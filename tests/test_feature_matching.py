"""Tests of implicit feature matching (paper 001): fast paths against naive references."""

from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pytest
import torch
import trimesh

from backend.data.shapes import KEYPOINT_NAMES, generate_shape
from backend.methods.base import JobContext
from backend.methods.feature_matching import train as train_mod
from backend.methods.feature_matching.data import (
    build_training_set,
    category_seeds,
    cell_centers,
    sample_cells,
    subvoxel_points,
    subvoxel_samples,
    voxelize_mesh,
)
from backend.methods.feature_matching.matching import (
    MatchConfig,
    closest_point_on_triangles,
    decoder_field,
    gauss_newton_step,
    match_points,
    nearest_surface_points,
)
from backend.methods.feature_matching.method import FeatureMatching, library_target, part_colors
from backend.methods.feature_matching.model import (
    PRESETS,
    ImplicitDecoder,
    ImplicitModel,
    ModelConfig,
    auto_decode,
    export_fp16,
    load_checkpoint,
    save_checkpoint,
    soft_clip,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float = 0.0):
    """allclose that reports where the largest difference is."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    diff = (actual.double() - expected.double()).abs()
    bound = atol + rtol * expected.double().abs()
    if not bool((diff <= bound).all()):
        i = np.unravel_index(int(torch.argmax(diff - bound)), diff.shape)
        raise AssertionError(
            f"max excess at {tuple(int(j) for j in i)}: {float(actual[i])} vs "
            f"{float(expected[i])} (diff {float(diff[i]):.3e}, atol {atol}, rtol {rtol})"
        )


def tiny_decoder(seed: int = 0, dtype=torch.float64, device="cpu") -> ImplicitDecoder:
    torch.manual_seed(seed)
    dec = ImplicitDecoder(PRESETS["tiny"]).to(device=device, dtype=dtype)
    with torch.no_grad():  # larger weights than IM-Net's init so that kinks matter
        for lin in dec.linears:
            lin.weight.normal_(0.0, 0.5)
            lin.bias.normal_(0.0, 0.1)
    return dec


def naive_jacobian(dec: ImplicitDecoder, points, code, layers, weights) -> torch.Tensor:
    """Per-point reverse-mode autograd, one point at a time."""
    rows = []
    for p in points:
        def f(x):
            feats = dec.features(x[None], code, layers)
            return torch.cat([w * h[0] for w, h in zip(weights, feats, strict=True)])
        rows.append(torch.autograd.functional.jacobian(f, p))
    return torch.stack(rows)


# ------------------------------------------------------------------ model
def test_paper_decoder_widths_and_soft_clip():
    dec = ImplicitDecoder(PRESETS["paper"])
    shapes = [tuple(lin.weight.shape) for lin in dec.linears]
    assert shapes == [(1024, 259), (1024, 1024), (1024, 1024), (512, 1024), (256, 512),
                      (128, 256), (1, 128)]
    y = torch.tensor([-1.0, 0.0, 0.3, 1.0, 2.0])
    assert_close(soft_clip(y), torch.tensor([-0.01, 0.0, 0.3, 1.0, 1.0 + 0.01]), 1e-7)
    enc_code = ImplicitModel(PRESETS["tiny"]).encoder(torch.zeros(2, 64, 64, 64))
    assert enc_code.shape == (2, PRESETS["tiny"].code_dim)


def test_features_match_forward_and_batched_codes():
    dec = tiny_decoder()
    x = torch.rand(2, 9, 3, dtype=torch.float64) - 0.5
    z = torch.rand(2, 16, dtype=torch.float64)
    # the last hidden features times W_L reproduce the output
    (h6,) = dec.features(x, z, [6])
    assert_close(dec(x, z), soft_clip(dec.linears[-1](h6)).squeeze(-1), 1e-12)
    # the concatenated first layer equals W_1 (x (+) z)
    (h1,) = dec.features(x[0], z[0], [1])
    full = torch.cat([x[0], z[0].expand(9, 16)], 1) @ dec.linears[0].weight.T + dec.linears[0].bias
    assert_close(h1, torch.nn.functional.leaky_relu(full, 0.02), 1e-12)
    with pytest.raises(ValueError, match="layers must be in 1..6"):
        dec.features(x[0], z[0], [7])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layers,weights", [((3,), (1.0,)), ((3, 6), (1.0, 0.1)), ((1, 4, 6), (2, 1, 0.5))])
def test_jacobian_matches_finite_differences(device, layers, weights):
    dec = tiny_decoder(1, device=device)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(64, 3, generator=g, dtype=torch.float64) - 0.5).to(device)
    z = torch.rand(16, generator=g, dtype=torch.float64).to(device)
    _, jac = dec.features_and_jacobian(x, z, layers, weights)
    eps = 1e-6
    fd = []
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64, device=device)
        e[i] = eps
        fp, _ = dec.features_and_jacobian(x + e, z, layers, weights, with_jacobian=False)
        fm, _ = dec.features_and_jacobian(x - e, z, layers, weights, with_jacobian=False)
        fd.append((fp - fm) / (2 * eps))
    fd = torch.stack(fd, dim=-1)
    assert jac.shape == fd.shape == (64, fd.shape[1], 3)
    assert float(jac.detach().abs().max()) > 1e-2  # not trivially zero
    assert_close(jac.detach(), fd.detach(), atol=1e-6, rtol=1e-5)


def test_frame_scale_is_a_scaling_of_the_canonical_points():
    """A network with frame_scale s sees s x: its features equal those of the same weights
    with s = 1 at s x, and its Jacobian (w.r.t. canonical x) is s times theirs and matches
    finite differences; checkpoints written without the field load with s = 1."""
    plain = tiny_decoder(1).double()
    scaled = ImplicitDecoder(replace(plain.config, frame_scale=0.8)).double()
    scaled.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(5)
    x = torch.rand(40, 3, generator=g, dtype=torch.float64) - 0.5
    z = torch.rand(16, generator=g, dtype=torch.float64)
    f_s, j_s = scaled.features_and_jacobian(x, z, (3, 6), (1.0, 0.1))
    f_p, j_p = plain.features_and_jacobian(0.8 * x, z, (3, 6), (1.0, 0.1))
    assert_close(f_s, f_p, 1e-12)
    assert_close(j_s, 0.8 * j_p, 1e-12)
    assert_close(scaled(x, z), plain(0.8 * x, z), 1e-12)
    eps = 1e-6
    fd = torch.stack([(scaled.features_and_jacobian(x + e, z, (3, 6), (1.0, 0.1), False)[0]
                       - scaled.features_and_jacobian(x - e, z, (3, 6), (1.0, 0.1), False)[0])
                      / (2 * eps) for e in torch.eye(3, dtype=torch.float64) * eps], -1)
    assert_close(j_s.detach(), fd.detach(), atol=1e-6, rtol=1e-5)
    assert scaled.config.grid_half_extent == 0.625 and plain.config.grid_half_extent == 0.5
    old = plain.config.to_dict()
    del old["frame_scale"]
    assert ModelConfig.from_dict(old).frame_scale == 1.0
    with pytest.raises(ValueError, match="frame_scale"):
        ModelConfig(frame_scale=1.5)


@pytest.mark.parametrize("n", [1, 5, 17])
def test_jacobian_matches_naive_per_point_autograd(n):
    dec = tiny_decoder(2)
    x = torch.rand(n, 3, dtype=torch.float64) - 0.5
    z = torch.rand(16, dtype=torch.float64)
    feats, jac = dec.features_and_jacobian(x, z, (3, 6), (1.0, 0.1))
    naive = naive_jacobian(dec, x, z, (3, 6), (1.0, 0.1))
    assert_close(jac.detach(), naive.detach(), 1e-12)
    f3, f6 = dec.features(x, z, (3, 6))
    assert_close(feats.detach(), torch.cat([f3, 0.1 * f6], 1).detach(), 1e-12)


# ------------------------------------------------------------------ Gauss-Newton
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lam", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("n,c", [(1, 4), (37, 20), (200, 3)])
def test_gauss_newton_step_matches_per_point_solve(device, lam, n, c):
    g = torch.Generator().manual_seed(n + c)
    jac = torch.randn(n, c, 3, generator=g, dtype=torch.float64).to(device)
    res = torch.randn(n, c, generator=g, dtype=torch.float64).to(device)
    delta = torch.randn(n, 3, generator=g, dtype=torch.float64).to(device)
    fast = gauss_newton_step(jac, res, delta, lam)
    naive = []
    for i in range(n):  # Eq. 7-8: augmented system [J; lam I] s = -[dPhi; lam delta_n]
        a = torch.cat([jac[i], lam * torch.eye(3, dtype=torch.float64, device=device)])
        b = torch.cat([res[i], lam * delta[i]])
        s = torch.from_numpy(np.linalg.lstsq(a.cpu().numpy(), -b.cpu().numpy(), rcond=None)[0])
        naive.append(delta[i].cpu() + s)
    assert_close(fast.cpu(), torch.stack(naive), 1e-9, 1e-9)


def test_gauss_newton_solves_linear_features_and_penalty_shrinks():
    # Phi linear in x: one unregularised step lands exactly on the solution
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(10, 6, 3, generator=g, dtype=torch.float64)
    true = torch.randn(10, 3, generator=g, dtype=torch.float64)
    res = -(jac @ true.unsqueeze(-1)).squeeze(-1)  # dPhi at delta = 0
    assert_close(gauss_newton_step(jac, res, torch.zeros(10, 3, dtype=torch.float64), 0.0), true, 1e-10)
    shrunk = gauss_newton_step(jac, res, torch.zeros(10, 3, dtype=torch.float64), 1.0)
    assert bool((shrunk.norm(dim=1) < true.norm(dim=1)).all())


# ------------------------------------------------------------------ matching
def scale_field(points, code, with_jacobian):
    """Analytic features Phi(x; z) = (s x, (s x)^3), s = exp(z_0): the matched trajectory
    is x_t = x_0 exp(z_0(A) - z_0(t)), monotone in x_0."""
    s = torch.exp(code[0])
    u = s * points
    feats = torch.cat([u, u**3], dim=1)
    if not with_jacobian:
        return feats, None
    eye = torch.eye(3, dtype=points.dtype)
    j1 = s * eye.expand(len(points), 3, 3)
    j2 = (3 * u**2 * s).unsqueeze(-1) * eye
    return feats, torch.cat([j1, j2], dim=1)


@pytest.mark.parametrize("jacobian_at", ["start", "current"])
def test_trajectories_never_cross_on_analytic_field(jacobian_at):
    line = torch.linspace(-0.45, 0.45, 61, dtype=torch.float64)
    points = torch.stack([line, 0.3 * line, -0.2 * line + 0.1], dim=1)
    za = torch.tensor([0.0, 0.0], dtype=torch.float64)
    zb = torch.tensor([-0.7, 0.0], dtype=torch.float64)  # shapes grow by e^0.7
    times = np.linspace(0, 1, 51)
    cfg = MatchConfig(jacobian_at=jacobian_at)
    res = match_points(scale_field, points, za, zb, cfg, times)
    traj = res.trajectory
    order = torch.diff(traj[..., 0], dim=1)
    assert bool((order > 0).all()), "two trajectories crossed or met"
    # and the trajectory is the analytic one (the penalty lags it by < 1 %)
    expected = points * np.exp(0.7)
    assert_close(res.points, expected, atol=0.01 * 0.45 * np.exp(0.7))
    assert_close(traj[0], points, 0.0)
    assert_close(traj[-1], res.points, 0.0)


def test_match_points_chunking_and_network_no_collapse():
    dec = tiny_decoder(4, dtype=torch.float32)
    x = torch.rand(300, 3) - 0.5
    za, zb = torch.rand(16), torch.rand(16)
    field = decoder_field(dec, (3, 6), (1.0, 0.1))
    cfg = MatchConfig(steps=10)
    whole = match_points(field, x, za, zb, cfg, [0.0, 0.5, 1.0])
    parts = match_points(field, x, za, zb, MatchConfig(steps=10, chunk_size=64), [0.0, 0.5, 1.0])
    assert_close(parts.trajectory, whole.trajectory, 1e-6)
    assert np.allclose(whole.times, [0, 0.5, 1])
    assert float((whole.points - x).norm(dim=1).mean()) > 1e-3  # points moved
    d = torch.cdist(whole.points, whole.points) + torch.eye(300) * 1e9
    assert float(d.min()) > 1e-6  # distinct points stay distinct
    with pytest.raises(ValueError, match="record times"):
        match_points(field, x, za, zb, cfg, [1.5])


# ------------------------------------------------------------------ geometry
def test_closest_point_and_nearest_surface_against_brute_force():
    mesh = generate_shape("chair", 7).mesh()
    v, f = mesh.vertices.astype(np.float64), mesh.faces.astype(np.int64)
    rng = np.random.default_rng(0)
    q = rng.uniform(-0.6, 0.6, (200, 3))
    tri = v[f]
    # brute force: closest point on every face, then dense barycentric check of one face
    allc = closest_point_on_triangles(
        np.repeat(q, len(f), 0), np.tile(tri[:, 0], (len(q), 1)), np.tile(tri[:, 1], (len(q), 1)),
        np.tile(tri[:, 2], (len(q), 1))).reshape(len(q), len(f), 3)
    dist = np.linalg.norm(allc - q[:, None], axis=2)
    closest, face = nearest_surface_points(q, v, f)
    assert np.allclose(np.linalg.norm(closest - q, axis=1), dist.min(axis=1), atol=1e-9)
    assert np.allclose(dist[np.arange(len(q)), face], dist.min(axis=1), atol=1e-9)
    # the triangle routine itself against dense barycentric samples
    a, b, c = tri[3]
    w = rng.dirichlet(np.ones(3), 20000)
    dense = w @ np.stack([a, b, c])
    for p in q[:20]:
        cp = closest_point_on_triangles(p[None], a[None], b[None], c[None])[0]
        assert np.linalg.norm(cp - p) <= np.linalg.norm(dense - p, axis=1).min() + 1e-12


@pytest.mark.parametrize("category", ["chair", "table", "airplane"])
@pytest.mark.parametrize("half_extent", [0.5, 0.625])
def test_voxelize_mesh_matches_analytic_occupancy(category, half_extent):
    shape = generate_shape(category, 11)
    mesh = shape.mesh()
    vox = voxelize_mesh(mesh.vertices, mesh.faces, 32, half_extent)
    gt = shape.occupancy_grid(32, half_extent)
    assert gt.sum() > 0
    assert (vox != gt).sum() <= 0.002 * gt.size


def test_sample_cells_keep_surface_cells_and_centres():
    occ = np.zeros((16, 16, 16), bool)
    occ[3:9, 2:12, 5:10] = True
    occ[12, 12, 12] = True
    near = set()  # naive: cells whose 3x3x3 neighbourhood (clipped to the grid) is mixed
    for i, j, k in np.ndindex(occ.shape):
        box = occ[max(i - 1, 0):i + 2, max(j - 1, 0):j + 2, max(k - 1, 0):k + 2]
        if box.any() and not box.all():
            near.add(i * 256 + j * 16 + k)
    idx = sample_cells(occ, len(near) + 100, np.random.default_rng(0))
    assert len(np.unique(idx)) == len(near) + 100
    assert near <= set(idx.tolist())
    sub = sample_cells(occ, 50, np.random.default_rng(0))
    assert set(sub.tolist()) <= near
    assert np.array_equal(sample_cells(occ, 4096, np.random.default_rng(0)), np.arange(4096))
    pts = cell_centers(idx, 16)
    assert float(pts.abs().max()) < 0.5
    # centre of flat index -> grid coordinates
    assert_close(cell_centers(torch.tensor([0]), 16)[0], torch.tensor([-0.5 + 1 / 32] * 3), 1e-7)
    # a network grid over [-h, h]^3: the same cells, scaled
    assert_close(cell_centers(idx, 16, 0.625), pts * 1.25, 1e-6)
    assert_close(cell_centers(torch.tensor([16**3 - 1]), 16, 0.625)[0],
                 torch.tensor([0.625 - 1.25 / 32] * 3), 1e-6)


def test_subvoxel_samples_against_a_naive_loop():
    """IM-Net's sampling: a cell is occupied when any fine voxel is; its point is a fine
    voxel of the cell with the cell's label; near-surface cells first; a slab one fine
    voxel thin, which no cell centre hits, is kept."""
    fine = np.zeros((32, 32, 32), bool)
    fine[4:20, 8:24, 10:26] = True
    fine[27, 2:30, 2:30] = True  # a slab in fine units [27, 28): the centre of its cell (26) misses it
    r, m = 8, 4
    coarse = np.zeros((r, r, r), bool)  # naive max-pooling
    for i, j, k in np.ndindex(coarse.shape):
        coarse[i, j, k] = fine[i * m:(i + 1) * m, j * m:(j + 1) * m, k * m:(k + 1) * m].any()
    assert coarse[6].any()  # the slab's cells are occupied
    cells, points, values = subvoxel_samples(fine, r, 200, np.random.default_rng(0))
    assert np.array_equal(cells, sample_cells(coarse, 200, np.random.default_rng(0)))
    for c, p, v in zip(cells, points, values, strict=True):
        i, j, k = c // (r * r), (c // r) % r, c % r
        assert v == coarse[i, j, k]
        assert np.array_equal(p // m, [i, j, k])  # the point lies in its cell
        assert fine[tuple(p)] == v  # with the exact label
    assert values.any() and not values.all() and set(points[values][:, 0]) >= {27}
    # every cell once, points spread inside the cells (not all at one sub-position)
    cells, points, _ = subvoxel_samples(fine, r, r**3, np.random.default_rng(1))
    assert np.array_equal(cells, np.arange(r**3)) and len(np.unique(points % m, axis=0)) > 10
    assert_close(subvoxel_points(torch.tensor([[0, 0, 0], [255, 255, 255]]), 256, 0.5),
                 torch.tensor([[-0.5 + 1 / 512] * 3, [0.5 - 1 / 512] * 3]), 1e-7)
    with pytest.raises(ValueError, match="multiple"):
        subvoxel_samples(fine, 5, 10, np.random.default_rng(0))


def test_imnet_training_set_labels_are_exact_and_training_records_the_sampling():
    seeds = category_seeds("chair", "train", 2)
    data = build_training_set("chair", seeds, counts=(4096, 4096, 4096), half_extent=0.625,
                              sampling="imnet")
    shape = generate_shape("chair", seeds[1])
    assert np.array_equal(data.voxels[1], shape.occupancy_grid(64, 0.625))  # encoder input
    for j, r in enumerate((16, 32, 64)):
        pts = subvoxel_points(torch.from_numpy(data.points[j][1]), 256, 0.625).numpy()
        assert np.array_equal(data.occupancy[j][1], shape.occupancy(pts))
        # each point lies in its cell of the r^3 grid
        assert np.array_equal(data.points[j][1].astype(int) // (256 // r),
                              np.stack(np.unravel_index(data.cells[j][1], (r, r, r)), 1))
    # the dilated cells make more occupied samples than cell centres give
    centre = build_training_set("chair", seeds, counts=(4096, 4096, 4096), half_extent=0.625)
    assert data.occupancy[0].mean() > centre.occupancy[0].mean() and centre.points is None
    with pytest.raises(ValueError, match="sampling"):
        build_training_set("chair", seeds[:1], sampling="jitter")
    cfg = train_mod.TrainConfig(preset="tiny", shapes=2, phase_iterations=(1, 1, 1), batch_shapes=2,
                                points_per_shape=256, log_every=1, counts=(4096, 4096, 4096),
                                sampling="imnet")
    model, record = train_mod.train(cfg, log=None)
    assert record["steps"] == 3 and record["config"]["sampling"] == "imnet"
    assert all(np.isfinite(h[2]) for h in record["history"])
    with pytest.raises(ValueError, match="sampling"):
        train_mod.TrainConfig(sampling="jitter")


# ------------------------------------------------------------------ codes, training
def test_auto_decode_reduces_occupancy_error():
    torch.manual_seed(0)
    model = ImplicitModel(PRESETS["tiny"])
    with torch.no_grad():
        for lin in model.decoder.linears:
            lin.weight.normal_(0.0, 0.4)
    x = torch.rand(2000, 3) - 0.5
    z_true = torch.rand(16)
    with torch.no_grad():
        occ = (model.decoder(x, z_true) > 0.5).float()
    z0 = torch.rand(16)
    with torch.no_grad():
        start = float(((model.decoder(x, z0) - occ) ** 2).mean())
    z, loss = auto_decode(model.decoder, x, occ, z0, steps=150, lr=0.05)
    assert loss < 0.5 * start
    assert all(p.requires_grad for p in model.decoder.parameters())


def test_two_step_training_and_checkpoint_round_trip(tmp_path):
    cfg = train_mod.TrainConfig(preset="tiny", shapes=3, phase_iterations=(1, 0, 1), batch_shapes=2,
                                points_per_shape=512, log_every=1, counts=(4096, 4096, 4096))
    torch.manual_seed(cfg.seed)
    before = ImplicitModel(PRESETS["tiny"]).state_dict()
    model, record = train_mod.train(cfg, log=None)
    assert record["steps"] == 2 and len(record["history"]) == 2
    assert 0.0 <= record["val_iou_32"] <= 1.0 and record["steps_per_second"] > 0
    assert all(np.isfinite(h[2]) for h in record["history"])
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the optimiser moved
    path = tmp_path / "chair.pt"
    save_checkpoint(path, model, record)
    loaded, meta = load_checkpoint(path)
    x, vox = torch.rand(1, 50, 3) - 0.5, torch.zeros(1, 64, 64, 64)
    vox[0, 20:40, 20:40, 20:40] = 1
    assert_close(loaded(vox, x), model(vox, x).detach(), 0.0)
    assert meta["category"] == "chair"
    with pytest.raises(FileNotFoundError, match="shapebridge train feature_matching"):
        load_checkpoint(tmp_path / "missing.pt")
    # fp16 storage: about half the bytes, read back into fp32, outputs within fp16 rounding
    half = export_fp16(path, tmp_path / "chair_fp16.pt")
    small, meta16 = load_checkpoint(half)
    assert meta16["storage"] == "fp16" and "storage" not in meta
    assert half.stat().st_size < 0.6 * path.stat().st_size
    assert all(p.dtype == torch.float32 for p in small.parameters())
    assert_close(small(vox, x), model(vox, x).detach(), 2e-3)
    assert not torch.equal(small(vox, x), model(vox, x).detach())
    with pytest.raises(ValueError, match="another file"):
        export_fp16(path, path)


def test_train_cli_writes_checkpoint_and_card(tmp_path):
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    out = tmp_path / "table.pt"
    args = parser.parse_args(["--category", "table", "--preset", "tiny", "--shapes", "2", "--iterations",
                              "1,1,0", "--batch", "2", "--points", "256", "--out", str(out)])
    assert train_mod.run(args) == 0
    assert out.is_file() and out.with_suffix(".md").is_file() and out.with_suffix(".json").is_file()
    bad = parser.parse_args(["--iterations", "1,2"])
    assert train_mod.run(bad) == 2


@pytest.mark.parametrize("half_extent", [0.5, 0.625])
def test_training_set_samples_are_consistent(half_extent):
    seeds = category_seeds("chair", "train", 2)
    data = build_training_set("chair", seeds, counts=(4096, 4096, 4096), half_extent=half_extent)
    shape = generate_shape("chair", seeds[1])
    grid = shape.occupancy_grid(64, half_extent)
    assert np.array_equal(data.voxels[1], grid)
    assert np.array_equal(data.occupancy[2][1], grid.reshape(-1)[data.cells[2][1]])
    assert 0 < data.occupancy[2][1].mean() < 1  # surface-biased: both classes present
    # the stored 16^3 cells hold the shape's occupancy at their canonical centres
    centres = cell_centers(torch.from_numpy(data.cells[0][1]), 16, half_extent).numpy()
    assert np.array_equal(data.occupancy[0][1], shape.occupancy(centres))


def test_training_with_a_frame_margin_records_it(tmp_path):
    cfg = train_mod.TrainConfig(preset="tiny", shapes=2, phase_iterations=(1, 0, 1), batch_shapes=2,
                                points_per_shape=256, log_every=1, counts=(4096, 4096, 4096),
                                frame_scale=0.8)
    model, record = train_mod.train(cfg, log=None)
    assert model.config.frame_scale == 0.8 and record["model"]["frame_scale"] == 0.8
    save_checkpoint(tmp_path / "m.pt", model, record)
    assert load_checkpoint(tmp_path / "m.pt")[0].config.grid_half_extent == 0.625
    with pytest.raises(ValueError, match="frame_scale"):
        train_mod.TrainConfig(preset="tiny", frame_scale=0.0)


# ------------------------------------------------------------------ Method API
def chair_inputs(frame_rotation: bool):
    a, b = generate_shape("chair", 1).mesh(), generate_shape("chair", 2).mesh()
    parts = b.face_parts
    va, vb = a.vertices, b.vertices
    if frame_rotation:  # canonical -> Blender local (x, y, z) -> (x, -z, y), scaled and moved
        va = (va @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)) * 2 + 1
        vb = vb @ np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], np.float32)
    return {"source.vertices": va, "source.faces": a.faces, "target.vertices": vb,
            "target.faces": b.faces, "target.face_parts": parts}


@pytest.mark.parametrize("frame", ["blender", "canonical"])
def test_method_infer_untrained(frame):
    inputs = chair_inputs(frame == "blender")
    method = FeatureMatching()
    cfg = FeatureMatching.validate(inputs, {"steps": 4, "shape_keys": 5, "input_frame": frame,
                                            "category": "cabinet"})
    fractions = []
    ctx = JobContext("t", report=lambda f, *a: fractions.append(f))
    result = method.infer(inputs, cfg, ctx)
    assert "no checkpoint loaded" in result.info["warning"]
    out = result.outputs[0]
    v = inputs["source.vertices"]
    assert out.arrays["shape_keys"].shape == (5, len(v), 3)
    assert np.allclose(out.arrays["shape_keys"][0], v, atol=1e-5)  # t = 0 is the source
    assert out.meta["shape_key_names"] == ["t=0.00", "t=0.25", "t=0.50", "t=0.75", "t=1.00"]
    assert out.meta["shape_key_times"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert out.meta["trajectory_slider"] is True
    colors = out.arrays["colors"]
    assert colors.shape == (len(v), 4) and colors.min() >= 0 and colors.max() <= 1
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    # more keys than steps: keys stay on the step grid without repeats
    few = method.infer(inputs, FeatureMatching.validate(inputs, {"steps": 2, "shape_keys": 11,
                                                                 "input_frame": frame,
                                                                 "category": "cabinet"}), ctx)
    assert few.outputs[0].meta["shape_key_times"] == [0.0, 0.5, 1.0]
    assert few.outputs[0].arrays["shape_keys"].shape == (3, len(v), 3)
    with pytest.raises(ValueError, match="fine_layer equals layer"):
        method.infer(inputs, FeatureMatching.validate(inputs, {"fine_layer": 3}), ctx)


def test_method_library_target():
    inputs = {k: v for k, v in chair_inputs(False).items() if k.startswith("source.")}
    method = FeatureMatching()
    ctx = JobContext("t", report=lambda *a: None)
    cfg = FeatureMatching.validate(inputs, {"steps": 2, "shape_keys": 3, "input_frame": "canonical",
                                            "category": "cabinet", "target_shape": "chair:7"})
    out = method.infer(inputs, cfg, ctx).outputs[0]
    v, f, parts = library_target("chair:7", "cabinet")
    assert len(np.unique(parts)) > 2  # semantic parts of the built-in chair colour the result
    assert out.arrays["colors"].shape == (len(inputs["source.vertices"]), 4)
    assert len(np.unique(out.arrays["colors"], axis=0)) > 1
    assert library_target("", "table")[0].shape[1] == 3
    with pytest.raises(ValueError, match="target_shape must be"):
        library_target("sofa:1", "chair")
    with pytest.raises(ValueError, match="target_shape must be"):
        library_target("chair", "chair")


def test_method_user_library_target(tmp_path):
    from backend.methods.retrieval_deformation.library import folder_library

    seat = trimesh.creation.box((0.8, 0.1, 0.8))
    seat.apply_translation((0.0, 0.45, 0.0))
    leg = trimesh.creation.box((0.1, 0.9, 0.1))
    obj = ["g seat", *(f"v {x} {y} {z}" for x, y, z in seat.vertices),
           *(f"f {a + 1} {b + 1} {c + 1}" for a, b, c in seat.faces), "g leg",
           *(f"v {x} {y} {z}" for x, y, z in leg.vertices),
           *(f"f {a + 9} {b + 9} {c + 9}" for a, b, c in leg.faces)]
    (tmp_path / "meshes").mkdir()
    (tmp_path / "meshes" / "stool.obj").write_text("\n".join(obj) + "\n")
    lib_dir = tmp_path / "lib:v1"  # a ':' in the folder name still parses
    folder_library(tmp_path / "meshes", n_points=64).save(lib_dir)
    v, f, parts = library_target(f"{lib_dir}:stool", "chair")
    assert v.shape == (16, 3) and f.shape == (24, 3) and sorted(np.unique(parts)) == [0, 1]
    with pytest.raises(ValueError, match="no shape named 'table'.*stool"):
        library_target(f"{lib_dir}:table", "chair")
    with pytest.raises(ValueError, match="library folder"):
        library_target(f"{tmp_path}:stool", "chair")  # not an indexed library

    inputs = {k: val for k, val in chair_inputs(False).items() if k.startswith("source.")}
    cfg = FeatureMatching.validate(inputs, {"steps": 2, "shape_keys": 2, "input_frame": "canonical",
                                            "target_shape": f"{lib_dir}:stool"})
    out = FeatureMatching().infer(inputs, cfg, JobContext("t", report=lambda *a: None)).outputs[0]
    colours = np.unique(out.arrays["colors"], axis=0)
    assert 1 <= len(colours) <= 2 and np.all(np.isin(colours[:, :3], part_colors(np.arange(2))[:, :3]))


def test_evaluate_cli_on_a_tiny_checkpoint(tmp_path):
    from backend.methods.feature_matching import evaluate

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "chair.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    out = tmp_path / "fm.json"
    args = parser.parse_args(["--checkpoint-dir", str(tmp_path), "--pairs", "1", "--points", "128",
                              "--steps", "2", "--fit-iterations", "2", "--fig6-pairs", "1",
                              "--json", str(out)])
    assert evaluate.run(args) == 0
    text = out.read_text()
    for metric in ("part CD", "part EMD", "EMD", "keypoint error", "CD to target"):
        assert metric in text
    for variant in ("cross-fit + ARAP", "cross-fit + Laplacian", "armchair->no-arm", "layer 6 only",
                    "ours - cross-fit + ARAP", "ours / nearest neighbour"):
        assert variant in text
    assert (tmp_path / "fm_layers.png").is_file()
    assert evaluate.run(parser.parse_args(["--checkpoint-dir", str(tmp_path / "none")])) == 2
    assert evaluate.run(parser.parse_args(["--categories", "sofa"])) == 2


def test_evaluate_shards_fill_a_cache_that_the_final_run_reuses(tmp_path, capsys):
    import json

    from backend.methods.feature_matching import evaluate

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "chair.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    base = ["--checkpoint-dir", str(tmp_path), "--pairs", "2", "--points", "96", "--steps", "2", "--max-edge", "0.5",
            "--fit-iterations", "2", "--fig6-pairs", "1"]
    cache = tmp_path / "pairs.jsonl"
    assert evaluate.run(parser.parse_args(base + ["--shard", "0/2"])) == 2  # needs --cache
    assert evaluate.run(parser.parse_args(base + ["--cache", str(cache), "--shard", "2/2"])) == 2
    for i in (0, 1):
        args = base + ["--cache", str(cache), "--shard", f"{i}/2", "--json", str(tmp_path / "x.json")]
        assert evaluate.run(parser.parse_args(args)) == 0
    assert not (tmp_path / "x.json").exists()  # shards write no tables
    entries = [json.loads(line) for line in cache.read_text().splitlines()]
    keys = [(e["fingerprint"], e["key"]) for e in entries]
    # 2 random + 2 armchair pairs (network rows and baseline rows apart), 6 layers x 1
    # Figure 6 pair; each computed exactly once
    assert len(keys) == 2 * (2 + 2) + 6 and len(set(keys)) == len(keys)
    assert sum(e["fingerprint"].endswith("|baselines") for e in entries) == 2 + 2
    with open(cache, "a") as fh:
        fh.write('{"fingerprint": "cut sho')  # a shard killed mid-write
    capsys.readouterr()
    assert evaluate.run(parser.parse_args(base + ["--cache", str(cache), "--json",
                                                  str(tmp_path / "cached.json")])) == 0
    assert "pair " not in capsys.readouterr().out  # nothing recomputed
    assert evaluate.run(parser.parse_args(base + ["--json", str(tmp_path / "fresh.json")])) == 0
    capsys.readouterr()
    assert evaluate.run(parser.parse_args(base + ["--cache", str(cache), "--armchair-pairs", "1",
                                                  "--json", str(tmp_path / "arm1.json")])) == 0
    assert "pair " not in capsys.readouterr().out  # the first armchair pair is cached too
    arm1 = json.loads((tmp_path / "arm1.json").read_text())["rows"]
    assert {r["n"] for r in arm1 if r["condition"] == "armchair->no-arm"} == {1}
    assert {r["n"] for r in arm1 if r["condition"] == "random test pairs"} == {2}
    assert evaluate.run(parser.parse_args(base + ["--armchair-pairs", "-1"])) == 2
    cached = json.loads((tmp_path / "cached.json").read_text())["rows"]
    fresh = json.loads((tmp_path / "fresh.json").read_text())["rows"]
    assert cached == fresh and any(r["n"] == 2 for r in cached)
    # a retrained checkpoint recomputes only its own rows: the baselines come from the cache
    torch.manual_seed(1)
    (tmp_path / "v2").mkdir()
    save_checkpoint(tmp_path / "v2" / "chair.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    before = len(cache.read_text().splitlines())
    assert evaluate.run(parser.parse_args(base[:-1] + ["0", "--cache", str(cache), "--checkpoint-dir",
                                                       str(tmp_path / "v2"), "--json", str(tmp_path / "v2.json")])) == 0
    added = [json.loads(line) for line in cache.read_text().splitlines()[before:]]
    assert len(added) == 2 + 2 and not any(e["fingerprint"].endswith("|baselines") for e in added)
    assert all(all(n.startswith("ours/") for n in e["values"]) for e in added)
    v2 = json.loads((tmp_path / "v2.json").read_text())["rows"]

    def network_free(rows):  # the rows that do not involve the network (paired rows do)
        return [r for r in rows if not r["variant"].startswith("ours")]

    assert network_free(v2) == [r for r in network_free(cached) if r["condition"] != "Figure 6"]
    assert [r for r in v2 if r["variant"] == "ours"] != [r for r in cached if r["variant"] == "ours"]
    # --append: the new checkpoint's random-pair rows replace the old ones; the armchair and
    # Figure 6 rows this run does not write stay, and both commands are recorded
    merged = tmp_path / "merged.json"
    merged.write_text((tmp_path / "cached.json").read_text())
    assert evaluate.run(parser.parse_args(base[:-1] + ["0", "--armchair-pairs", "0", "--cache", str(cache),
                                                       "--checkpoint-dir", str(tmp_path / "v2"),
                                                       "--json", str(merged), "--append"])) == 0
    doc = json.loads(merged.read_text())
    random_rows = [r for r in doc["rows"] if r["condition"] == "random test pairs"]
    assert random_rows == [r for r in v2 if r["condition"] == "random test pairs"]
    assert [r for r in doc["rows"] if r["condition"] != "random test pairs"] == [
        r for r in cached if r["condition"] != "random test pairs"]
    assert {r["condition"] for r in doc["rows"]} == {"random test pairs", "armchair->no-arm", "Figure 6"}
    assert len(doc["command"].split(" ;; ")) == 2
    (tmp_path / "broken.json").write_text("{not json")
    capsys.readouterr()
    assert evaluate.run(parser.parse_args(base + ["--append", "--json", str(tmp_path / "broken.json")])) == 2
    out = capsys.readouterr().out
    assert "broken.json is not a results file" in out and "pair " not in out  # refused first
    # other settings do not reuse these pairs
    capsys.readouterr()
    assert evaluate.run(parser.parse_args(base[:-1] + ["0", "--cache", str(cache),
                                                       "--fit-iterations", "3"])) == 0
    assert "pair 1/2" in capsys.readouterr().out
    # --cached-only writes what the cache holds and computes nothing
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(cache.read_text().splitlines()[:2]) + "\n")  # pair 0: both halves
    capsys.readouterr()
    assert evaluate.run(parser.parse_args(base + ["--cache", str(partial), "--cached-only",
                                                  "--json", str(tmp_path / "p.json")])) == 0
    assert "pair " not in capsys.readouterr().out
    rows = json.loads((tmp_path / "p.json").read_text())["rows"]
    assert rows and all(r["n"] == 1 for r in rows)
    assert evaluate.run(parser.parse_args(base + ["--cached-only"])) == 2


def test_evaluation_with_auto_decoded_codes(tmp_path, capsys):
    """--code-from autodecode: each shape's code is refined once (fits its occupancy better
    than the encoder's), kept in the cache and shared by shards; the rows get their own
    conditions; the baselines and the encoder-code fingerprints are not affected."""
    import json

    from backend.methods.feature_matching import evaluate

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "chair.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    path = tmp_path / "chair.pt"
    encoder, auto = evaluate.EvalConfig(), evaluate.EvalConfig(code_from="autodecode")
    assert evaluate.fingerprint(path, encoder) == evaluate.fingerprint(
        path, evaluate.EvalConfig(autodecode_steps=7))  # unused settings do not count
    assert evaluate.fingerprint(path, encoder) != evaluate.fingerprint(path, auto)
    assert evaluate.fingerprint(path, auto) != evaluate.fingerprint(
        path, evaluate.EvalConfig(code_from="autodecode", autodecode_steps=7))
    assert evaluate.fingerprint(None, encoder) == evaluate.fingerprint(None, auto)
    with pytest.raises(ValueError, match="code_from"):
        evaluate.EvalConfig(code_from="mean")

    model, _ = load_checkpoint(evaluate.DEFAULT_ZOO / "chair.pt", "cpu")  # a trained network
    shape = evaluate.select_pairs("chair", 1, 0)[0][0]
    voxels = model.shape_voxels(shape)
    with torch.no_grad():
        z0 = model.encoder(voxels[None])[0]
    idx = sample_cells(voxels.numpy(), 512, np.random.default_rng(shape.seed))
    points = cell_centers(idx, 64, model.config.grid_half_extent)
    occupancy = torch.from_numpy(voxels.numpy().reshape(-1)[idx]).float()
    z = evaluate.refined_code(model, voxels, z0, 20, shape.seed, samples=512)

    def mse(code):
        with torch.no_grad():
            return float(((model.decoder(points, code) - occupancy) ** 2).mean())

    assert mse(z) < mse(z0)
    codes = evaluate.PairCodes(model, evaluate.EvalConfig(code_from="autodecode", autodecode_steps=20,
                                                          autodecode_samples=512), "cpu")
    assert torch.equal(codes.refined(shape), z)

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    cache = tmp_path / "pairs.jsonl"
    base = ["--checkpoint-dir", str(tmp_path), "--pairs", "2", "--points", "96", "--steps", "2",
            "--max-edge", "0.5", "--fit-iterations", "2", "--fig6-pairs", "0", "--cache", str(cache),
            "--code-from", "autodecode", "--autodecode-steps", "3", "--autodecode-samples", "256"]
    for i in (0, 1):
        assert evaluate.run(parser.parse_args(base + ["--shard", f"{i}/2"])) == 0
    entries = [json.loads(line) for line in cache.read_text().splitlines()]
    code_keys = [e["key"] for e in entries if e["key"].startswith("code|")]
    shapes = {(s.category, s.seed) for c in (None, evaluate.armchair_to_no_arm)
              for pair in evaluate.select_pairs("chair", 2, 0, c) for s in pair}
    assert len(code_keys) == len(set(code_keys)) == len(shapes)  # each code computed once
    assert all(len(e["values"]["code"]) == PRESETS["tiny"].code_dim
               for e in entries if e["key"].startswith("code|"))
    capsys.readouterr()
    out = tmp_path / "auto.json"
    assert evaluate.run(parser.parse_args(base + ["--json", str(out)])) == 0
    assert "pair " not in capsys.readouterr().out  # everything came from the cache
    rows = json.loads(out.read_text())["rows"]
    assert {r["condition"] for r in rows} == {"random test pairs, auto-decoded codes",
                                              "armchair->no-arm, auto-decoded codes"}
    # the baseline rows were computed once and are those of an encoder-code run
    assert evaluate.run(parser.parse_args(base[:-6] + ["--json", str(tmp_path / "enc.json")])) == 0
    assert "pair 1/2" in capsys.readouterr().out  # the network rows are computed again ...
    added = [json.loads(line) for line in cache.read_text().splitlines()[len(entries):]]
    assert added and not any(e["fingerprint"].endswith("|baselines") for e in added)  # ... only they
    enc = json.loads((tmp_path / "enc.json").read_text())["rows"]

    def rows_of(rows, variant):
        return [(r["condition"].split(",")[0], r["metric"], r["value"]) for r in rows if r["variant"] == variant]

    assert rows_of(enc, "cross-fit + ARAP") == rows_of(rows, "cross-fit + ARAP")
    assert rows_of(enc, "ours") != rows_of(rows, "ours")


def test_committed_encoder_caches_keep_their_fingerprint():
    """The code settings added in session 26 leave the fingerprints of encoder-code runs as
    they were: the committed chair cache still answers the default evaluation."""
    from pathlib import Path

    from backend.methods.feature_matching import evaluate

    root = Path(__file__).resolve().parents[1]
    text = (root / "benchmarks/results/fm_eval_cache/chair.jsonl").read_text()
    config = evaluate.EvalConfig()
    mine = evaluate.fingerprint(root / "backend/zoo/feature_matching/chair.pt", config)
    assert text.count(f'"{mine}|random test pairs"') == 100
    assert text.count(f'"{evaluate.fingerprint(None, config)}|random test pairs|baselines"') == 100


def test_decoder_init_options():
    """IM-Net init (paper preset): N(0, 0.02) everywhere; the CPU preset's He init with a
    10x position gain on the first layer's x, y, z columns; bad names are refused."""
    from backend.methods.feature_matching.model import PRESETS, ImplicitDecoder, ModelConfig

    torch.manual_seed(0)
    paper = ImplicitDecoder(ModelConfig(widths=(512, 512), code_dim=256))
    assert abs(float(paper.linears[1].weight.detach().std()) - 0.02) < 2e-3
    cpu = ImplicitDecoder(PRESETS["cpu"]).requires_grad_(False)
    he = (2.0 / (1 + 0.02**2) / 256) ** 0.5
    assert abs(float(cpu.linears[1].weight.std()) - he) < 0.1 * he
    w0 = cpu.linears[0].weight
    he0 = (2.0 / (1 + 0.02**2) / w0.shape[1]) ** 0.5
    assert abs(float(w0[:, 3:].std()) - he0) < 0.1 * he0
    assert abs(float(w0[:, :3].std()) - 10 * he0) < 1.0 * he0
    assert abs(float(cpu.linears[-1].weight.std()) - 0.02) < 0.01  # output layer: IM-Net's
    with pytest.raises(ValueError, match="init"):
        ModelConfig(init="xavier")
    with pytest.raises(ValueError, match="code_activation"):
        ModelConfig(code_activation="tanh")


def test_pair_cache_written_before_the_baseline_split_is_reused_whole(tmp_path):
    """Caches that keep every row under the checkpoint's fingerprint (sessions before the
    split) still answer both halves: nothing is recomputed, the values are the same."""
    from backend.methods.feature_matching import evaluate
    from backend.methods.feature_matching.baselines import CrossFitConfig

    torch.manual_seed(0)
    model = ImplicitModel(PRESETS["tiny"]).eval()
    config = evaluate.EvalConfig(points=64, max_edge=0.5, match=MatchConfig(steps=2),
                                 baselines={"cross-fit": CrossFitConfig("none", iterations=2)})
    pairs = evaluate.select_pairs("chair", 1, 0)
    old = evaluate.PairCache(tmp_path / "old.jsonl")
    first = evaluate.evaluate_pairs(model, pairs, config, "cpu", cache=old, cache_scope="m")
    assert len(old.path.read_text().splitlines()) == 1  # one entry holding every row
    logged: list[str] = []
    again = evaluate.evaluate_pairs(model, pairs, config, "cpu", logged.append,
                                    evaluate.PairCache(old.path), "m", baseline_scope="b")
    assert not logged and again == first
    assert set(first) >= {"ours/CD", "source/CD", "cross-fit/part CD"}


def benchmark_script(name: str):
    """The module of ``benchmarks/<name>.py``, loaded with its folder on sys.path (the
    scripts import each other by name)."""
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


def test_checkpoint_gate_compares_two_checkpoints_on_the_same_pairs(tmp_path):
    """benchmarks/fm_gate.py: one row per checkpoint, the same checkpoint twice gives the
    same figures, a different one different part CD; the pair wins add up."""
    from backend.methods.feature_matching import evaluate

    gate = benchmark_script("fm_gate")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / name, ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    config = evaluate.EvalConfig(points=96, max_edge=0.5, match=MatchConfig(steps=2))
    paths = {"a": str(tmp_path / "a.pt"), "a again": str(tmp_path / "a.pt"), "b": str(tmp_path / "b.pt")}
    out = gate.compare(paths, "chair", "armchair", 2, config)
    assert out["a"]["part CD"] == out["a again"]["part CD"] != out["b"]["part CD"]
    assert out["a"]["keypoint ratio"] == out["a again"]["keypoint ratio"] > 0
    assert sum(row["wins"] for row in out.values()) == 2 and out["a"]["pairs"] == 2
    # shards (--start) concatenate to the unsharded draw, pair for pair
    whole = gate.measure(paths, "chair", "armchair", 2, config)
    first, second = (gate.measure(paths, "chair", "armchair", 1, config, start=s) for s in (0, 1))
    for name in paths:
        assert whole["part CD"][name] == first["part CD"][name] + second["part CD"][name]
    assert whole["nearest"] == first["nearest"] + second["nearest"]
    assert gate.summarize(whole) == out
    # --autodecode: refined codes move the matched points; the nearest-neighbour reference
    # does not depend on the codes; the same shape gets the same code in any shard
    one = {"a": paths["a"]}
    refined = gate.measure(one, "chair", "armchair", 2, config, autodecode=3)
    assert refined["nearest"] == whole["nearest"]
    assert refined["part CD"]["a"] != whole["part CD"]["a"]
    assert gate.measure(one, "chair", "armchair", 1, config, start=1, autodecode=3)[
        "part CD"]["a"] == refined["part CD"]["a"][1:]


def test_settings_sweep_parses_variants_and_draws_validation_pairs_only(tmp_path):
    """benchmarks/fm_sweep.py: the paper's string is the evaluation's default settings; bad
    strings are refused by name; its pairs are validation shapes, none of the test shapes
    the evaluation reports on; a variant's figures differ from another's on the same pairs."""
    from backend.methods.feature_matching import evaluate
    from backend.methods.feature_matching.data import category_seeds

    sweep = benchmark_script("fm_sweep")  # imports fm_gate from its own folder
    assert sweep.parse_variant(sweep.PAPER) == evaluate.EvalConfig()
    assert sweep.parse_variant("3,6") == evaluate.EvalConfig()
    odd = sweep.parse_variant("2,4,5:1,1,0.5:0.1:current")
    assert odd.layers == (2, 4, 5) and odd.layer_weights == (1.0, 1.0, 0.5)
    assert odd.match.reg_lambda == 0.1 and odd.match.jacobian_at == "current"
    for bad in ("", "3,6:1", "3:1:0.1:x:y"):
        with pytest.raises(ValueError, match="variant"):
            sweep.parse_variant(bad)

    pairs = sweep.validation_pairs("chair", 6, 5, 0)
    test_seeds = set(category_seeds("chair", "test", 40, 0))
    assert len(pairs) == 5 and len({(a.seed, b.seed) for a, b, _ in pairs}) == 5
    assert all(a.seed != b.seed and not {a.seed, b.seed} & test_seeds for a, b, _ in pairs)

    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    base = evaluate.EvalConfig(points=96, max_edge=0.5, match=MatchConfig(steps=2))
    raw = sweep.sweep(str(tmp_path / "m.pt"), ["3,6", "1:1:1"], "chair", 6, 2, base=base)
    rows = {v: (ratio, cd) for v, ratio, cd in sweep.table(raw)}
    assert len(raw["3,6"]["part CD"]) == 2 and len(rows) == 2
    assert rows["3,6"] != rows["1:1:1"] and all(ratio > 0 for ratio, _ in rows.values())


def test_surface_start_projection_reaches_the_level_set_along_the_normal(tmp_path):
    """benchmarks/fm_surface_start.py: on a decoder that is affine in x (every
    pre-activation positive), the projection lands on F = tau at the nearest point of the
    plane, i.e. it moves along the plane's normal by (F - tau) / |grad F|; a point already
    on the level set stays; the script's measurement runs on a tiny checkpoint."""
    script = benchmark_script("fm_surface_start")

    torch.manual_seed(0)
    decoder = ImplicitModel(PRESETS["tiny"]).decoder.double()
    with torch.no_grad():
        for lin in decoder.linears:
            lin.weight.uniform_(0.01, 0.1)
            lin.bias.fill_(1.0)
        decoder.linears[-1].weight.mul_(0.05)  # F in the [0, 1] band near the points
    code = torch.rand(16, dtype=torch.float64)
    points = torch.rand(64, 3, dtype=torch.float64)
    logit = decoder.logits(points, code).detach()
    grad = torch.autograd.functional.jacobian(lambda x: decoder.logits(x[None], code)[0],
                                              points[0])
    tau = float(logit.mean())
    out = script.project_to_surface(decoder, points, code, tau=tau, iterations=50, max_step=0.02)
    on_surface = decoder.logits(out, code).detach()
    assert torch.allclose(on_surface, torch.full_like(on_surface, tau), atol=1e-9)
    normal = grad / grad.norm()
    expected = points - ((logit - tau) / grad.norm()).unsqueeze(-1) * normal
    assert torch.allclose(out, expected, atol=1e-9)
    assert (out - points).norm(dim=-1).max() > 0.01  # it did move most points
    again = script.project_to_surface(decoder, out, code, tau=tau)
    assert torch.allclose(again, out, atol=1e-12)

    save_checkpoint(tmp_path / "m.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    raw = script.measure(str(tmp_path / "m.pt"), "chair", 6, 3, 0)
    assert set(raw) == {"nearest", *script.VARIANTS}
    assert all(len(raw[v]) == len(raw["nearest"]) > 0 for v in script.VARIANTS)
    assert all(r > 0 for r in script.ratios(raw).values())
    coarse = script.measure(str(tmp_path / "m.pt"), "chair", 6, 3, 0, match=MatchConfig(steps=1))
    assert coarse["nearest"] == raw["nearest"] and coarse["paper"] != raw["paper"]


def test_paired_rows_are_the_per_pair_differences_and_the_ratio_of_means():
    """The paired rows of the evaluation, hand-computed: ours - baseline is the mean of the
    per-pair differences (scaled like the metric), the pairs with a NaN on either side are
    left out, the keypoint row is mean(ours) / mean(nearest neighbour), and the CIs hold
    the value."""
    from backend.methods.feature_matching.evaluate import _paired_rows

    values = {
        "ours/part CD": [1e-3, 2e-3, 3e-3, float("nan")],
        "cross-fit/part CD": [2e-3, 2e-3, 5e-3, 1e-3],
        "source/part CD": [4e-3, 4e-3, 4e-3, 4e-3],
        "ours/part EMD": [0.05, 0.06, 0.07, 0.08],
        "cross-fit/part EMD": [0.04, 0.06, 0.08, 0.10],
        "ours/keypoint error": [0.02, 0.04],
        "nearest neighbour/keypoint error": [0.05, 0.05],
    }
    rows = {(r["variant"], r["metric"]): r for r in _paired_rows(values, "chair", "c", 0)}
    assert set(rows) == {("ours - cross-fit", "part CD (x1e-3)"), ("ours - source", "part CD (x1e-3)"),
                         ("ours - cross-fit", "part EMD (x1e-2)"),
                         ("ours / nearest neighbour", "keypoint error ratio")}
    cd = rows["ours - cross-fit", "part CD (x1e-3)"]
    assert cd["n"] == 3 and cd["value"] == pytest.approx((-1 + 0 - 2) / 3)
    assert rows["ours - source", "part CD (x1e-3)"]["value"] == pytest.approx((-3 - 2 - 1) / 3)
    assert rows["ours - cross-fit", "part EMD (x1e-2)"]["value"] == pytest.approx(-0.5)
    ratio = rows["ours / nearest neighbour", "keypoint error ratio"]
    assert ratio["value"] == pytest.approx(0.6) and ratio["n"] == 2
    for r in rows.values():
        assert r["ci_low"] <= r["value"] <= r["ci_high"]


def test_per_keypoint_breakdown_matches_the_evaluation_error(tmp_path, capsys):
    """benchmarks/fm_keypoints.py: per named keypoint, the nearest-neighbour errors are
    those of the evaluation's `keypoint_error` (snapped, same pairs); the table prints
    every keypoint found and the overall ratio."""
    from backend.methods.feature_matching import evaluate

    script = benchmark_script("fm_keypoints")  # imports fm_sweep from its own folder
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", ImplicitModel(PRESETS["tiny"]).eval(), {"category": "chair"})
    config = evaluate.EvalConfig(match=MatchConfig(steps=2))
    errors = script.per_keypoint(str(tmp_path / "c.pt"), "chair", 4, 2, 1, config)
    pairs = script.validation_pairs("chair", 4, 2, 1)
    names = KEYPOINT_NAMES["chair"]
    expected = []
    for a, b, _ in pairs:
        both = a.keypoint_mask & b.keypoint_mask
        expected.append(evaluate.keypoint_error(a.keypoints[both], b.mesh(),
                                                b.keypoints[both].astype(np.float64)))
        assert {names[i] for i in np.flatnonzero(both)} <= set(errors)
    rows = sum(len(e["nearest"]) for e in errors.values())
    assert rows == sum(int((a.keypoint_mask & b.keypoint_mask).sum()) for a, b, _ in pairs)
    total = sum(np.linalg.norm(e["nearest"], axis=1).sum() for e in errors.values())
    counts = [int((a.keypoint_mask & b.keypoint_mask).sum()) for a, b, _ in pairs]
    assert total == pytest.approx(sum(c * x for c, x in zip(counts, expected, strict=True)))
    text = script.table(errors)
    assert "all keypoints: ours / nearest neighbour" in text and all(n in text for n in errors)
