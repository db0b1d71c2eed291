"""Tests of the retrieval + part-aware deformation method (paper 000): fast paths against
naive loops, joint constraints, IDO, the Eq. 2 loss with learned sigma, the library, a
2-step tiny training run and inference through the Method API."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.methods.base import JobContext
from backend.methods.retrieval_deformation import train as train_cli
from backend.methods.retrieval_deformation.deformation import (
    constraint_matrix,
    deform_points,
    find_joints,
    nullspace_projector,
    project_parameters,
)
from backend.methods.retrieval_deformation.inference import deformed_mesh
from backend.methods.retrieval_deformation.joint import (
    embedding_loss,
    fit_probabilities,
    inner_deformation_optimization,
    soft_retrieval,
)
from backend.methods.retrieval_deformation.library import (
    SourceLibrary,
    builtin_library,
    folder_library,
    is_symmetric,
)
from backend.methods.retrieval_deformation.method import RetrievalDeformation


def assert_close(actual, expected, atol=1e-5, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    err = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
    if (err > 0).any():
        at = np.unravel_index(np.argmax(err), err.shape)
        raise AssertionError(f"largest difference at {at}: {actual[at]} vs {expected[at]}")


@pytest.fixture(scope="module")
def library() -> SourceLibrary:
    return builtin_library("chair", 4, seed=0, n_points=256)


# ------------------------------------------------------------------ deformation vs naive
def naive_deform(points, parts, centers, params):
    out = np.empty_like(points)
    for b in range(points.shape[0]):
        for n in range(points.shape[1]):
            i = parts[b, n]
            for a in range(3):
                p = points[b, n, a]
                out[b, n, a] = p + params[b, i, a] + params[b, i, 3 + a] * (p - centers[b, i, a])
    return out


@pytest.mark.parametrize("b,n,p", [(1, 5, 1), (2, 17, 3), (3, 40, 7)])
def test_deform_points_matches_naive_loop_forward_and_backward(b, n, p):
    g = torch.Generator().manual_seed(b * 100 + n)
    pts = torch.rand(b, n, 3, generator=g, dtype=torch.float64) - 0.5
    parts = torch.randint(0, p, (b, n), generator=g)
    centers = torch.rand(b, p, 3, generator=g, dtype=torch.float64) - 0.5
    params = (torch.randn(b, p, 6, generator=g, dtype=torch.float64) * 0.1).requires_grad_(True)
    out = deform_points(pts, parts, centers, params)
    assert_close(out.detach(), naive_deform(pts.numpy(), parts.numpy(), centers.numpy(),
                                            params.detach().numpy()), atol=1e-12)
    # Backward: the gradient of a random linear functional, against finite differences.
    w = torch.randn(b, n, 3, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * w).sum(), params)
    fd = np.zeros(params.shape)
    base = params.detach().numpy()
    for idx in np.ndindex(*params.shape):
        hi, lo = base.copy(), base.copy()
        hi[idx] += 1e-6
        lo[idx] -= 1e-6
        f = [(naive_deform(pts.numpy(), parts.numpy(), centers.numpy(), x) * w.numpy()).sum()
             for x in (hi, lo)]
        fd[idx] = (f[0] - f[1]) / 2e-6
    assert_close(grad, fd, atol=1e-6)


def naive_joints(points, parts, num_parts, tol):
    out = {}
    for i in range(num_parts):
        for j in range(i + 1, num_parts):
            a, b = points[parts == i], points[parts == j]
            if len(a) == 0 or len(b) == 0:
                continue
            d = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
            if d.min() <= tol:
                out[(i, j)] = d.min()
    return out


def test_find_joints_matches_brute_force():
    rng = np.random.default_rng(3)
    pts = rng.random((300, 3))
    parts = rng.integers(0, 6, 300)
    pts += parts[:, None] * 0.12  # parts spread so only some pairs touch
    pairs, joints = find_joints(pts, parts, 6, tolerance=0.05)
    expected = naive_joints(pts, parts, 6, 0.05)
    assert {tuple(p) for p in pairs} == set(expected)
    for (i, j), q in zip(pairs, joints):
        # the joint is the midpoint of a closest pair: its distance to each part is d/2
        for k in (i, j):
            dq = np.sqrt(((pts[parts == k] - q) ** 2).sum(-1)).min()
            assert dq == pytest.approx(expected[(i, j)] / 2, abs=1e-9)


def naive_constraint_rows(centers, pairs, joints, x):
    """Residual of each joint: part i's image of q minus part j's image of q."""
    res = []
    for (i, j), q in zip(pairs, joints):
        qi = q + x[i, :3] + x[i, 3:] * (q - centers[i])
        qj = q + x[j, :3] + x[j, 3:] * (q - centers[j])
        res.append(qi - qj)
    return np.concatenate(res)


def test_projection_keeps_joints_and_is_the_closest_feasible_point():
    rng = np.random.default_rng(0)
    p = 5
    centers = rng.random((p, 3)) - 0.5
    pairs = np.array([[0, 1], [1, 2], [0, 3], [3, 4], [2, 4]])
    joints = rng.random((len(pairs), 3)) - 0.5
    a = constraint_matrix(centers, pairs, joints)
    proj = nullspace_projector(a, 6 * p)
    x0 = rng.normal(size=(p, 6)) * 0.2
    # A x equals the naive joint residual for any x
    assert_close(a @ x0.reshape(-1), naive_constraint_rows(centers, pairs, joints, x0), atol=1e-12)
    x = project_parameters(torch.from_numpy(x0[None]), torch.from_numpy(proj[None]))[0].numpy()
    assert_close(naive_constraint_rows(centers, pairs, joints, x), np.zeros(3 * len(pairs)), atol=1e-10)
    assert_close(proj @ proj, proj, atol=1e-10)
    assert_close(proj, proj.T, atol=1e-12)
    # KKT solution of min |x - x0|^2 s.t. A x = 0
    n, r = 6 * p, a.shape[0]
    kkt = np.block([[np.eye(n), a.T], [a, np.zeros((r, r))]])
    sol = np.linalg.lstsq(kkt, np.concatenate([x0.reshape(-1), np.zeros(r)]), rcond=None)[0]
    assert_close(x.reshape(-1), sol[:n], atol=1e-8)


def test_library_joints_hold_on_deformed_builtin_source(library):
    s = 0
    centers = library.ragged("centers", s).astype(np.float64)
    pairs, joints = library.ragged("joint_pairs", s), library.ragged("joint_points", s)
    assert len(pairs) >= library.num_parts(s) - 1  # a chair is one connected structure
    x0 = np.random.default_rng(1).normal(size=(library.num_parts(s), 6)) * 0.2
    x = (library.projector(s) @ x0.reshape(-1)).reshape(-1, 6)
    assert np.abs(naive_constraint_rows(centers, pairs, joints.astype(np.float64), x)).max() < 1e-6
    assert np.abs(x - x0).max() > 1e-3  # the projection did something


def test_deformed_mesh_moves_vertices_like_their_part(library):
    s = 1
    x = library.projector(s) @ (np.random.default_rng(2).normal(size=6 * library.num_parts(s)) * 0.1)
    params = x.reshape(-1, 6)
    v, f, fp = deformed_mesh(library, s, params)
    v0, f0, fp0 = library.mesh(s)
    centers = library.ragged("centers", s)
    for face in range(0, len(f), max(1, len(f) // 50)):
        i = fp[face]
        for c in range(3):
            orig = v0[f0[face, c]].astype(np.float64)
            expect = orig + params[i, :3] + params[i, 3:] * (orig - centers[i])
            assert_close(v[f[face, c]], expect, atol=1e-5)


# ------------------------------------------------------------------ retrieval pieces
def test_embedding_loss_matches_eq2_and_trains_sigma():
    g = torch.Generator().manual_seed(0)
    d2 = (torch.rand(3, 4, generator=g) * 300).requires_grad_(True)
    fit = torch.rand(3, 4, generator=g) * 0.02
    sigma = (torch.rand(3, 4, generator=g) + 0.1).requires_grad_(True)
    loss = embedding_loss(d2, fit, sigma)
    naive = 0.0
    for b in range(3):
        zr = sum(np.exp(-d2[b, j].item() / 100.0) for j in range(4))
        zf = sum(np.exp(-100.0 * fit[b, j].item() / sigma[b, j].item()) for j in range(4))
        for k in range(4):
            pr = np.exp(-d2[b, k].item() / 100.0) / zr
            pf = np.exp(-100.0 * fit[b, k].item() / sigma[b, k].item()) / zf
            naive += abs(pr - pf)
    assert loss.item() == pytest.approx(naive / 3, rel=1e-5)
    loss.backward()
    assert sigma.grad.abs().sum() > 0 and d2.grad.abs().sum() > 0


@pytest.mark.parametrize("power", [1, 2])
def test_embedding_loss_per_source_normalization_is_the_printed_eq1(power):
    # The printed Eq. 1 keeps the numerator's sigma(s) in the denominator.
    g = torch.Generator().manual_seed(1)
    d2 = torch.rand(2, 5, generator=g) * 300
    fit = torch.rand(2, 5, generator=g) * 0.02
    sigma = (torch.rand(2, 5, generator=g) + 0.1).requires_grad_(True)
    loss = embedding_loss(d2, fit, sigma, normalization="per_source", sigma_power=power)
    naive = 0.0
    for b in range(2):
        zr = sum(np.exp(-d2[b, j].item() / 100.0) for j in range(5))
        for k in range(5):
            t = sigma[b, k].item() ** power
            zf = sum(np.exp(-100.0 * fit[b, j].item() / t) for j in range(5))
            pf = np.exp(-100.0 * fit[b, k].item() / t) / zf
            naive += abs(np.exp(-d2[b, k].item() / 100.0) / zr - pf)
    assert loss.item() == pytest.approx(naive / 2, rel=1e-5)
    loss.backward()
    assert sigma.grad.abs().sum() > 0
    # Equal sigma_k: both normalizations are the same softmax.
    equal = torch.full((2, 5), 0.5)
    assert torch.allclose(fit_probabilities(fit, equal, normalization="per_source"),
                          fit_probabilities(fit, equal))
    with pytest.raises(ValueError, match="normalization"):
        fit_probabilities(fit, equal, normalization="shared")


def test_soft_retrieval_draws_distinct_candidates_biased_by_p_r():
    d2 = torch.tensor([[0.0] + [5000.0] * 19])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        c = soft_retrieval(d2, 10, generator=g)
        assert c.shape == (1, 10) and len(set(c[0].tolist())) == 10 and 0 in c[0].tolist()
    with pytest.raises(ValueError, match="cannot draw"):
        soft_retrieval(d2, 21)


def test_ido_batched_matches_per_candidate_loop_and_keeps_joints(library):
    idx = np.array([0, 1, 2])
    batch = library.batch(idx, "cpu")
    target = torch.from_numpy(library.points[[3, 3, 2]] * np.float32(1.1))
    params = torch.zeros(3, batch.centers.shape[1], 6)
    res = inner_deformation_optimization(params, batch, target, lr=0.5, max_iters=30, tol=1e-5)
    # Candidates stop at different steps, so the active-set compaction is exercised.
    assert len(set(res.iterations.tolist())) > 1, res.iterations
    for m in range(3):
        one = library.batch(idx[m:m + 1], "cpu")
        p = one.centers.shape[1]
        r1 = inner_deformation_optimization(torch.zeros(1, p, 6), one, target[m:m + 1], 0.5, 30, 1e-5)
        assert_close(res.fit[m], r1.fit[0], atol=1e-6)
        assert_close(res.params[m, :p], r1.params[0], atol=1e-5)
        assert int(res.iterations[m]) == int(r1.iterations[0])
        s = int(idx[m])
        pairs, joints = library.ragged("joint_pairs", s), library.ragged("joint_points", s)
        resid = naive_constraint_rows(library.ragged("centers", s).astype(np.float64), pairs,
                                      joints.astype(np.float64), res.params[m, :p].double().numpy())
        assert np.abs(resid).max() < 1e-4
    from backend.core.metrics import chamfer_distance

    before = chamfer_distance(batch.points, target).chamfer
    assert (res.fit < before).all()
    # looking at the stopped candidates only every few steps (the CUDA default) changes
    # nothing: stopped candidates stay frozen in between
    for every in (4, 7, 64):
        lazy = inner_deformation_optimization(params, batch, target, lr=0.5, max_iters=30,
                                              tol=1e-5, sync_every=every)
        assert torch.equal(lazy.iterations, res.iterations)
        assert_close(lazy.fit, res.fit, atol=1e-7)
        assert_close(lazy.params, res.params, atol=1e-6)


def test_ido_pool_matches_one_process(library):
    """IDO shared among 2 worker processes (interleaved candidates, put back in order)
    gives the single-process iterations and fits, parameters to float rounding."""
    from backend.methods.retrieval_deformation.joint import IDOPool

    idx = np.array([0, 1, 2, 3, 1])
    batch = library.batch(idx, "cpu")
    target = torch.from_numpy(library.points[[3, 3, 2, 0, 1]] * np.float32(1.1))
    params = torch.zeros(5, batch.centers.shape[1], 6)
    one = inner_deformation_optimization(params, batch, target, 0.5, 30, 1e-5)
    with IDOPool(2) as pool:
        shared = pool(params, batch, target, 0.5, 30, 1e-5)
    assert len(set(one.iterations.tolist())) > 1, one.iterations
    assert torch.equal(shared.iterations, one.iterations)
    assert_close(shared.fit, one.fit, atol=1e-7)
    assert_close(shared.params, one.params, atol=1e-6)
    assert_close(shared.points, one.points, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        IDOPool(1)


# ------------------------------------------------------------------ library
def test_folder_library_uses_obj_groups_and_round_trips(tmp_path):
    def box(lo, hi, offset):
        v = [(x, y, z) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        faces = ["f " + " ".join(str(offset + i + 1) for i in q) for q in quads]
        return [f"v {a} {b} {c}" for a, b, c in v], faces

    seat_v, seat_f = box((-0.4, 0.4, -0.4), (0.4, 0.5, 0.4), 0)
    leg_v, leg_f = box((-0.05, -0.5, -0.05), (0.05, 0.4, 0.05), 8)
    obj = [*seat_v, *leg_v, "g seat", *seat_f, "g leg", *leg_f]
    folder = tmp_path / "lib" / "stools"
    folder.mkdir(parents=True)
    (folder / "stool.obj").write_text("\n".join(obj) + "\n")
    lib = folder_library(tmp_path / "lib", n_points=128)
    assert lib.names == ["stools/stool"] and lib.categories == ["stools"]
    assert sorted(lib.part_labels[0]) == ["leg", "seat"]
    assert len(lib.ragged("joint_pairs", 0)) == 1
    assert bool(lib.symmetric[0])
    lib.save(tmp_path / "saved")
    back = SourceLibrary.load(tmp_path / "saved")
    assert back.names == lib.names and back.part_labels == lib.part_labels
    assert_close(back.points, lib.points, atol=0)
    assert_close(back.projector(0), lib.projector(0), atol=1e-12)
    with pytest.raises(ValueError, match="not a source library"):
        SourceLibrary.load(tmp_path)


# ------------------------------------------------------------------ training and inference
@pytest.mark.parametrize("target", ["points", "image"])
def test_two_step_tiny_training_then_infer_from_checkpoint(tmp_path, target):
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    out = tmp_path / "ckpt"
    args = parser.parse_args(["--tiny", "--target", target, "--out", str(out), "--max-steps", "2"])
    assert train_cli.run(args) == 0
    assert (out / "model.pt").is_file() and (out / "library" / "manifest.json").is_file()
    assert any((out / "tb").iterdir())  # TensorBoard event file
    method = RetrievalDeformation()
    if target == "points":
        pts = np.random.default_rng(0).random((300, 3)).astype(np.float32) - 0.5
        inputs = {"points.points": pts}
    else:
        inputs = {"image.pixels": np.full((24, 24, 3), 200, np.uint8)}
    config = method.validate(inputs, {"checkpoint": str(out), "top_k": 2, "n_points": 128,
                                      "ido_max_iters": 3})
    result = method.infer(inputs, config, JobContext("t"))
    assert "warning" not in result.info and result.info["checkpoint"] == str(out)
    assert len(result.outputs) == 2


@pytest.mark.parametrize("embedding", ["autodecode", "encoder"])
def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, embedding):
    """--resume: a run stopped mid-epoch (step 1 of 2) and again at an epoch boundary
    (step 2), then resumed to the end, gives bit-identical weights to one run straight
    through (weights, optimiser moments, random streams and the epoch's order restored).
    Biased sampling from the second epoch on, so P_R sampling is exercised after a resume;
    with encoder source embeddings, the epoch's stored ones are those of its start."""
    def train(out, *extra):
        parser = argparse.ArgumentParser()
        train_cli.add_arguments(parser)
        args = parser.parse_args(["--tiny", "--target", "points", "--epochs", "3",
                                  "--warmup-epochs", "1", "--source-embedding", embedding,
                                  "--out", str(out), *extra])
        assert train_cli.run(args) == 0
        return torch.load(out / "model.pt", weights_only=True), json.loads(
            (out / "config.json").read_text())["summary"]

    straight, _ = train(tmp_path / "straight")
    out = tmp_path / "resumed"
    train(out, "--resume", "--max-steps", "1")
    assert (out / train_cli.STATE_FILE).is_file()
    train(out, "--resume", "--max-steps", "2")
    resumed, summary = train(out, "--resume")
    assert summary["steps"] == 6 and summary["resumed_at_step"] == 2
    assert not (out / train_cli.STATE_FILE).exists()  # finished: nothing left to resume
    for module in ("deformation", "retrieval"):
        for key, value in straight[module].items():
            assert torch.equal(value, resumed[module][key]), f"{module}.{key}"
    # a state written by another configuration is refused, naming what differs
    train(tmp_path / "other", "--resume", "--max-steps", "1")
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["--tiny", "--target", "points", "--epochs", "3", "--lr", "0.5",
                              "--resume", "--out", str(tmp_path / "other")])
    with pytest.raises(ValueError, match="differs in .*lr"):
        train_cli.run(args)


