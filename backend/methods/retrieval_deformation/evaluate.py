"""``shapebridge eval retrieval_deformation``: Table 1 / Table 2 rows of paper 000 on the
built-in test split, from trained checkpoints.

Each ``--variant NAME=CHECKPOINT[:nodeform][:ido]`` is one Table 1 row; each
``--oracle-variant NAME=CHECKPOINT[:ido]`` one Table 2 row. The category and target type
(points / image) come from the checkpoint, so one call with all checkpoints gives both
tables for every category. Table 1: retrieval of the top source by R, deformation by D
(``:nodeform``: retrieval only, the R and DAR rows; ``:ido``: then IDO on the prediction,
what the add-on's IDO switch does). Table 2 (oracle): every source is deformed and the best
fit kept. The row names that the orderings of the issue are checked on (`ordering_checks`):

    --variant:        R=ckpt_r:nodeform  R+DF=ckpt_r  DAR=ckpt_dar:nodeform  DAR+DF=ckpt_dar
                      Uniform=ckpt_uniform  Ours=ckpt  "Ours w/ IDO=ckpt_ido"
                      "Ours + test-time IDO=ckpt:ido"
    --oracle-variant: DF=ckpt_df  Uniform=ckpt_uniform  Ours=ckpt  "Ours w/ IDO=ckpt_ido"
                      "Ours + test-time IDO=ckpt:ido"

(``ckpt_r`` / ``ckpt_dar``: ``train --baseline r|dar --deformation ckpt_df``.) The paper's
"Ours w/ IDO" is a model *trained* with IDO (``ckpt_ido``: ``train --ido-in-training``,
IDO-refined fits in L_emb; Sec. 2.1, "we do not use it in ablations" because of its
training cost), evaluated like Ours; it can be worse than Ours (paper, Table 2, cabinet).
"Ours + test-time IDO" is ours, not the paper's: IDO refines the network's fit at
evaluation, which can only lower the chamfer. Metric:
squared chamfer, PyTorch3D convention (mean squared nearest-neighbour distance in each
direction, summed) between the deformed source's and the target's samples (the
checkpoint's ``n_points`` each, 512 for the CPU configs) of the unit-cube-normalised
shapes, x 1e2 as the paper's tables; 95 % bootstrap CIs over targets.

``--sampling-floor`` adds a reference row, "Sampling floor", per category and target type
to both tables: the chamfer between each test target's samples and a second, independent
sampling of the same shape at the same count. A perfect fit scores about this much (at 512
points it is a large part of every row), so it tells how much of a row is sampling noise.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch

from backend.bench.results import COMMAND_SEPARATOR, previous_results, write_results
from backend.core.metrics import bootstrap_ci, chamfer_distance
from backend.data.samples import sample_surface
from backend.data.shapes import generate_shape
from backend.methods.retrieval_deformation.checkpoint import load_checkpoint
from backend.methods.retrieval_deformation.data import builtin_targets
from backend.methods.retrieval_deformation.inference import retrieve_and_deform

METRIC = "chamfer_l2sq_x1e2"
PAIRED = "paired_difference_x1e2"
FLOOR = "Sampling floor"
SCALE = 1e2
CONVENTION = ("squared chamfer, PyTorch3D convention (sum of the two directional means of "
              "squared nearest-neighbour distances), unit-cube shapes, x 1e2 (paper: x 10^-2)")


@dataclass(frozen=True)
class Variant:
    """One table row: name, checkpoint, deform with D (else retrieval only), IDO after D."""

    name: str
    checkpoint: str
    deform: bool = True
    ido: bool = False


def parse_variant(spec: str) -> Variant:
    """``NAME=CHECKPOINT[:nodeform][:ido]`` -> Variant."""
    if "=" not in spec:
        raise ValueError(f"--variant must be NAME=CHECKPOINT[:nodeform][:ido], got {spec!r}")
    name, rest = spec.split("=", 1)
    path, *flags = rest.split(":")
    unknown = set(flags) - {"nodeform", "ido"}
    if unknown or not name or not path:
        raise ValueError(f"--variant {spec!r}: expected NAME=CHECKPOINT with optional :nodeform "
                         f"and :ido flags (unknown: {sorted(unknown)})")
    if "nodeform" in flags and "ido" in flags:
        raise ValueError(f"--variant {spec!r}: IDO needs the deformation (drop :nodeform)")
    return Variant(name, path, "nodeform" not in flags, "ido" in flags)


def evaluate_checkpoint(path: str, count: int, ido: bool, oracle: bool, device: str = "cpu",
                        seed: int = 0, ido_max_iters: int = 2000, deform: bool = True,
                        category: str | None = None, batch: int = 25,
                        oracle_ido_top: int = 10, split: str = "test") -> tuple[np.ndarray, dict]:
    """Per-target chamfer (x 1e2) of one checkpoint on ``count`` targets of ``split``
    (test; val to choose between training options without looking at the test split).

    oracle: deform every source and keep the best fit (Table 2); otherwise the top-1
    retrieved source (Table 1). With both oracle and ido, IDO refines the
    ``oracle_ido_top`` best network fits of each target (IDO only lowers a fit; running it
    on all S sources per target is S times the cost). category: default the checkpoint's.
    Targets are processed ``batch`` at a time (the networks are in eval mode and IDO stops
    per candidate, so batching does not change the values). Returns (count,) float64
    values and the checkpoint's config.json.
    """
    model, doc = load_checkpoint(path, device)
    image = model.config.target == "image"
    train = doc.get("train", {})
    category = category or train.get("category", "chair")
    targets = builtin_targets(category, split, count, seed=seed,
                              n_points=train.get("n_points", 2048), images=image,
                              resolution=train.get("resolution", 128), views=1)
    out = []
    for t0 in range(0, count, batch):
        sl = slice(t0, min(count, t0 + batch))
        pts = torch.from_numpy(targets.points[sl]).to(device)
        if image:
            inp = torch.from_numpy(targets.images[sl, 0]).to(device).permute(0, 3, 1, 2)
            inp = inp.float() / 255
        else:
            inp = pts
        if oracle:
            all_sources = torch.arange(len(model.library), device=device)
            all_sources = all_sources[None].expand(len(pts), -1)
            res = retrieve_and_deform(model, inp, pts, len(model.library), False,
                                      sources=all_sources, deform=deform)
            if ido and deform:
                top = res.sources[:, :min(oracle_ido_top, res.sources.shape[1])]
                res = retrieve_and_deform(model, inp, pts, top.shape[1], True, sources=top,
                                          ido_max_iters=ido_max_iters)
        else:
            res = retrieve_and_deform(model, inp, pts, 1, ido, ido_max_iters=ido_max_iters,
                                      deform=deform)
        out.extend((res.fit[:, 0].double() * SCALE).tolist())
    return np.asarray(out), doc


def parse_floor(spec: str) -> tuple[tuple[str, str], int]:
    """``CATEGORY:TARGET:POINTS`` -> ((category, target), points)."""
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in ("points", "image") or not parts[2].isdigit() \
            or int(parts[2]) < 1:
        raise ValueError(f"--sampling-floor {spec!r}: expected CATEGORY:TARGET:POINTS with "
                         f"TARGET points or image and POINTS a positive count")
    return (parts[0], parts[1]), int(parts[2])


def resampled_points(category: str, seeds: np.ndarray, n_points: int, seed: int = 0,
                     stream: int = 1) -> np.ndarray:
    """(T, n_points, 3) float32 surface samples of the shapes ``seeds``, independent of
    `builtin_targets`' (target k draws from the generator [seed, s, k, stream])."""
    out = np.empty((len(seeds), n_points, 3), np.float32)
    for k, s in enumerate(seeds):
        rng = np.random.default_rng([seed, int(s), k, stream])
        out[k], _, _ = sample_surface(generate_shape(category, int(s)).mesh(), n_points, rng)
    return out


