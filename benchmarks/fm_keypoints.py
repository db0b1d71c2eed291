"""Per-keypoint correspondence error of a feature-matching checkpoint, on validation pairs.

For each named keypoint: our error and nearest neighbour's (both snapped to the target's
surface, as the evaluation's Table 2), their ratio, its share of our total error, and the
mean absolute x / y / z components of the error (y is up: a leg end that slides along its
leg shows as a y error). Pairs come from `fm_sweep.validation_pairs` (the test split stays
for `shapebridge eval feature_matching`).

    python benchmarks/fm_keypoints.py backend/zoo/feature_matching/chair.pt --pairs 40
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from fm_sweep import validation_pairs  # benchmarks/, the script's own folder

from backend.data.shapes import KEYPOINT_NAMES
from backend.methods.feature_matching import evaluate as ev
from backend.methods.feature_matching.matching import match_points, nearest_surface_points
from backend.methods.feature_matching.model import load_checkpoint


def per_keypoint(checkpoint: str, category: str, shapes: int, pairs: int, seed: int,
                 config: ev.EvalConfig | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{keypoint name: {"ours": (n, 3), "nearest": (n, 3)}}: snapped point minus the true
    keypoint, one row per validation pair where both shapes have that keypoint."""
    config = config or ev.EvalConfig()
    model = load_checkpoint(checkpoint, "cpu")[0]
    field_ = ev.decoder_field(model.decoder, config.layers, config.layer_weights)
    names = KEYPOINT_NAMES[category]
    out: dict[str, dict[str, list]] = {n: {"ours": [], "nearest": []} for n in names}
    for a, b, k in validation_pairs(category, shapes, pairs, seed):
        both = a.keypoint_mask & b.keypoint_mask
        if not both.any():
            continue
        pair = ev.prepare_pair(a, b, 64, config.max_edge, k)
        za, zb = ev._codes(model, pair, "cpu")
        kp = torch.from_numpy(a.keypoints[both]).float()
        moved = match_points(field_, kp, za, zb, config.match).points.double().numpy()
        mesh = b.mesh()
        truth = b.keypoints[both].astype(np.float64)
        ours, _ = nearest_surface_points(moved, mesh.vertices, mesh.faces)
        near, _ = nearest_surface_points(a.keypoints[both].astype(np.float64), mesh.vertices,
                                         mesh.faces)
        for row, index in enumerate(np.flatnonzero(both)):
            out[names[index]]["ours"].append(ours[row] - truth[row])
            out[names[index]]["nearest"].append(near[row] - truth[row])
    return {n: {key: np.asarray(v).reshape(-1, 3) for key, v in d.items()}
            for n, d in out.items() if d["ours"]}


def table(errors: dict[str, dict[str, np.ndarray]]) -> str:
    """The Markdown table of `per_keypoint`'s errors."""
    total_ours = sum(np.linalg.norm(e["ours"], axis=1).sum() for e in errors.values())
    total_near = sum(np.linalg.norm(e["nearest"], axis=1).sum() for e in errors.values())
    lines = [f"all keypoints: ours / nearest neighbour = {total_ours / total_near:.3f}", "",
             "| keypoint | n | ours | nearest | ratio | share of our error | ours abs x, y, z | "
             "nearest abs x, y, z |", "|---|---|---|---|---|---|---|---|"]
    for name, e in errors.items():
        o, m = np.linalg.norm(e["ours"], axis=1), np.linalg.norm(e["nearest"], axis=1)
        co, cm = np.abs(e["ours"]).mean(0), np.abs(e["nearest"]).mean(0)
        lines.append(f"| {name} | {len(o)} | {o.mean():.3f} | {m.mean():.3f} | "
                     f"{o.mean() / m.mean():.2f} | {o.sum() / total_ours:.2f} | "
                     f"{co[0]:.3f}, {co[1]:.3f}, {co[2]:.3f} | {cm[0]:.3f}, {cm[1]:.3f}, {cm[2]:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--category", default="chair")
    parser.add_argument("--shapes", type=int, default=100, help="validation shapes drawn from")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(table(per_keypoint(args.checkpoint, args.category, args.shapes, args.pairs, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