def test_ido_training_with_worker_processes_logs_the_same_fits(tmp_path):
    """--ido-in-training --ido-workers 2 (IDO in 2 processes) logs the IDO iterations and
    the fits of the single-process run, and records its worker count."""
    def train(out, *extra):
        parser = argparse.ArgumentParser()
        train_cli.add_arguments(parser)
        args = parser.parse_args(["--tiny", "--target", "points", "--max-steps", "2",
                                  "--ido-in-training", "--out", str(out), *extra])
        assert train_cli.run(args) == 0
        return json.loads((out / "config.json").read_text())["summary"]

    one = train(tmp_path / "one")
    two = train(tmp_path / "two", "--ido-workers", "2")
    assert two["ido_workers"] == 2 and "ido_workers" not in one
    assert two["last"]["ido_iters"] == one["last"]["ido_iters"] > 0
    for key in ("fit_used", "loss_emb", "loss_def"):
        assert two["last"][key] == pytest.approx(one["last"][key], rel=1e-5), key


def _step_deltas(model, config, inputs, pts, seed):
    """Run one `train_step` with plain SGD (lr 1, no momentum or decay) on a copy of
    ``model``; returns the copy's parameter changes per module (= minus the gradients)."""
    import copy

    m = copy.deepcopy(model)
    m.deformation.train()
    m.retrieval.train()
    before = {n: {k: v.detach().clone() for k, v in getattr(m, n).named_parameters()}
              for n in ("deformation", "retrieval")}
    opts = {n: torch.optim.SGD(getattr(m, n).parameters(), lr=1.0)
            for n in ("deformation", "retrieval")}
    train_cli.train_step(m, opts, inputs, pts, config, True, torch.Generator().manual_seed(seed))
    return {n: {k: v.detach() - before[n][k] for k, v in getattr(m, n).named_parameters()}
            for n in ("deformation", "retrieval")}