def sampling_floor(category: str, count: int, n_points: int, seed: int = 0,
                   split: str = "test") -> np.ndarray:
    """Per-target chamfer (x 1e2) between the evaluation's samples of each of ``count``
    targets of ``split`` (`builtin_targets`, as `evaluate_checkpoint` draws them) and an
    independent second sampling of the same shape with as many points. Returns (count,)
    float64."""
    targets = builtin_targets(category, split, count, seed=seed, n_points=n_points)
    again = resampled_points(category, targets.seeds, n_points, seed)
    fit = chamfer_distance(torch.from_numpy(targets.points), torch.from_numpy(again))
    return fit.chamfer.double().numpy() * SCALE


#: The "done when" orderings of the issue, by the standard row names (module docstring):
#: Table 1 chain (each lower than the next), the 0.9 margin over the best baseline, IDO.
TABLE1_CHAIN = ("Ours", "Uniform", "DAR+DF", "R")
TABLE1_BASELINES = ("R", "R+DF", "DAR", "DAR+DF")  # the paper's retrieval baselines
TABLE2_BASELINES = ("DF", "Uniform")


def ordering_checks(rows: list[dict]) -> list[dict]:
    """The issue's orderings per (category, target) over the means of ``rows``.

    Returns rows ``{"variant": check, "category", "condition", "metric": "holds", "value":
    1.0 | 0.0}``; a check whose rows are missing is left out.
    """
    groups: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        if r.get("metric", METRIC) != METRIC:  # e.g. the paired differences
            continue
        groups.setdefault((r["category"], r["condition"]), {})[r["variant"]] = r["value"]
    out = []
    for (category, condition), v in sorted(groups.items()):
        checks = {}
        if condition.endswith("oracle"):
            base = [v[b] for b in TABLE2_BASELINES if b in v]
            if "Ours" in v and base:
                checks["Ours < DF, Uniform"] = v["Ours"] < min(base)
        else:
            chain = [n for n in TABLE1_CHAIN if n in v]
            if len(chain) == len(TABLE1_CHAIN):
                checks["Ours < Uniform < DAR+DF < R"] = all(
                    v[a] < v[b] for a, b in zip(chain, chain[1:]))
            base = [v[b] for b in TABLE1_BASELINES if b in v]
            if "Ours" in v and base:
                checks["Ours <= 0.9 x best baseline"] = v["Ours"] <= 0.9 * min(base)
        for row in ("Ours w/ IDO", "Ours + test-time IDO"):
            if "Ours" in v and row in v:
                checks[f"{row} < Ours"] = v[row] < v["Ours"]
        out += [{"variant": name, "category": category, "condition": condition,
                 "metric": "holds", "value": float(ok)} for name, ok in checks.items()]
    return out


