"""``shapebridge bench retrieval_deformation``: latency of one target against 10^3 and 10^5
sources, with and without IDO.

The retrieval step scans S source embeddings (an untrained retrieval module with S
sources: the latency does not depend on the weights); the top-k indices are mapped onto a
20-source built-in library (index modulo 20) whose sources are then deformed (and IDO'd),
so 10^5 sources need no 10^5 meshes in memory. Timings are medians of
``--repeats`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.bench.results import write_results
from backend.methods.retrieval_deformation.checkpoint import build_model
from backend.methods.retrieval_deformation.inference import retrieve_and_deform
from backend.methods.retrieval_deformation.library import builtin_library
from backend.methods.retrieval_deformation.model import ModelConfig, RetrievalModule


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
    parser.add_argument("--category", default="chair")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--ido-max-iters", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)


def run(args: argparse.Namespace) -> int:
    base = builtin_library(args.category, 20, n_points=2048)
    target = torch.from_numpy(base.points[:1]).to(args.device)
    rows = []
    model = build_model(ModelConfig(), base).to(args.device).eval()
    for size in args.sizes:
        retrieval = RetrievalModule(ModelConfig(), size).to(args.device).eval()
        for ido in (False, True):
            @torch.no_grad()
            def once(retrieval=retrieval, ido=ido):
                d2 = retrieval.distances(retrieval.encoder(target))
                top = torch.topk(d2, args.top_k, dim=1, largest=False).indices % len(base)
                retrieve_and_deform(model, target, target, args.top_k, ido, sources=top,
                                    ido_max_iters=args.ido_max_iters)
            rows.append({"variant": "w/ IDO" if ido else "network only", "category": args.category,
                         "condition": f"{size} sources, top-{args.top_k}", "metric": "seconds",
                         "value": _median_seconds(once, args.repeats), "n": args.repeats})
    write_results("bench_retrieval_deformation", "bench", rows, args.json,
                  "Retrieve & deform latency, one point-cloud target")
    return 0