def _naive_grads(model, config, inputs, pts, seed, mode):
    """The gradients one step should apply, written out per target and candidate: K uniform
    candidates (same generator), each deformed and IDO-refined on its own; the deformation
    loss is the authors' P_R-weighted squared parameter distance to the IDO optimum (mode
    "params") or Eq. 4 on the network's fits; L_emb uses the IDO fits only in mode "fits"."""
    import copy

    from backend.methods.retrieval_deformation.joint import (
        deform_candidates,
        retrieval_probabilities,
    )

    m = copy.deepcopy(model)
    m.deformation.train()
    m.retrieval.train()
    b, k = pts.shape[0], config.k
    cand = soft_retrieval(torch.zeros(b, len(m.library)), k, config.sigma0,
                          torch.Generator().manual_seed(seed), uniform=True)
    with torch.no_grad():
        d2_all = m.retrieval.distances(m.retrieval.encoder(inputs))
    out = deform_candidates(m.deformation, m.deformation.encoder(inputs), cand,
                            m.library.batch(cand.reshape(-1), "cpu"), pts)
    w = retrieval_probabilities(torch.gather(d2_all, 1, cand), config.sigma0)
    loss_d, ido_fit = 0.0, torch.zeros(b, k)
    for i in range(b):
        for j in range(k):
            one = m.library.batch(cand[i, j:j + 1], "cpu")  # unpadded: its own parts
            n = one.centers.shape[1]
            assert not out.params[i, j, n:].any()  # padded parts stay zero
            refined = inner_deformation_optimization(
                out.params[i, j:j + 1, :n].detach(), one, pts[i:i + 1], config.ido_lr,
                config.ido_max_iters, config.ido_tol)
            ido_fit[i, j] = refined.fit[0]
            if mode == "params":
                term = (out.params[i, j, :n] - refined.params[0]).square().sum()
            else:
                term = out.fit[i, j]
            loss_d = loss_d + w[i, j] * term / b
    loss_d = loss_d + config.symmetry_weight * out.symmetry.mean()
    params_d = dict(m.deformation.named_parameters())
    grads_d = torch.autograd.grad(loss_d, list(params_d.values()), allow_unused=True)
    fit = ido_fit if mode == "fits" else out.fit.detach()
    d2 = m.retrieval.distances(m.retrieval.encoder(inputs), cand)
    loss_r = embedding_loss(d2, fit, m.retrieval.sigma(cand), config.sigma0,
                            config.fit_normalization, config.sigma_power)
    params_r = dict(m.retrieval.named_parameters())
    grads_r = torch.autograd.grad(loss_r, list(params_r.values()), allow_unused=True)
    zero = torch.zeros_like
    return {"deformation": {n: g if g is not None else zero(params_d[n])
                            for n, g in zip(params_d, grads_d)},
            "retrieval": {n: g if g is not None else zero(params_r[n])
                          for n, g in zip(params_r, grads_r)}}