def paired_differences(per_target: dict[tuple[str, str, str], np.ndarray],
                       reference: str) -> list[dict]:
    """Rows 'NAME - reference' per (category, condition): the mean over targets of each
    row's per-target chamfer minus the reference row's on the same targets, with a 95 %
    bootstrap CI of that mean (tighter than comparing two rows' CIs: the targets' own
    difficulty cancels). per_target: (variant, category, condition) -> (n,) values."""
    out = []
    for (name, category, condition), values in per_target.items():
        base = per_target.get((reference, category, condition))
        if name == reference or base is None:
            continue
        ci = bootstrap_ci(values - base)
        out.append({"variant": f"{name} - {reference}", "category": category,
                    "condition": condition, "metric": PAIRED, "value": ci.value,
                    "ci_low": ci.low, "ci_high": ci.high, "n": len(values)})
        print(f"{out[-1]['variant']} ({category}, {condition}): {ci.value:+.4g} "
              f"[{ci.low:+.4g}, {ci.high:+.4g}]", flush=True)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME=CHECKPOINT[:nodeform][:ido]",
                        help="a Table 1 row and its checkpoint (repeat; see the module docs)")
    parser.add_argument("--oracle-variant", action="append", default=[],
                        metavar="NAME=CHECKPOINT[:ido]",
                        help="a Table 2 row (oracle retrieval) and its checkpoint (repeat)")
    parser.add_argument("--category", default=None, help="override the checkpoints' category")
    parser.add_argument("--targets", type=int, default=200, help="test targets per category")
    parser.add_argument("--split", choices=("test", "val"), default="test",
                        help="targets' split; val rows get ' val' in their condition (use "
                        "them to choose training options, the test split to report)")
    parser.add_argument("--oracle", action="store_true",
                        help="evaluate the --variant rows with oracle retrieval too (Table 2)")
    parser.add_argument("--sampling-floor", nargs="*", default=None,
                        metavar="CATEGORY:TARGET:POINTS",
                        help="add 'Sampling floor' rows (the chamfer of each target's samples "
                        "to a resampling of the same shape): for the cells given, or without "
                        "values for those of the checkpoints evaluated")
    parser.add_argument("--paired-with", default=None, metavar="NAME",
                        help="also give every other row of this call minus the row NAME of the "
                        "same category and condition, per target (same targets), with a "
                        "bootstrap CI: rows 'ROW - NAME', metric " + PAIRED)
    parser.add_argument("--ido-max-iters", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=25, help="targets evaluated at once")
    parser.add_argument("--oracle-ido-top", type=int, default=10,
                        help="oracle rows with :ido: IDO refines this many best network fits")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the results files here")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in --json (a row of the same variant, "
                        "category and condition is replaced) and record both commands")


