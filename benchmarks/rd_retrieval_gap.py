"""Where Ours loses to R in Table 1 of paper 000: the retrieval, the deformation, or the metric.

For one trained retrieval_deformation checkpoint and the built-in targets of one split, each
target is scored against every source, deformed by the checkpoint's network and undeformed.
Rows (mean over the targets, squared chamfer x 1e2 as the evaluation):

- ``top-1 retrieved, deformed``: Table 1's "Ours" (the source nearest in R);
- ``best of the top-10 retrieved, deformed``: the best fit among the 10 nearest in R;
- ``oracle, deformed``: the best deformed fit over all sources (Table 2's "Ours");
- ``oracle, undeformed``: the best undeformed source. R retrieves without deforming, so
  this bounds R (and its "retrieval only" row) from below;
- ``rank of the top-1``: median count of sources whose deformed fit beats the top-1's;
- ``top-10 slots by sigma_k quartile``: the share of all top-10 retrieval slots taken by
  the sources of each quartile of the learned sigma_k (Eq. 2), lowest first. With equal
  shares (0.25 each) sigma_k does not decide which sources are retrieved.

Each fit is measured twice: on the evaluation's samples (the checkpoint's ``n_points`` on
both sides, as `shapebridge eval retrieval_deformation`) and on ``--dense-points`` fresh
samples of the target mesh and of the source mesh (deformed part by part), which removes
most of the sampling floor (`evaluate.sampling_floor`). ``--split train`` takes the
training targets (the train split after the library's sources) to tell under-fitting
from over-fitting. About 8 s per target on one core at 512 / 2048 points:

    python benchmarks/rd_retrieval_gap.py backend/zoo/retrieval_deformation/chair_points \\
        --targets 50 --md benchmarks/results/rd_retrieval_gap/chair_points.md
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from backend.core.metrics import chamfer_distance
from backend.data.samples import sample_surface
from backend.data.shapes import Mesh
from backend.methods.retrieval_deformation.checkpoint import load_checkpoint
from backend.methods.retrieval_deformation.data import builtin_targets
from backend.methods.retrieval_deformation.deformation import deform_points
from backend.methods.retrieval_deformation.evaluate import SCALE, resampled_points
from backend.methods.retrieval_deformation.inference import retrieve_and_deform

ROWS = ("top-1 retrieved, deformed", "best of the top-10 retrieved, deformed",
        "oracle, deformed", "oracle, undeformed")


def dense_sources(library, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, n, 3) fresh surface samples of every source mesh and their (S, n) part indices."""
    pts = np.zeros((len(library), n, 3), np.float32)
    parts = np.zeros((len(library), n), np.int64)
    for s in range(len(library)):
        v, f, fp = library.mesh(s)
        p, _, face = sample_surface(Mesh(v, f, fp), n, np.random.default_rng([seed, s, 2]))
        pts[s], parts[s] = p, fp[face]
    return torch.from_numpy(pts), torch.from_numpy(parts)


def target_fits(model, inputs: torch.Tensor, points: torch.Tensor, dense: torch.Tensor | None,
                src_pts: torch.Tensor | None, src_parts: torch.Tensor | None,
                centers: torch.Tensor | None) -> dict:
    """Fits of every source to B targets: {"d2": (B, S) retrieval distances, "sparse" /
    "dense": {"deformed", "undeformed"} -> (B, S) chamfer x 1e2 (dense only with samples;
    ``centers``: the (S, P, 3) part centres of the library's `SourceBatch`)}."""
    b, s = points.shape[0], len(model.library)
    everything = torch.arange(s)[None].expand(b, -1)
    d2 = model.retrieval.distances(model.retrieval.encoder(inputs))
    out = {"d2": d2, "sparse": {}, "dense": {}}
    rows = torch.arange(b)[:, None]
    for deform in (True, False):
        res = retrieve_and_deform(model, inputs, points, s, False, sources=everything,
                                  deform=deform)
        key = "deformed" if deform else "undeformed"
        fit = torch.empty(b, s, dtype=torch.float64)
        fit[rows, res.sources] = res.fit.double() * SCALE
        out["sparse"][key] = fit
        if dense is None:
            continue
        dfit = torch.empty(b, s, dtype=torch.float64)
        for i in range(b):
            params = res.params[i][:, :centers.shape[1]]
            order = res.sources[i]
            moved = (deform_points(src_pts[order], src_parts[order], centers[order], params)
                     if deform else src_pts[order])
            dfit[i, order] = chamfer_distance(moved, dense[i:i + 1].expand(s, -1, -1)
                                              ).chamfer.double() * SCALE
        out["dense"][key] = dfit
    return out