@pytest.mark.parametrize("mode", ["params", "fits"])
def test_ido_training_modes_match_a_per_candidate_loop(library, mode):
    """--ido-in-training: the authors' mode ("params", joint_with_icp.py --fitting_loss l2)
    moves the deformation module along minus the gradient of the P_R-weighted squared
    distance of its parameters to the IDO optimum and the retrieval module on the network's
    fits; "fits" (sessions 21-25) keeps Eq. 4 for D and gives L_emb the IDO fits. Both
    against the same step written out per candidate, and the two modes differ."""
    import dataclasses

    from backend.methods.retrieval_deformation.checkpoint import build_model
    from backend.methods.retrieval_deformation.model import ModelConfig

    model = build_model(ModelConfig(target="points"), library, seed=3)
    config = dataclasses.replace(train_cli.TrainConfig(), k=3, ido_in_training=True,
                                 ido_mode=mode, ido_max_iters=20, sigma_power=2)
    rng = np.random.default_rng(0)
    pts = torch.from_numpy(library.points[[1, 3]] * 1.1 + 0.01 *
                           rng.standard_normal((2, 256, 3)).astype(np.float32)).float()
    deltas = _step_deltas(model, config, pts, pts, seed=5)
    grads = _naive_grads(model, config, pts, pts, seed=5, mode=mode)
    moved = 0
    for module in ("deformation", "retrieval"):
        for name, delta in deltas[module].items():
            assert_close(delta, -grads[module][name], atol=1e-6, rtol=1e-4)
            moved += bool(delta.abs().max() > 0)
    assert moved > 10  # both modules' weights and codes did move
    other = dataclasses.replace(config, ido_mode="fits" if mode == "params" else "params")
    alt = _step_deltas(model, other, pts, pts, seed=5)
    assert not torch.allclose(alt["deformation"]["mlp.0.weight"],
                              deltas["deformation"]["mlp.0.weight"])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflowing neighbour search
