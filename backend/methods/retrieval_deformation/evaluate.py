"""``shapebridge eval retrieval_deformation``: Table 1 / Table 2 rows of paper 000 on the
built-in test split, from trained checkpoints.

Each ``--variant NAME=CHECKPOINT`` is evaluated on the test targets: retrieval of the top
source by R, deformation by D (and ``NAME w/ IDO`` with ``--ido``), and with ``--oracle``
(Table 2) deformation of every source keeping the best fit. Metric: squared chamfer
(PyTorch3D convention, sum of both directions) x 1e2, as the paper's tables, with 95 %
bootstrap CIs over targets. Baselines R (MDS + regression) and DAR are not implemented
yet (see README); DF / Uniform Sampling are checkpoints trained with ``--sampling
random_pairs`` / ``uniform``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from backend.bench.results import write_results
from backend.core.metrics import bootstrap_ci
from backend.methods.retrieval_deformation.checkpoint import load_checkpoint
from backend.methods.retrieval_deformation.data import builtin_targets
from backend.methods.retrieval_deformation.inference import retrieve_and_deform

METRIC = "chamfer_l2sq_x1e2"


def evaluate_checkpoint(path: str, category: str, count: int, ido: bool, oracle: bool,
                        device: str = "cpu", seed: int = 0, ido_max_iters: int = 2000) -> np.ndarray:
    """Per-target chamfer (x 1e2) of one checkpoint on ``count`` test targets.

    oracle: deform every source and keep the best fit (Table 2); otherwise the top-1
    retrieved source (Table 1). Returns (count,) float64.
    """
    model, doc = load_checkpoint(path, device)
    image = model.config.target == "image"
    train = doc.get("train", {})
    targets = builtin_targets(category, "test", count, seed=seed, n_points=train.get("n_points", 2048),
                              images=image, resolution=train.get("resolution", 128), views=1)
    out = []
    for t in range(count):
        pts = torch.from_numpy(targets.points[t:t + 1]).to(device)
        if image:
            inp = torch.from_numpy(targets.images[t:t + 1, 0]).to(device).permute(0, 3, 1, 2).float() / 255
        else:
            inp = pts
        if oracle:
            all_sources = torch.arange(len(model.library), device=device)[None]
            res = retrieve_and_deform(model, inp, pts, len(model.library), ido, sources=all_sources,
                                      ido_max_iters=ido_max_iters)
        else:
            res = retrieve_and_deform(model, inp, pts, 1, ido, ido_max_iters=ido_max_iters)
        out.append(float(res.fit[0, 0]) * 1e2)
    return np.asarray(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", required=True, metavar="NAME=CHECKPOINT",
                        help="a table row and its checkpoint, e.g. Ours=backend/zoo/.../chair_points")
    parser.add_argument("--category", default="chair")
    parser.add_argument("--targets", type=int, default=200, help="test targets per category")
    parser.add_argument("--ido", action="store_true", help="also report 'NAME w/ IDO' rows")
    parser.add_argument("--oracle", action="store_true", help="Table 2: oracle retrieval")
    parser.add_argument("--ido-max-iters", type=int, default=2000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the results files here")


def run(args: argparse.Namespace) -> int:
    rows = []
    for spec in args.variant:
        if "=" not in spec:
            raise ValueError(f"--variant must be NAME=CHECKPOINT, got {spec!r}")
        name, path = spec.split("=", 1)
        model, _ = load_checkpoint(path, "cpu")
        for ido in (False, True) if args.ido else (False,):
            values = evaluate_checkpoint(path, args.category, args.targets, ido, args.oracle,
                                         args.device, ido_max_iters=args.ido_max_iters)
            ci = bootstrap_ci(values)
            rows.append({"variant": name + (" w/ IDO" if ido else ""), "category": args.category,
                         "condition": model.config.target + (" oracle" if args.oracle else ""),
                         "metric": METRIC, "value": ci.value, "ci_low": ci.low,
                         "ci_high": ci.high, "n": len(values)})
    table = "Table 2 (oracle retrieval)" if args.oracle else "Table 1"
    write_results("retrieval_deformation", "eval", rows, args.json,
                  f"Retrieval and deformation, {table}: squared chamfer x 1e2")
    return 0