def summarise(d2: torch.Tensor, fits: dict[str, torch.Tensor], top: int = 10) -> dict:
    """Per-target values of the module docstring's rows from (T, S) tensors."""
    order = torch.argsort(d2, dim=1)
    deformed, undeformed = fits["deformed"], fits["undeformed"]
    t = torch.arange(len(d2))
    top1 = deformed[t, order[:, 0]]
    return {ROWS[0]: top1, ROWS[1]: deformed.gather(1, order[:, :top]).min(1).values,
            ROWS[2]: deformed.min(1).values, ROWS[3]: undeformed.min(1).values,
            "rank": (deformed < top1[:, None]).sum(1).double()}


def sigma_quartile_shares(d2: torch.Tensor, sigma: torch.Tensor, top: int = 10) -> list[float]:
    """Share of the (T, top) retrieval slots held by each quartile of sigma (S,), lowest
    first (ties broken by source index, so equal sigmas give four equal quartiles)."""
    quartile = torch.empty(len(sigma), dtype=torch.int64)
    quartile[torch.argsort(sigma, stable=True)] = torch.arange(len(sigma)) * 4 // len(sigma)
    slots = quartile[torch.topk(d2, min(top, d2.shape[1]), dim=1, largest=False).indices]
    return [float((slots == q).double().mean()) for q in range(4)]


def measure(checkpoint: str, split: str, count: int, dense_points: int, seed: int = 0) -> dict:
    model, doc = load_checkpoint(checkpoint, "cpu")
    train = doc.get("train", {})
    category, n_points = train.get("category", "chair"), train.get("n_points", 2048)
    image = model.config.target == "image"
    skip = len(model.library) if split == "train" else 0
    targets = builtin_targets(category, split, count, seed=seed, skip=skip, n_points=n_points,
                              images=image, resolution=train.get("resolution", 128), views=1)
    src_pts = src_parts = centers = dense = None
    if dense_points:
        src_pts, src_parts = dense_sources(model.library, dense_points, seed)
        centers = model.library.batch(torch.arange(len(model.library)), "cpu").centers
        dense = torch.from_numpy(resampled_points(category, targets.seeds, dense_points, seed,
                                                  stream=3))
    d2, fits = [], {"sparse": {"deformed": [], "undeformed": []},
                    "dense": {"deformed": [], "undeformed": []}}
    for k in range(len(targets.seeds)):
        pts = torch.from_numpy(targets.points[k:k + 1])
        inputs = (torch.from_numpy(targets.images[k:k + 1, 0]).permute(0, 3, 1, 2).float() / 255
                  if image else pts)
        with torch.no_grad():
            out = target_fits(model, inputs, pts, None if dense is None else dense[k:k + 1],
                              src_pts, src_parts, centers)
        d2.append(out["d2"])
        for kind in ("sparse", "dense"):
            for key, value in out[kind].items():
                fits[kind][key].append(value)
    d2 = torch.cat(d2)
    sigma = model.retrieval.sigma(torch.arange(len(model.library))).detach().double()
    table = {f"{n_points} points (the evaluation's)": summarise(
        d2, {k: torch.cat(v) for k, v in fits["sparse"].items()})}
    if dense_points:
        table[f"{dense_points} fresh points"] = summarise(
            d2, {k: torch.cat(v) for k, v in fits["dense"].items()})
    return {"category": category, "target": model.config.target, "split": split,
            "sigma_quartile_shares": sigma_quartile_shares(d2, sigma),
            "targets": count, "seeds": targets.seeds.tolist(), "sources": len(model.library),
            "table": table}


def markdown(result: dict, command: str) -> str:
    cols = list(result["table"])
    lines = [f"# Retrieval gap: {result['category']}, {result['target']} targets, "
             f"{result['targets']} {result['split']} targets, {result['sources']} sources",
             "", f"`{command}`", "",
             "Squared chamfer x 1e2 (PyTorch3D convention), mean over the targets; the rank "
             "row is the median count of sources whose deformed fit beats the top-1's.", "",
             "| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for row in ROWS:
        lines.append(f"| {row} | " + " | ".join(
            f"{float(result['table'][c][row].mean()):.4f}" for c in cols) + " |")
    lines.append("| rank of the top-1 (median) | " + " | ".join(
        f"{float(result['table'][c]['rank'].median()):.0f}" for c in cols) + " |")
    shares = " / ".join(f"{v:.2f}" for v in result["sigma_quartile_shares"])
    lines += ["", f"Top-10 retrieval slots by sigma_k quartile, lowest first: {shares}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test")
    parser.add_argument("--targets", type=int, default=50)
    parser.add_argument("--dense-points", type=int, default=2048,
                        help="fresh samples per shape for the second measure (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--md", default=None, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    result = measure(args.checkpoint, args.split, args.targets, args.dense_points, args.seed)
    text = markdown(result, "python " + " ".join(sys.argv))
    text += f"\n{time.time() - t0:.0f} s on the CPU, 1 thread.\n"
    print(text)
    if args.md:
        from pathlib import Path
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