def test_diverging_training_stops_with_a_clear_error(tmp_path):
    """A step whose losses are not finite stops the run at once, naming the step and the
    losses, instead of training on NaN for hours (an absurd --lr makes it diverge)."""
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    args = parser.parse_args(["--tiny", "--target", "points", "--epochs", "20", "--lr", "1e6",
                              "--out", str(tmp_path / "x")])
    with pytest.raises(FloatingPointError, match=r"diverged at step \d+ .*not finite"):
        train_cli.run(args)
    assert not (tmp_path / "x" / "model.pt").exists()


def test_init_deformation_starts_from_the_df_module(tmp_path):
    """--init-deformation DF: the deformation module (networks and codes) starts as DF's,
    the retrieval module as a fresh one; the checkpoint records it and DF's step count; a DF
    over another library is refused, naming the cause."""
    from backend.methods.retrieval_deformation.checkpoint import build_model, load_checkpoint

    def train(out, *extra):
        parser = argparse.ArgumentParser()
        train_cli.add_arguments(parser)
        args = parser.parse_args(["--tiny", "--target", "points", "--out", str(out), *extra])
        assert train_cli.run(args) == 0
        return json.loads((out / "config.json").read_text())

    df_dir = tmp_path / "df"
    train(df_dir, "--sampling", "random_pairs", "--max-steps", "2")
    df, _ = load_checkpoint(df_dir)
    model_config, config = train_cli.tiny_configs("points")
    fresh = build_model(model_config, builtin_library("chair", config.sources, config.seed,
                                                      config.n_points), config.seed)
    untouched = {k: v.clone() for k, v in fresh.retrieval.state_dict().items()}
    assert not torch.equal(fresh.deformation.mlp[0].weight, df.deformation.mlp[0].weight)
    train_cli.init_from_deformation(fresh, df_dir)
    for key, value in df.deformation.state_dict().items():
        assert torch.equal(fresh.deformation.state_dict()[key], value), key
    for key, value in untouched.items():
        assert torch.equal(fresh.retrieval.state_dict()[key], value), key

    doc = train(tmp_path / "ours", "--init-deformation", str(df_dir), "--max-steps", "1")
    assert doc["train"]["init_deformation"] == str(df_dir)
    assert doc["summary"]["init_deformation_steps"] == 2
    with pytest.raises(ValueError, match="library is not this training's"):
        train(tmp_path / "other", "--init-deformation", str(df_dir), "--sources", "5",
              "--max-steps", "1")


