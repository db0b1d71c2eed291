"""Keypoint transfer when the matched points start on (or end at) the network's surfaces.

Paper 001 samples x_0 on the source surface *as the network represents it*,
M_A = {x | F(x; z_A) = tau} (Sec. 2.2, Fig. 2; Sec. 4.1 "points from the reconstructed
shape surface"). The evaluation and the add-on match the points of the user's mesh, which
lie off M_A by the reconstruction error (about 0.03 of the unit cube for the `cpu`-preset
chair). This script asks whether moving the keypoints onto M_A first, or the matched
points onto the target's M_B before snapping them to the target mesh, transfers keypoints
better. Variants, over random ordered pairs of **validation** shapes (encoder codes):

- ``paper``: the evaluation's keypoint error (x_0 = the keypoint; x_1 snapped);
- ``start on M_A``: x_0 = the keypoint moved onto M_A;
- ``end on M_B``: x_1 moved onto M_B before snapping;
- ``both``: the two together.

Each is reported as a ratio to nearest neighbour, as the evaluation does. ``--steps`` and
``--gn-iterations`` change the matching schedule (paper: 50 x 3). About 1.5 s per pair on
one core with the shipped chair:

    python benchmarks/fm_surface_start.py backend/zoo/feature_matching/chair.pt \\
        --shapes 100 --pairs 150 --seed 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from fm_sweep import add_validation_arguments, validation_pairs  # benchmarks/

from backend.methods.feature_matching import evaluate as ev
from backend.methods.feature_matching.matching import MatchConfig, match_points
from backend.methods.feature_matching.model import ImplicitDecoder, load_checkpoint

VARIANTS = ("paper", "start on M_A", "end on M_B", "both")


def project_to_surface(
    decoder: ImplicitDecoder, points: torch.Tensor, code: torch.Tensor, tau: float = 0.5,
    iterations: int = 10, max_step: float = 0.02,
) -> torch.Tensor:
    """Points (N, 3) moved onto the level set F(x; code) = tau by Newton steps along the
    gradient of the decoder's logits (before the soft clip), x <- x - (F - tau) grad F / |grad F|^2, each step at most ``max_step`` long
    (all points at once; one batched backward pass per step)."""
    x = points.detach().clone()
    for _ in range(iterations):
        with torch.enable_grad():
            xr = x.requires_grad_(True)
            y = decoder.logits(xr, code)
            (grad,) = torch.autograd.grad(y.sum(), xr)
        step = -(y.detach() - tau).unsqueeze(-1) * grad / (grad * grad).sum(-1, True).clamp_min(1e-12)
        length = step.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        x = (x.detach() + step * (max_step / length).clamp(max=1.0)).detach()
    return x


def measure(checkpoint: str, category: str, shapes: int, pairs: int, seed: int,
            progress: bool = False, match: MatchConfig | None = None) -> dict[str, list[float]]:
    """Per-pair keypoint errors {"nearest": [...], variant: [...]} over the pairs of
    `fm_sweep.validation_pairs` that share keypoints; match: the matching schedule
    (default the paper's, as the evaluation)."""
    model = load_checkpoint(checkpoint, "cpu")[0]
    config = ev.EvalConfig(match=match or MatchConfig())
    field = ev.decoder_field(model.decoder, config.layers, config.layer_weights)
    raw: dict[str, list[float]] = {"nearest": [], **{v: [] for v in VARIANTS}}
    t0 = time.perf_counter()
    for n, (a, b, _) in enumerate(validation_pairs(category, shapes, pairs, seed), 1):
        both = a.keypoint_mask & b.keypoint_mask
        if both.any():
            mesh_b, truth = b.mesh(), b.keypoints[both].astype(np.float64)
            raw["nearest"].append(ev.keypoint_error(a.keypoints[both], mesh_b, truth))
            voxels = torch.stack([model.shape_voxels(a), model.shape_voxels(b)])
            with torch.no_grad():
                za, zb = model.encoder(voxels)
            kp = torch.from_numpy(a.keypoints[both]).float()
            plain = match_points(field, kp, za, zb, config.match).points
            moved = match_points(field, project_to_surface(model.decoder, kp, za), za, zb,
                                 config.match).points
            ends = {"paper": plain, "start on M_A": moved,
                    "end on M_B": project_to_surface(model.decoder, plain, zb),
                    "both": project_to_surface(model.decoder, moved, zb)}
            for v, x1 in ends.items():
                raw[v].append(ev.keypoint_error(x1.double().numpy(), mesh_b, truth))
        if progress and n % 25 == 0:
            print(f"{n}/{pairs} pairs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return raw


def ratios(raw: dict[str, list[float]]) -> dict[str, float]:
    """Mean keypoint error / nearest neighbour's, per variant."""
    nearest = float(np.mean(raw["nearest"])) if raw["nearest"] else float("nan")
    return {v: float(np.mean(raw[v])) / nearest for v in VARIANTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_validation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the draw")
    parser.add_argument("--steps", type=int, default=50, help="latent interpolation steps")
    parser.add_argument("--gn-iterations", type=int, default=3,
                        help="Gauss-Newton iterations per step")
    parser.add_argument("--json", default=None, help="also write the per-pair values here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    raw = measure(args.checkpoint, args.category, args.shapes, args.pairs, args.seed, True,
                  MatchConfig(steps=args.steps, gn_iterations=args.gn_iterations))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(vars(args) | raw, f)
    print(f"{args.category}, {len(raw['nearest'])} validation pairs with shared keypoints "
          f"(shapes {args.shapes}, seed {args.seed}; {args.steps} steps x {args.gn_iterations} "
          f"Gauss-Newton iterations), {time.perf_counter() - start:.0f} s")
    print("| variant | keypoint / nearest neighbour |")
    print("|---|---|")
    for v, r in ratios(raw).items():
        print(f"| {v} | {r:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
