"""Quick comparison of two feature-matching checkpoints before a full evaluation.

``shapebridge eval feature_matching`` matches every vertex of the subdivided source mesh
(4k-35k vertices, up to two minutes per pair per core for the network alone). This gate
matches the 2048 source surface samples directly instead, about 5 s per pair and
checkpoint, and reports the two measures the issue's claims rest on:

- part CD (x1e-3) of the matched samples against the target's samples, per semantic part;
- the keypoint error of ``--pairs`` pairs, exactly as the full evaluation computes it,
  as a ratio to nearest neighbour.

On the shipped chair checkpoint it gives the full evaluation's figures (part CD 1.82,
ratio 0.71 on the 100 random pairs). Use it to decide whether a retrained checkpoint is
worth the full evaluation:

    python benchmarks/fm_gate.py backend/zoo/feature_matching/chair.pt runs/.../chair.pt \\
        --condition random --pairs 100

``--autodecode STEPS`` measures the add-on's auto-decoded codes instead of the encoder's
(each test shape's code refined once, ~30-50 s per shape and 100 steps on one core).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from backend.core.metrics import part_chamfer
from backend.data.shapes import Mesh
from backend.methods.feature_matching import evaluate as ev
from backend.methods.feature_matching.matching import MatchConfig, match_points
from backend.methods.feature_matching.model import load_checkpoint


def pair_measures(
    field_, pair: ev.PairData, za: torch.Tensor, zb: torch.Tensor, config: ev.EvalConfig,
    target_mesh: Mesh,
) -> tuple[float, float | None]:
    """(part CD of the pair's matched source samples against the target's, keypoint error
    of the keypoints present on both shapes, or None when they share none), codes za, zb.
    target_mesh: ``pair.target.mesh()``, built once per pair by the caller."""
    moved = match_points(field_, pair.source_points, za, zb, config.match).points
    part_cd = float(part_chamfer(moved[None], pair.labels[None], pair.target_points[None],
                                 pair.target_labels[None]).chamfer_mean[0])
    both = pair.source.keypoint_mask & pair.target.keypoint_mask
    if not both.any():
        return part_cd, None
    kp = torch.from_numpy(pair.source.keypoints[both]).float()
    kp = match_points(field_, kp, za, zb, config.match).points.double().numpy()
    truth = pair.target.keypoints[both].astype(np.float64)
    return part_cd, ev.keypoint_error(kp, target_mesh, truth)


def prepared(a, b, config: ev.EvalConfig, sample_seed: int):
    """(the pair's evaluation data, its samples drawn with ``sample_seed``; the target's
    mesh; the nearest-neighbour keypoint error, None when the shapes share no keypoint)."""
    pair = ev.prepare_pair(a, b, config.points, config.max_edge, sample_seed)
    both = a.keypoint_mask & b.keypoint_mask
    mesh_b = b.mesh()
    if not both.any():
        return pair, mesh_b, None
    truth = b.keypoints[both].astype(np.float64)
    return pair, mesh_b, ev.keypoint_error(a.keypoints[both], mesh_b, truth)


def compare(
    checkpoints: dict[str, str], category: str, condition: str, pairs: int,
    config: ev.EvalConfig | None = None, progress: bool = False, start: int = 0,
    autodecode: int = 0,
) -> dict[str, dict[str, float]]:
    """{name: {"part CD": mean x1e-3, "keypoint ratio": mean error / nearest neighbour's,
    "wins": pairs where this checkpoint's part CD is the lowest}} over the same pairs."""
    return summarize(measure(checkpoints, category, condition, pairs, config, progress, start,
                             autodecode))


def measure(
    checkpoints: dict[str, str], category: str, condition: str, pairs: int,
    config: ev.EvalConfig | None = None, progress: bool = False, start: int = 0,
    autodecode: int = 0,
) -> dict:
    """Per-pair values of pairs start .. start + pairs - 1 of the evaluation's draw:
    {"part CD": {name: [...]}, "keypoint": {name: [...]}, "nearest": [...]}; the keypoint
    lists skip pairs without shared keypoints. Shards (``start``) concatenate.
    autodecode: > 0 refines every encoder code by that many auto-decoding steps
    (`evaluate.refined_code`, seeded by the shape's seed, so a shape gets the same code in every
    pair and shard)."""
    config = config or ev.EvalConfig()
    models = {name: load_checkpoint(path, "cpu")[0] for name, path in checkpoints.items()}
    fields = {name: ev.decoder_field(m.decoder, config.layers, config.layer_weights)
              for name, m in models.items()}
    only = ev.armchair_to_no_arm if condition == "armchair" else None
    chosen = ev.select_pairs(category, config.pairs, config.seed, only)[start:start + pairs]
    part_cd = {name: [] for name in models}
    keypoint = {name: [] for name in models}
    nearest: list[float] = []
    refined: dict[tuple[str, int], torch.Tensor] = {}  # (checkpoint, shape seed): code
    t0 = time.perf_counter()
    for k, (a, b) in enumerate(chosen, start):
        pair, mesh_b, nn_error = prepared(a, b, config, config.seed + k)
        if nn_error is not None:
            nearest.append(nn_error)
        for name, model in models.items():
            za, zb = ev._codes(model, pair, "cpu")
            if autodecode:
                for z, shape in ((za, a), (zb, b)):
                    if (name, shape.seed) not in refined:
                        refined[name, shape.seed] = ev.refined_code(
                            model, model.shape_voxels(shape), z, autodecode, shape.seed)
                za, zb = refined[name, a.seed], refined[name, b.seed]
            cd, error = pair_measures(fields[name], pair, za, zb, config, mesh_b)
            part_cd[name].append(cd)
            if error is not None:
                keypoint[name].append(error)
        if progress and (k + 1 - start) % 10 == 0:
            print(f"{k + 1 - start}/{len(chosen)} pairs ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return {"part CD": part_cd, "keypoint": keypoint, "nearest": nearest}


def summarize(raw: dict) -> dict[str, dict[str, float]]:
    """The `compare` table of `measure`'s per-pair values (or of shards concatenated)."""
    part_cd, keypoint, nearest = raw["part CD"], raw["keypoint"], raw["nearest"]
    table = np.array([part_cd[name] for name in part_cd])  # (checkpoints, pairs)
    best = table.argmin(0)
    return {name: {"part CD": 1e3 * float(np.mean(part_cd[name])),
                   "keypoint ratio": float(np.mean(keypoint[name]) / np.mean(nearest))
                   if nearest else float("nan"),
                   "wins": int((best == i).sum()), "pairs": table.shape[1]}
            for i, name in enumerate(part_cd)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", help="feature_matching checkpoints (.pt)")
    parser.add_argument("--category", default="chair")
    parser.add_argument("--condition", choices=("random", "armchair"), default="random")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--steps", type=int, default=50, help="latent interpolation steps")
    parser.add_argument("--start", type=int, default=0,
                        help="skip this many pairs of the draw (run shards side by side)")
    parser.add_argument("--autodecode", type=int, default=0,
                        help="refine each encoder code by this many auto-decoding steps "
                             "(the add-on's code_from=autodecode; 0: encoder codes, as the "
                             "evaluation)")
    parser.add_argument("--json", default=None,
                        help="also write the per-pair values here (shards: concatenate the "
                             "lists and call summarize)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = ev.EvalConfig(match=MatchConfig(steps=args.steps))
    raw = measure({path: path for path in args.checkpoints}, args.category, args.condition,
                  args.pairs, config, progress=True, start=args.start,
                  autodecode=args.autodecode)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"start": args.start, "autodecode": args.autodecode, **raw}, f)
    result = summarize(raw)
    print("| checkpoint | part CD (x1e-3) | keypoint / nearest neighbour | lowest part CD on |")
    print("|---|---|---|---|")
    for name, row in result.items():
        print(f"| {name} | {row['part CD']:.3f} | {row['keypoint ratio']:.3f} | "
              f"{row['wins']}/{row['pairs']} pairs |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