def test_deformation_lr_sets_the_deformation_modules_rate_only(tmp_path):
    """--deformation-lr: the deformation module (and its codes) trains at its own rate, the
    retrieval module at --lr. At rate 0 a run from DF ends with DF's deformation weights and
    codes bit for bit while its retrieval module moved; the rate is recorded in the config."""
    from backend.methods.retrieval_deformation.checkpoint import build_model, load_checkpoint

    def args(out, *extra):
        parser = argparse.ArgumentParser()
        train_cli.add_arguments(parser)
        return parser.parse_args(["--tiny", "--target", "points", "--out", str(out), *extra])

    model_config, config = train_cli.configs_from_args(args("x", "--lr", "0.01",
                                                            "--deformation-lr", "0.001"))
    model = build_model(model_config, builtin_library("chair", config.sources, config.seed,
                                                      config.n_points), config.seed)
    opts = train_cli.make_optimizers(model, config)
    assert [g["lr"] for g in opts["deformation"].param_groups] == [0.001]
    assert [g["lr"] for g in opts["retrieval"].param_groups] == [0.01]
    _, default = train_cli.configs_from_args(args("x", "--lr", "0.01"))
    opts = train_cli.make_optimizers(model, default)
    assert opts["deformation"].param_groups[0]["lr"] == 0.01

    df_dir, out = tmp_path / "df", tmp_path / "frozen"
    assert train_cli.run(args(df_dir, "--sampling", "random_pairs", "--max-steps", "2")) == 0
    assert train_cli.run(args(out, "--init-deformation", str(df_dir), "--deformation-lr", "0",
                              "--max-steps", "2")) == 0
    df, _ = load_checkpoint(df_dir)
    frozen, _ = load_checkpoint(out)
    kept = dict(frozen.deformation.named_parameters())  # (BatchNorm statistics still move)
    for key, value in df.deformation.named_parameters():
        assert torch.equal(kept[key], value), key
    fresh = dict(build_model(model_config, frozen.library, config.seed).retrieval.named_parameters())
    assert any(not torch.equal(v, fresh[k]) for k, v in frozen.retrieval.named_parameters())
    doc = json.loads((out / "config.json").read_text())
    assert doc["train"]["deformation_lr"] == 0.0


