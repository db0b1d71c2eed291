"""``shapebridge eval feature_matching``: deformation and correspondence quality.

This session's version measures, on random pairs of test-split built-in shapes:
whole-shape and part-level chamfer (squared, mean of both directions, as reported in
Table 1 with a x1000 factor applied in the table) and EMD of the matched source surface
samples against the target's, for ours and for the undeformed source; and the keypoint
correspondence error (Table 2 style) of ours (keypoint matched, then snapped to the
nearest target surface point) against nearest neighbour (keypoint snapped directly).
Cross-fitting baselines and the Fig. 6 layer sweep are listed in README "What remains".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from backend.bench.results import write_results
from backend.core.metrics import bootstrap_ci, chamfer_distance, emd, part_chamfer
from backend.data.samples import sample_shape
from backend.data.shapes import CATEGORIES, generate_shape
from backend.methods.feature_matching.data import category_seeds
from backend.methods.feature_matching.matching import (
    MatchConfig,
    decoder_field,
    match_points,
    nearest_surface_points,
)
from backend.methods.feature_matching.model import load_checkpoint
from backend.methods.feature_matching.train import DEFAULT_ZOO

__all__ = ["add_arguments", "evaluate_pairs", "run"]


def evaluate_pairs(
    model, category: str, pairs: int, points: int, config: MatchConfig, device: str, seed: int = 0
) -> dict[str, list[float]]:
    """Per-pair metrics of ours and the baselines on ``pairs`` random test pairs.

    model: `ImplicitModel` of the category. points: surface samples per shape.
    Returns {metric name: one value per pair} (keypoint errors: one per pair, the mean
    over the keypoints present on both shapes; pairs sharing none are skipped).
    """
    rng = np.random.default_rng(seed)
    seeds = category_seeds(category, "test", max(2 * pairs, 2), seed)
    field = decoder_field(model.decoder)
    out: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        out.setdefault(name, []).append(float(value))

    for _ in range(pairs):
        sa, sb = rng.choice(seeds, 2, replace=False)
        a, b = generate_shape(category, int(sa)), generate_shape(category, int(sb))
        sam_a, sam_b = sample_shape(a, 0, points, 0, 0), sample_shape(b, 0, points, 0, 0)
        with torch.no_grad():
            vox = torch.from_numpy(np.stack([a.occupancy_grid(64), b.occupancy_grid(64)]))
            za, zb = model.encoder(vox.to(device))
        x = torch.from_numpy(sam_a.surface_points).to(device)
        moved = match_points(field, x, za, zb, config).points.cpu()
        y = torch.from_numpy(sam_b.surface_points)[None]
        la = torch.from_numpy(sam_a.surface_labels).long()[None]
        lb = torch.from_numpy(sam_b.surface_labels).long()[None]
        for variant, pts in (("ours", moved[None]), ("source", x.cpu()[None])):
            add(f"{variant}/CD", chamfer_distance(pts, y).chamfer_mean[0])
            add(f"{variant}/EMD", emd(pts, y)[0])
            add(f"{variant}/part CD", part_chamfer(pts, la, y, lb).chamfer_mean[0])
        both = a.keypoint_mask & b.keypoint_mask
        if both.any():
            mesh_b = b.mesh()
            kp = torch.from_numpy(a.keypoints[both]).to(device)
            kp_moved = match_points(field, kp, za, zb, config).points.cpu().double().numpy()
            ours, _ = nearest_surface_points(kp_moved, mesh_b.vertices, mesh_b.faces)
            nn, _ = nearest_surface_points(a.keypoints[both], mesh_b.vertices, mesh_b.faces)
            gt = b.keypoints[both].astype(np.float64)
            add("ours/keypoint error", np.linalg.norm(ours - gt, axis=1).mean())
            add("nearest neighbour/keypoint error", np.linalg.norm(nn - gt, axis=1).mean())
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shapebridge eval feature_matching``."""
    parser.add_argument("--category", default="chair", choices=CATEGORIES)
    parser.add_argument("--checkpoint", default=None,
                        help="default backend/zoo/feature_matching/<category>.pt")
    parser.add_argument("--pairs", type=int, default=100, help="random test pairs (paper: 100)")
    parser.add_argument("--points", type=int, default=2048, help="surface samples per shape")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="results path (writes .json and .md)")


def run(args: argparse.Namespace) -> int:
    """Evaluate the category's checkpoint; print and write the table."""
    path = Path(args.checkpoint) if args.checkpoint else DEFAULT_ZOO / f"{args.category}.pt"
    try:
        model, _ = load_checkpoint(path, args.device)
    except FileNotFoundError as err:
        print(err)
        return 2
    values = evaluate_pairs(model, args.category, args.pairs, args.points,
                            MatchConfig(steps=args.steps), args.device, args.seed)
    rows = []
    for name, vals in values.items():
        variant, metric = name.split("/")
        ci = bootstrap_ci(np.asarray(vals), seed=args.seed)
        rows.append({"variant": variant, "category": args.category, "metric": metric,
                     "value": ci.value, "ci_low": ci.low, "ci_high": ci.high, "n": len(vals)})
    write_results("feature_matching", "eval", rows, args.json,
                  "Implicit feature matching: deformation and correspondence (built-in data)")
    return 0
