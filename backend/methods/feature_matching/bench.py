"""``shapebridge bench feature_matching``: full matching of 1k / 10k / 100k vertices.

Ours: `match_points` (batched forward-mode Jacobians, one batched 3x3 solve per
Gauss-Newton iteration). Naive: the same algorithm one point at a time with
reverse-mode autograd Jacobians and a per-point least-squares solve, timed in the same
run on a subset of points and steps and extrapolated linearly (every point and step
costs the same there); its result on that subset is checked against ours.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.bench.results import write_results
from backend.data.samples import sample_surface
from backend.data.shapes import generate_shape
from backend.methods.feature_matching.matching import MatchConfig, decoder_field, match_points
from backend.methods.feature_matching.model import PRESETS, ImplicitDecoder, ImplicitModel

__all__ = ["add_arguments", "naive_match_points", "run"]


def naive_match_points(
    decoder: ImplicitDecoder,
    points: torch.Tensor,
    code_source: torch.Tensor,
    code_target: torch.Tensor,
    config: MatchConfig,
    layers: tuple[int, ...] = (3, 6),
    weights: tuple[float, ...] = (1.0, 0.1),
) -> torch.Tensor:
    """Reference matching: a Python loop over points with per-point autograd Jacobians.

    points: (N, 3) canonical frame; codes (k,). Same algorithm as `match_points` with
    ``jacobian_at="start"``. Returns (N, 3) points at t = 1.
    """

    def phi(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        feats = decoder.features(x[None], z, layers)
        return torch.cat([w * h[0] for w, h in zip(weights, feats, strict=True)])

    lam = config.reg_lambda
    out = []
    for x in points:
        for s in range(config.steps):
            z0 = torch.lerp(code_source, code_target, s / config.steps)
            z1 = torch.lerp(code_source, code_target, (s + 1) / config.steps)
            phi0 = phi(x, z0).detach()
            jac = torch.autograd.functional.jacobian(lambda p, z=z0: phi(p, z), x)
            a = torch.cat([jac, lam * torch.eye(3, dtype=x.dtype, device=x.device)])
            delta = torch.zeros_like(x)
            for _ in range(config.gn_iterations):
                with torch.no_grad():
                    r = torch.cat([phi(x + delta, z1) - phi0, lam * delta])
                delta = delta + torch.linalg.lstsq(a, -r.unsqueeze(-1)).solution.squeeze(-1)
            x = (x + delta).detach()
        out.append(x)
    return torch.stack(out)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shapebridge bench feature_matching``."""
    parser.add_argument("--sizes", default="1000,10000,100000", help="vertex counts")
    parser.add_argument("--preset", default=None, choices=tuple(PRESETS),
                        help="network size (default: paper on a GPU, cpu otherwise)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--gn-iterations", type=int, default=3)
    parser.add_argument("--naive-points", type=int, default=16, help="points timed for the naive loop")
    parser.add_argument("--naive-steps", type=int, default=2, help="steps timed for the naive loop")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="results path (writes .json and .md)")


def run(args: argparse.Namespace) -> int:
    """Time ours against the naive loop for each size; print and write the table."""
    try:
        sizes = [int(s) for s in str(args.sizes).split(",")]
    except ValueError:
        print(f"--sizes must be comma-separated integers, got {args.sizes!r}")
        return 2
    preset = args.preset or ("paper" if args.device.startswith("cuda") else "cpu")
    torch.manual_seed(args.seed)
    model = ImplicitModel(PRESETS[preset]).to(args.device).eval()
    a, b = generate_shape("chair", 1), generate_shape("chair", 2)
    with torch.no_grad():
        vox = torch.stack([model.shape_voxels(a), model.shape_voxels(b)]).to(args.device)
        za, zb = model.encoder(vox)
    field = decoder_field(model.decoder)
    cfg = MatchConfig(steps=args.steps, gn_iterations=args.gn_iterations)
    naive_cfg = MatchConfig(steps=args.naive_steps, gn_iterations=args.gn_iterations)
    rows = []
    cond = f"{args.steps} steps x {args.gn_iterations} GN, preset {preset}"
    # naive: seconds per point and step, measured once
    pts_n = torch.from_numpy(sample_surface(a.mesh(), args.naive_points,
                                            np.random.default_rng(1))[0]).float().to(args.device)
    _sync(args.device)
    t0 = time.perf_counter()
    naive = naive_match_points(model.decoder, pts_n, za, zb, naive_cfg)
    _sync(args.device)
    per_point_step = (time.perf_counter() - t0) / (args.naive_points * args.naive_steps)
    ours_small = match_points(field, pts_n, za, zb, naive_cfg).points
    agree = float((naive - ours_small).abs().max())
    rows.append({"variant": "naive vs ours", "category": "chair",
                 "condition": f"{args.naive_points} points, {args.naive_steps} steps",
                 "metric": "max abs difference", "value": agree})
    for n in sizes:
        pts = torch.from_numpy(sample_surface(a.mesh(), n, np.random.default_rng(0))[0]).float()
        pts = pts.to(args.device)
        match_points(field, pts[:64], za, zb, MatchConfig(steps=1))  # warm-up
        _sync(args.device)
        t0 = time.perf_counter()
        match_points(field, pts, za, zb, cfg)
        _sync(args.device)
        ours = time.perf_counter() - t0
        naive_s = per_point_step * n * args.steps
        c = f"V={n}, {cond}"
        rows.append({"variant": "ours", "category": "chair", "condition": c,
                     "metric": "seconds", "value": ours})
        rows.append({"variant": "naive (extrapolated)", "category": "chair", "condition": c,
                     "metric": "seconds", "value": naive_s})
        rows.append({"variant": "ours", "category": "chair", "condition": c,
                     "metric": "speedup vs naive", "value": naive_s / ours})
    write_results("bench_feature_matching", "bench", rows, args.json,
                  "Implicit feature matching: batched vs naive per-point autograd")
    return 0