@pytest.mark.parametrize("target", ["points", "image"])
def test_cpu_config_checkpoint_fits_the_zoo_limit_in_fp16(library, target):
    """A --cpu-config checkpoint of 200 sources, stored in fp16, is <= 25 MB (the zoo's
    limit): the weights of a 4-source model plus, per extra source, twice the mean growth
    from 2 to 4 sources (codes, embeddings and sigmas scale with the library)."""
    from backend.methods.retrieval_deformation.checkpoint import build_model

    model_config, train_config = train_cli.cpu_configs(target)

    def fp16_bytes(lib) -> int:
        model = build_model(model_config, lib)
        tensors = [*model.deformation.state_dict().values(), *model.retrieval.state_dict().values()]
        return sum(2 * v.numel() for v in tensors if v.is_floating_point())

    small, four = fp16_bytes(builtin_library("chair", 2, seed=0, n_points=16)), fp16_bytes(library)
    per_source = (four - small) / 2
    assert per_source > 0
    estimate = four + 2 * per_source * (train_config.sources - 4)
    assert estimate <= 25e6, f"{target}: ~{estimate / 1e6:.1f} MB in fp16"


def test_infer_untrained_on_tiny_inputs_through_method_api():
    method = RetrievalDeformation()
    rng = np.random.default_rng(0)
    v = (rng.random((30, 3)) - 0.5).astype(np.float32)
    f = rng.integers(0, 30, (40, 3)).astype(np.int32)
    # no checkpoint ships for airplanes: the seeded untrained path, with its warning
    params = {"library": "builtin:airplane", "untrained_sources": 4, "top_k": 3, "n_points": 64,
              "ido_max_iters": 10}
    inputs = {"mesh.vertices": v, "mesh.faces": f}
    result = method.infer(inputs, method.validate(inputs, params), JobContext("m"))
    assert "no checkpoint is loaded" in result.info["warning"]
    assert len(result.outputs) == 3
    fits = [o.meta["fit_chamfer_l2sq"] for o in result.outputs]
    assert fits == sorted(fits)
    for o in result.outputs:
        a = o.arrays
        assert a["vertices"].dtype == np.float32 and a["faces"].dtype == np.int32
        assert a["face_parts"].max() < len(o.meta["part_labels"])
        assert o.meta["placement"] == "mesh"
    both = {**inputs, "image.pixels": np.zeros((8, 8, 3), np.uint8)}
    with pytest.raises(ValueError, match="exactly one target"):
        method.infer(both, method.validate(both, params), JobContext("m"))


