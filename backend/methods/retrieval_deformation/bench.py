"""``shapebridge bench retrieval_deformation``: latency of one target against 10^3 and 10^5
sources, with and without IDO.

The networks are a trained checkpoint's (default: the zoo's chair/points one), so IDO
starts from real predictions and takes a realistic number of steps. The retrieval scan
runs over S source embeddings: the checkpoint's trained embeddings (and per-source
weights) tiled to S, then top-k. The candidates deformed (and IDO'd) are the k nearest
distinct sources of the checkpoint's own library, so 10^5 sources need no 10^5 meshes in
memory and both sizes deform the same candidates. The target is a built-in test shape. Timings are medians of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.bench.results import write_results
from backend.methods.retrieval_deformation.inference import retrieve_and_deform
from backend.methods.retrieval_deformation.method import ZOO
from backend.methods.retrieval_deformation.model import RetrievalModule


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--checkpoint", default=str(ZOO / "chair_points"),
                        help="trained point-target checkpoint (networks, library)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ido-max-iters", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)


def run(args: argparse.Namespace) -> int:
    from backend.methods.retrieval_deformation.checkpoint import load_checkpoint
    from backend.methods.retrieval_deformation.data import builtin_targets

    model, doc = load_checkpoint(args.checkpoint, args.device)
    if model.config.target != "points":
        raise ValueError(f"{args.checkpoint}: the bench times point-cloud targets")
    train = doc.get("train", {})
    category = train.get("category", "chair")
    n_points = int(train.get("n_points", 2048))
    target = torch.from_numpy(
        builtin_targets(category, "test", 1, seed=0, n_points=n_points).points).to(args.device)
    lib_size = len(model.library)
    # CPU figures depend on the thread count (OMP_NUM_THREADS), so the condition names it.
    threads = torch.get_num_threads()
    where = args.device if args.device != "cpu" else f"cpu, {threads} thread{'s' * (threads != 1)}"
    rows = []
    for size in args.sizes:
        retrieval = RetrievalModule(model.config, size).to(args.device).eval()
        retrieval.encoder = model.retrieval.encoder
        with torch.no_grad():
            tiles = torch.arange(size, device=args.device) % lib_size
            retrieval.source_embeddings.copy_(model.retrieval.source_embeddings[tiles])
            retrieval.source_weights.copy_(model.retrieval.source_weights[tiles])
        for ido in (False, True):
            last = {}

            @torch.no_grad()
            def once(retrieval=retrieval, ido=ido, last=last):
                d2 = retrieval.distances(retrieval.encoder(target))
                torch.topk(d2, args.top_k, dim=1, largest=False)  # the scan over S sources
                # The candidates deformed: the k nearest distinct library sources (the
                # scan's copies of one source would all stop IDO at the same step).
                top = torch.topk(d2[:, :lib_size], args.top_k, dim=1, largest=False).indices
                last["res"] = retrieve_and_deform(model, target, target, args.top_k, ido,
                                                  sources=top, ido_max_iters=args.ido_max_iters)
            seconds = _median_seconds(once, args.repeats)
            row = {"variant": "w/ IDO" if ido else "network only", "category": category,
                   "condition": f"{size} sources, top-{args.top_k}, {n_points} points, "
                                f"{where}"}
            rows.append({**row, "metric": "seconds", "value": seconds, "n": args.repeats})
            rows.append({**row, "metric": "best fit chamfer x1e2",
                         "value": float(last["res"].fit[0, 0]) * 1e2, "n": 1})
    write_results("bench_retrieval_deformation", "bench", rows, args.json,
                  f"Retrieve & deform latency, one point-cloud target ({args.checkpoint})")
    return 0