def run(args: argparse.Namespace) -> int:
    jobs = [(parse_variant(s), args.oracle) for s in args.variant]
    jobs += [(parse_variant(s), True) for s in args.oracle_variant]
    floors = dict(parse_floor(s) for s in args.sampling_floor or [])
    if not jobs and not floors:
        raise ValueError("give at least one --variant, --oracle-variant or --sampling-floor cell")
    names = sorted({v.name for v, _ in jobs})
    if args.paired_with is not None and args.paired_with not in names:
        raise ValueError(f"--paired-with {args.paired_with!r}: no row of that name in this call "
                         f"(rows: {names})")
    rows, split = [], "" if args.split == "test" else " " + args.split
    per_target: dict[tuple[str, str, str], np.ndarray] = {}
    for v, oracle in jobs:
        values, doc = evaluate_checkpoint(v.checkpoint, args.targets, v.ido, oracle,
                                          args.device, ido_max_iters=args.ido_max_iters,
                                          deform=v.deform, category=args.category,
                                          batch=args.batch, oracle_ido_top=args.oracle_ido_top,
                                          split=args.split)
        ci = bootstrap_ci(values)
        target = doc["model"]["target"] if isinstance(doc.get("model"), dict) else "?"
        rows.append({"variant": v.name,
                     "category": args.category or doc.get("train", {}).get("category", "?"),
                     "condition": target + split + (" oracle" if oracle else ""),
                     "metric": METRIC, "value": ci.value, "ci_low": ci.low,
                     "ci_high": ci.high, "n": len(values)})
        print(f"{v.name} ({rows[-1]['category']}, {rows[-1]['condition']}): {ci.value:.4g} "
              f"[{ci.low:.4g}, {ci.high:.4g}]", flush=True)
        per_target[(v.name, rows[-1]["category"], rows[-1]["condition"])] = values
        if args.sampling_floor == []:
            floors[(rows[-1]["category"], target)] = doc.get("train", {}).get("n_points", 2048)
    # the same targets in Table 1 and Table 2: one row in each
    for (category, target), n_points in floors.items():
        ci = bootstrap_ci(sampling_floor(category, args.targets, n_points, split=args.split))
        rows += [{"variant": FLOOR, "category": category, "condition": condition,
                  "metric": METRIC, "value": ci.value, "ci_low": ci.low, "ci_high": ci.high,
                  "n": args.targets}
                 for condition in (target + split, target + split + " oracle")]
        print(f"{FLOOR} ({category}, {target}, {n_points} points): {ci.value:.4g}", flush=True)
    if args.paired_with:
        rows += paired_differences(per_target, args.paired_with)
    commands = [" ".join(sys.argv)]
    if args.append:
        old_rows, old_commands = previous_results(args.json)
        old_rows = [r for r in old_rows if r.get("metric") != "holds"]  # recomputed below
        key = {(r["variant"], r["category"], r["condition"]) for r in rows}
        rows = [r for r in old_rows if (r["variant"], r["category"], r["condition"]) not in key] + rows
        commands = old_commands + commands
    rows += ordering_checks(rows)
    print(f"metric: {CONVENTION}")
    write_results("retrieval_deformation", "eval", rows, args.json,
                  f"Retrieval and deformation, Table 1 and Table 2 (oracle): {CONVENTION}; "
                  f"'holds' rows: the issue's orderings (1 = holds)", COMMAND_SEPARATOR.join(commands))
    return 0