def test_symmetry_flag_rejects_a_lopsided_shape():
    rng = np.random.default_rng(0)
    sym = rng.random((2000, 3)) - 0.5
    lopsided = sym.copy()
    lopsided[:, 0] = np.where(lopsided[:, 1] > 0, np.abs(lopsided[:, 0]), lopsided[:, 0])
    assert is_symmetric(sym, np.random.default_rng(1))
    assert not is_symmetric(lopsided, np.random.default_rng(1))


@pytest.mark.parametrize("category, target", [("chair", "points"), ("table", "image")])
def test_shipped_checkpoint_is_used_by_default(category, target):
    from backend.methods.retrieval_deformation.method import ZOO

    assert (ZOO / f"{category}_{target}" / "MODEL_CARD.md").is_file()
    method = RetrievalDeformation()
    rng = np.random.default_rng(1)
    if target == "points":
        inputs = {"points.points": (rng.random((256, 3)) - 0.5).astype(np.float32)}
    else:
        inputs = {"image.pixels": rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)}
    config = method.validate(inputs, {"library": f"builtin:{category}", "top_k": 2,
                                      "n_points": 128, "ido": False})
    result = method.infer(inputs, config, JobContext("z"))
    assert "warning" not in result.info
    assert Path(result.info["checkpoint"]).resolve() == (ZOO / f"{category}_{target}").resolve()
    assert len(result.outputs) == 2


def test_retrieval_full_scan_expanded_form_matches_the_direct_one():
    """Libraries above EXPANDED_SCAN sources scan with matrix products; same distances and
    the same top-k as the direct (B, S, D) form."""
    from backend.methods.retrieval_deformation.model import ModelConfig, RetrievalModule

    torch.manual_seed(0)
    r = RetrievalModule(ModelConfig(), 300).eval()
    emb = torch.randn(4, r.source_embeddings.shape[1])
    with torch.no_grad():
        direct = r.distances(emb)
        r.EXPANDED_SCAN = 10
        expanded = r.distances(emb)
    assert_close(expanded, direct, rtol=1e-4, atol=1e-3)
    assert torch.equal(torch.topk(expanded, 5, largest=False).indices,
                       torch.topk(direct, 5, largest=False).indices)
    with torch.no_grad():  # the cached per-source terms follow an in-place update
        r.source_embeddings[7] = emb[0]
        assert float(r.distances(emb)[0, 7]) < 1e-3
