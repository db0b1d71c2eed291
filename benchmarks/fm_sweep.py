"""Matching settings against the two measures of issue 5's claims, on validation pairs.

The paper matches layer 3 + eta x layer 6 (eta = 0.1) with lambda = 0.01, and these are
the defaults. This script asks whether another choice of layers, weights or lambda would
transfer keypoints better, without touching the test split that
``shapebridge eval feature_matching`` reports on. For each variant it gives, over the same
random ordered pairs of **validation** shapes (encoder codes, as the evaluation):

- the keypoint error as a ratio to nearest neighbour, computed as the full evaluation does;
- part CD (x1e-3) of 2048 matched source samples against the target's (as ``fm_gate.py``).

A variant is ``LAYERS[:WEIGHTS[:LAMBDA[:JACOBIAN]]]``, e.g. ``3,6:1,0.1:0.01`` (the
paper), ``4``, ``3,6:1,1`` or ``3,6:1,0.1:0.01:current``. About 5 s per pair and variant
on one core with the shipped chair.

    python benchmarks/fm_sweep.py backend/zoo/feature_matching/chair.pt --pairs 40 \\
        --variant 3,6:1,0.1 --variant 3 --variant 4 --variant 3,6:1,1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
from fm_gate import pair_measures, prepared  # benchmarks/, the script's own folder

from backend.methods.feature_matching import evaluate as ev
from backend.methods.feature_matching.data import category_seeds
from backend.methods.feature_matching.model import load_checkpoint

PAPER = "3,6:1,0.1:0.01:start"


def parse_variant(text: str, base: ev.EvalConfig | None = None) -> ev.EvalConfig:
    """``base`` (default: the evaluation's settings) with the layers, weights, lambda and
    Jacobian point of a ``LAYERS[:WEIGHTS[:LAMBDA[:JACOBIAN]]]`` string. Weights left out
    are the paper's pattern (1 for the first layer, eta = 0.1 for the others); lambda and
    the Jacobian point left out keep base's (the paper's by default)."""
    base = base or ev.EvalConfig()
    parts = text.split(":")
    if not 1 <= len(parts) <= 4 or not parts[0]:
        raise ValueError(f"variant {text!r}: expected LAYERS[:WEIGHTS[:LAMBDA[:JACOBIAN]]]")
    layers = tuple(int(x) for x in parts[0].split(","))
    if len(parts) > 1 and parts[1]:
        weights = tuple(float(x) for x in parts[1].split(","))
    else:
        weights = (1.0,) + (0.1,) * (len(layers) - 1)
    if len(weights) != len(layers):
        raise ValueError(f"variant {text!r}: {len(layers)} layers but {len(weights)} weights")
    match = base.match
    if len(parts) > 2 and parts[2]:
        match = dataclasses.replace(match, reg_lambda=float(parts[2]))
    if len(parts) > 3 and parts[3]:
        match = dataclasses.replace(match, jacobian_at=parts[3])
    return dataclasses.replace(base, layers=layers, layer_weights=weights, match=match)


def add_validation_arguments(parser: argparse.ArgumentParser, shapes: int = 24) -> None:
    """The arguments the validation-pair scripts share: the checkpoint, the category, and
    the draw of `validation_draw` (``shapes`` validation shapes by default)."""
    parser.add_argument("checkpoint", help="feature_matching checkpoint (.pt)")
    parser.add_argument("--category", default="chair")
    parser.add_argument("--shapes", type=int, default=shapes, help="validation shapes drawn from")
    parser.add_argument("--pairs", type=int, default=40, help="random ordered pairs of them")


def validation_draw(category: str, shapes: int, pairs: int, seed: int):
    """(the first ``shapes`` validation shapes, ``pairs`` random ordered pairs (i, j, k) of
    distinct ones by index); k is the pair's index among all candidates (seeds its samples)."""
    drawn = [ev.generate_shape(category, s) for s in category_seeds(category, "val", shapes, seed)]
    candidates = [(i, j) for i in range(len(drawn)) for j in range(len(drawn)) if i != j]
    order = np.random.default_rng(seed).permutation(len(candidates))[:pairs]
    return drawn, [(*candidates[k], int(k)) for k in order]


def validation_pairs(category: str, shapes: int, pairs: int, seed: int):
    """`validation_draw`'s pairs as shapes: (a, b, k)."""
    drawn, chosen = validation_draw(category, shapes, pairs, seed)
    return [(drawn[i], drawn[j], k) for i, j, k in chosen]


def sweep(checkpoint: str, variants: list[str], category: str, shapes: int, pairs: int,
          seed: int = 0, progress: bool = False, base: ev.EvalConfig | None = None) -> dict:
    """{"nearest": [...], variant: {"keypoint": [...], "part CD": [...]}} per pair; base:
    the settings the variants change (default: the evaluation's)."""
    model = load_checkpoint(checkpoint, "cpu")[0]
    configs = {v: parse_variant(v, base) for v in variants}
    fields = {v: ev.decoder_field(model.decoder, c.layers, c.layer_weights)
              for v, c in configs.items()}
    raw: dict = {"nearest": [], **{v: {"keypoint": [], "part CD": []} for v in variants}}
    t0 = time.perf_counter()
    chosen = validation_pairs(category, shapes, pairs, seed)
    first = next(iter(configs.values()))  # the variants share points and max_edge
    for n, (a, b, k) in enumerate(chosen, 1):
        pair, mesh_b, nn_error = prepared(a, b, first, seed + k)
        if nn_error is not None:
            raw["nearest"].append(nn_error)
        za, zb = ev._codes(model, pair, "cpu")
        for v, config in configs.items():
            cd, error = pair_measures(fields[v], pair, za, zb, config, mesh_b)
            raw[v]["part CD"].append(cd)
            if error is not None:
                raw[v]["keypoint"].append(error)
        if progress and n % 10 == 0:
            print(f"{n}/{len(chosen)} pairs ({time.perf_counter() - t0:.0f} s)", flush=True)
    return raw


def table(raw: dict) -> list[tuple[str, float, float]]:
    """(variant, keypoint ratio, part CD x1e-3) per variant of ``sweep``'s output."""
    nearest = float(np.mean(raw["nearest"])) if raw["nearest"] else float("nan")
    return [(v, float(np.mean(r["keypoint"])) / nearest, 1e3 * float(np.mean(r["part CD"])))
            for v, r in raw.items() if v != "nearest"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_validation_arguments(parser)
    parser.add_argument("--variant", action="append", default=None,
                        help=f"LAYERS[:WEIGHTS[:LAMBDA[:JACOBIAN]]] (repeat; default {PAPER})")
    parser.add_argument("--json", default=None, help="also write the per-pair values here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    variants = args.variant or [PAPER]
    start = time.perf_counter()
    raw = sweep(args.checkpoint, variants, args.category, args.shapes, args.pairs,
                progress=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(raw, f)
    print(f"{args.category}, {len(raw['nearest'])} validation pairs with shared keypoints, "
          f"{time.perf_counter() - start:.0f} s")
    print("| variant (layers:weights:lambda:jacobian) | keypoint / nearest neighbour | "
          "part CD (x1e-3) |")
    print("|---|---|---|")
    for v, ratio, cd in table(raw):
        print(f"| {v} | {ratio:.3f} | {cd:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
