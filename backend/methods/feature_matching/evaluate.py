"""``shapebridge eval feature_matching``: Table 1, Table 2 and Figure 6 of paper 001.

Protocol (built-in data, test split, canonical unit-cube frame):

- **Pairs**: ``--pairs`` random (source, target) pairs of distinct test shapes per category,
  plus, for chairs, up to ``--pairs`` pairs from an armchair to a chair without arms
  (built-in attribute ``arms``), reported as condition "armchair->no-arm".
- **Deformation** (Table 1): the source mesh is subdivided until every edge is at most
  ``--max-edge`` long (the built-in meshes are coarse boxes; the paper's ShapeNet meshes are
  dense) and only its vertices move (Sec. 2.3): ours by feature matching, the cross-fitting
  baselines by `baselines.cross_fit` (none / Laplacian / ARAP). The deformed surface is
  measured at ``--points`` fixed barycentric samples of the source, which carry the
  source's part labels, against as many target surface samples: whole-shape CD (squared,
  mean of both directions, x1e-3) and EMD (mean matched distance, x1e-2), part-level CD and
  EMD (per semantic part present in both shapes, averaged over parts; part EMD on equal-size
  random subsets of the two parts' samples). "source" is the undeformed source.
- **Correspondence** (Table 2 style): each source keypoint present on both shapes is
  matched and snapped to the nearest target surface point (ours), or snapped directly
  (nearest neighbour); the error is the distance to the target's keypoint.
- **Paired rows** (`_paired_rows`): "ours - <row>" for part CD and part EMD (ours minus a
  cross-fit or the source, pair by pair, with a paired bootstrap CI: below 0 means ours is
  better), and "ours / nearest neighbour", the keypoint error ratio with its paired CI.
- **Figure 6**: chamfer distance of the matched source samples to the source and to the
  target when matching the features of one layer l = 1..6, as a PNG line plot.

A pair costs 1-3 minutes on one CPU core (matching 4k-35k vertices, three cross-fits), so
``--cache FILE`` keeps each pair's metrics as a JSON line (keyed by the pair and a
fingerprint of the checkpoint and settings): an interrupted run resumes where it stopped,
and ``--shard I/N`` processes fill the cache in parallel (pair k goes to shard k mod N)
before one plain run with the same cache writes the tables. The rows that do not use the
network (source, cross-fits, nearest neighbour; a third to a half of a pair's time) are keyed by
the settings alone, so evaluating a retrained checkpoint with the same cache recomputes
only "ours".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.bench.results import COMMAND_SEPARATOR, previous_results, write_results
from backend.core.metrics import (
    bootstrap_ci,
    chamfer_distance,
    emd,
    paired_bootstrap_ci,
    paired_ratio_ci,
    part_chamfer,
)
from backend.data.samples import sample_shape
from backend.data.shapes import CATEGORIES, Mesh, Shape, generate_shape
from backend.methods.feature_matching.baselines import (
    CrossFitConfig,
    barycentric_points,
    cross_fit,
)
from backend.methods.feature_matching.data import category_seeds, cell_centers, sample_cells
from backend.methods.feature_matching.matching import (
    MatchConfig,
    decoder_field,
    match_points,
    nearest_surface_points,
)
from backend.methods.feature_matching.model import ImplicitModel, auto_decode, load_checkpoint
from backend.methods.feature_matching.train import DEFAULT_ZOO

__all__ = [
    "EvalConfig",
    "PairCache",
    "PairCodes",
    "PairData",
    "armchair_to_no_arm",
    "deformation_metrics",
    "evaluate_pairs",
    "keypoint_error",
    "layer_sweep",
    "part_emd",
    "plot_layer_sweep",
    "prepare_pair",
    "refined_code",
    "run",
    "add_arguments",
    "select_pairs",
]


@dataclass
class EvalConfig:
    """Evaluation settings (paper: 100 pairs per category; the rest are our choices)."""

    pairs: int = 100
    """Random test pairs per category (and at most as many armchair -> no-arm pairs)."""
    points: int = 2048
    """Surface samples per shape for CD / EMD."""
    max_edge: float = 0.05
    """Source meshes are subdivided until no edge is longer (unit-cube units)."""
    match: MatchConfig = field(default_factory=MatchConfig)
    """Feature matching settings (paper defaults)."""
    layers: tuple[int, ...] = (3, 6)
    """Matched layers (paper: 3 + eta x 6)."""
    layer_weights: tuple[float, ...] = (1.0, 0.1)
    """Their weights (paper: 1, eta = 0.1)."""
    baselines: dict[str, CrossFitConfig] = field(default_factory=lambda: {
        "cross-fit": CrossFitConfig("none"),
        "cross-fit + Laplacian": CrossFitConfig("laplacian", weight=10.0),
        "cross-fit + ARAP": CrossFitConfig("arap", weight=10.0),
    })
    """Cross-fitting baselines by row name."""
    part_emd_points: int = 256
    """At most this many samples per part for part-level EMD."""
    seed: int = 0
    """Seed of the pair draw and of the samples."""
    code_from: str = "encoder"
    """Shape codes: "encoder" (the paper: the voxel encoder's) or "autodecode" (the
    encoder's refined by auto-decoding, the add-on's ``code_from="autodecode"``)."""
    autodecode_steps: int = 100
    """Adam steps of auto-decoding per shape (``code_from="autodecode"``)."""
    autodecode_samples: int = 32768
    """Near-surface cells of the 64^3 voxels auto-decoding fits (``code_from="autodecode"``)."""

    def __post_init__(self) -> None:
        if self.code_from not in ("encoder", "autodecode"):
            raise ValueError(f"code_from must be 'encoder' or 'autodecode', got {self.code_from!r}")
        if self.autodecode_steps < 0 or self.autodecode_samples < 1:
            raise ValueError("autodecode_steps must be >= 0 and autodecode_samples >= 1, got "
                             f"{self.autodecode_steps}, {self.autodecode_samples}")


@dataclass
class PairData:
    """One evaluation pair, canonical frame.

    vertices: (V, 3) float32 subdivided source vertices; faces: (F, 3) int64.
    face_index: (N,) int64 and bary: (N, 3) float32: source surface samples.
    labels: (N,) int64 semantic part label of each source sample.
    target: (N, 3) float32 target surface samples; target_labels: (N,) int64.
    The encoder's voxels depend on the network's grid: `ImplicitModel.shape_voxels`.
    """

    source: Shape
    target: Shape
    vertices: torch.Tensor
    faces: torch.Tensor
    face_index: torch.Tensor
    bary: torch.Tensor
    labels: torch.Tensor
    target_points: torch.Tensor
    target_labels: torch.Tensor

    @property
    def source_points(self) -> torch.Tensor:
        """(N, 3) float32 source surface samples (undeformed)."""
        return barycentric_points(self.vertices, self.faces, self.face_index, self.bary)


def prepare_pair(source: Shape, target: Shape, points: int, max_edge: float, seed: int) -> PairData:
    """Subdivide the source mesh, draw its barycentric samples and the target's samples."""
    import trimesh.remesh

    mesh = source.mesh()
    v, f, parent = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge,
                                                    max_iter=20, return_index=True)
    face_label = source.part_label_ids()[mesh.face_parts[parent]]
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    face_index = rng.choice(len(f), points, p=area / area.sum())
    r1, r2 = rng.random(points), rng.random(points)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    tgt = sample_shape(target, seed, points, 0, 0)
    return PairData(
        source=source, target=target,
        vertices=torch.from_numpy(np.asarray(v, np.float32)),
        faces=torch.from_numpy(np.asarray(f, np.int64)),
        face_index=torch.from_numpy(face_index.astype(np.int64)),
        bary=torch.from_numpy(bary.astype(np.float32)),
        labels=torch.from_numpy(face_label[face_index].astype(np.int64)),
        target_points=torch.from_numpy(tgt.surface_points),
        target_labels=torch.from_numpy(tgt.surface_labels.astype(np.int64)),
    )


def part_emd(
    x: torch.Tensor, x_labels: torch.Tensor, y: torch.Tensor, y_labels: torch.Tensor,
    max_points: int, rng: np.random.Generator,
) -> float:
    """EMD per semantic part present in both point sets, averaged over those parts.

    x: (N, 3), x_labels: (N,) int; y: (M, 3), y_labels: (M,) int. Each part's EMD is
    taken between random subsets of n = min(|x part|, |y part|, max_points) points of
    each side. Returns NaN when no label is shared.
    """
    values = []
    for label in np.intersect1d(x_labels.numpy(), y_labels.numpy()):
        xi = torch.nonzero(x_labels == int(label)).squeeze(1).numpy()
        yi = torch.nonzero(y_labels == int(label)).squeeze(1).numpy()
        n = min(len(xi), len(yi), max_points)
        xs = x[torch.from_numpy(rng.choice(xi, n, replace=False))]
        ys = y[torch.from_numpy(rng.choice(yi, n, replace=False))]
        values.append(float(emd(xs[None].double(), ys[None].double())[0]))
    return float(np.mean(values)) if values else float("nan")


def deformation_metrics(
    pair: PairData, vertices: torch.Tensor, part_emd_points: int, seed: int
) -> dict[str, float]:
    """Table 1 metrics of deformed source vertices (V, 3) against the target (raw units)."""
    x = barycentric_points(vertices.float().cpu(), pair.faces, pair.face_index, pair.bary)
    y = pair.target_points
    rng = np.random.default_rng(seed)
    return {
        "CD": float(chamfer_distance(x[None], y[None]).chamfer_mean[0]),
        "EMD": float(emd(x[None].double(), y[None].double())[0]),
        "part CD": float(part_chamfer(x[None], pair.labels[None], y[None],
                                      pair.target_labels[None]).chamfer_mean[0]),
        "part EMD": part_emd(x, pair.labels, y, pair.target_labels, part_emd_points, rng),
    }


def _codes(model: ImplicitModel, pair: PairData, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    voxels = torch.stack([model.shape_voxels(pair.source), model.shape_voxels(pair.target)])
    with torch.no_grad():
        z = model.encoder(voxels.to(device))
    return z[0], z[1]


def refined_code(model: ImplicitModel, voxels: torch.Tensor, code: torch.Tensor, steps: int,
                 seed: int, samples: int = 32768) -> torch.Tensor:
    """``code`` refined by ``steps`` of auto-decoding against ``samples`` near-surface
    cells of the (64, 64, 64) bool ``voxels`` (the network's grid), drawn with ``seed``:
    the add-on's ``code_from="autodecode"`` (Adam, lr 1e-2, decoder frozen)."""
    vox = voxels.cpu().numpy()
    idx = sample_cells(vox, samples, np.random.default_rng(seed))
    occupancy = torch.from_numpy(vox.reshape(-1)[idx]).to(code.device)
    points = cell_centers(idx, 64, model.config.grid_half_extent).to(code.device)
    return auto_decode(model.decoder, points, occupancy, code, steps)[0]


class PairCodes:
    """The codes each pair is matched with, per ``config.code_from``.

    "encoder": the voxel encoder's codes of the pair (the paper). "autodecode": each
    shape's encoder code refined by `refined_code` (seeded by the shape's seed), computed
    once per shape and kept in ``cache`` under ``scope`` (key ``code|<category>|<seed>``),
    so shards and reruns share them; a shape missing there is looked up again in the file
    (another shard may have written it) before it is computed.
    """

    def __init__(self, model: ImplicitModel, config: EvalConfig, device: str,
                 cache: PairCache | None = None, scope: str = "") -> None:
        self.model, self.config, self.device = model, config, device
        self.cache, self.scope = cache, scope
        self._memo: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, pair: PairData) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.code_from == "encoder":
            return _codes(self.model, pair, self.device)
        return self.refined(pair.source), self.refined(pair.target)

    def precompute(self, pairs: list[tuple[Shape, Shape]], shard: tuple[int, int]) -> None:
        """Auto-decode the codes of shard (i, n)'s share of the shapes in ``pairs`` (the
        j-th distinct shape when j mod n = i), so shards running side by side split the
        codes before they match pairs. Nothing to do for encoder codes."""
        if self.config.code_from == "encoder":
            return
        distinct = list({(s.category, s.seed): s for pair in pairs for s in pair}.values())
        for j, shape in enumerate(distinct):
            if _in_shard(j, shard):
                self.refined(shape, recheck=False)  # this shard's own share

    def refined(self, shape: Shape, recheck: bool = True) -> torch.Tensor:
        """``shape``'s auto-decoded code. recheck: on a miss, read the cache file again
        first (another shard may have written the code since)."""
        key = (shape.category, shape.seed)
        if key in self._memo:
            return self._memo[key]
        name = f"code|{shape.category}|{shape.seed}"
        stored = None
        if self.cache is not None:
            stored = self.cache.get(self.scope, name)
            if stored is None and recheck:
                self.cache.reload()
                stored = self.cache.get(self.scope, name)
        if stored is not None:
            z = torch.tensor(stored["code"], dtype=torch.float32, device=self.device)
        else:
            voxels = self.model.shape_voxels(shape)
            with torch.no_grad():
                code = self.model.encoder(voxels[None].to(self.device))[0]
            z = refined_code(self.model, voxels, code, self.config.autodecode_steps, shape.seed,
                             self.config.autodecode_samples)
            if self.cache is not None:
                self.cache.put(self.scope, name, {"code": [float(v) for v in z.cpu()]})
        self._memo[key] = z
        return z


def armchair_to_no_arm(a: Shape, b: Shape) -> bool:
    """Pair filter of the "armchair->no-arm" condition: a chair with arms to one without."""
    return bool(a.attributes["arms"]) and not b.attributes["arms"]


def select_pairs(
    category: str, count: int, seed: int, condition: Callable[[Shape, Shape], bool] | None = None,
    pool: int | None = None,
) -> list[tuple[Shape, Shape]]:
    """Up to ``count`` random ordered pairs of distinct test shapes meeting ``condition``.

    pool: test shapes drawn from (default 2 x count, at least 20).
    """
    seeds = category_seeds(category, "test", pool or max(2 * count, 20), seed)
    shapes = [generate_shape(category, s) for s in seeds]
    rng = np.random.default_rng(seed)
    candidates = [(i, j) for i in range(len(shapes)) for j in range(len(shapes)) if i != j
                  and (condition is None or condition(shapes[i], shapes[j]))]
    order = rng.permutation(len(candidates))[:count]
    return [(shapes[candidates[k][0]], shapes[candidates[k][1]]) for k in order]


class PairCache:
    """Per-pair results on disk, one JSON line per pair: resumable, shardable evaluations.

    path: the JSON-lines file (None: keep nothing). Lines whose fingerprint differs from the
    one given per lookup (another checkpoint or settings) are ignored, never overwritten.
    Appends are single short writes, so shard processes may share one file.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._data: dict[tuple[str, str], dict] = {}
        self.reload()

    def reload(self) -> None:
        """Read the file again (entries other processes appended since)."""
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self._data[(entry["fingerprint"], entry["key"])] = entry["values"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a killed process: recompute that pair

    def get(self, fingerprint: str, key: str) -> dict | None:
        """Cached values of ``key`` under ``fingerprint``, or None."""
        return self._data.get((fingerprint, key))

    def put(self, fingerprint: str, key: str, values: dict) -> None:
        """Keep ``values`` in memory and append them to the file."""
        self._data[(fingerprint, key)] = values
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"fingerprint": fingerprint, "key": key, "values": values}) + "\n"
            with open(self.path, "a+b") as fh:  # appends go to the end whatever the position
                end = fh.seek(0, 2)
                if end:
                    fh.seek(end - 1)
                    if fh.read(1) != b"\n":
                        line = "\n" + line  # end a line cut short by a killed process first
                fh.write(line.encode())


_CODE_SETTINGS = ("code_from", "autodecode_steps", "autodecode_samples")


def fingerprint(checkpoint: str | Path | None, config: EvalConfig) -> str:
    """Short hash of a checkpoint file's bytes and every setting that changes a pair's metrics.

    The code settings count only with a checkpoint (rows without the network do not use
    codes) and only when the codes are auto-decoded (so entries written before they existed
    keep their fingerprint)."""
    h = hashlib.sha256()
    if checkpoint is not None:
        h.update(Path(checkpoint).read_bytes())
    settings = asdict(config)
    if checkpoint is None or config.code_from == "encoder":
        for name in _CODE_SETTINGS:
            settings.pop(name)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _in_shard(index: int, shard: tuple[int, int]) -> bool:
    """Whether job ``index`` is computed by shard (i, n); n = 0 computes none."""
    return shard[1] > 0 and index % shard[1] == shard[0]


def _split_rows(values: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """({rows that depend on the network: "ours/..."}, {all other rows})."""
    mine = {n: v for n, v in values.items() if n.startswith("ours/")}
    return mine, {n: v for n, v in values.items() if n not in mine}


def keypoint_error(points: np.ndarray, mesh: Mesh, truth: np.ndarray) -> float:
    """Mean distance to ``truth`` (K, 3) of ``points`` (K, 3) snapped to ``mesh``'s surface."""
    snapped, _ = nearest_surface_points(points, mesh.vertices, mesh.faces)
    return float(np.linalg.norm(snapped - truth, axis=1).mean())


def evaluate_pairs(
    model: ImplicitModel,
    pairs: list[tuple[Shape, Shape]],
    config: EvalConfig,
    device: str,
    progress: Callable[[str], None] | None = None,
    cache: PairCache | None = None,
    cache_scope: str = "",
    shard: tuple[int, int] = (0, 1),
    baseline_scope: str | None = None,
    codes: PairCodes | None = None,
) -> dict[str, list[float]]:
    """Per-pair metrics: {"<variant>/<metric>": one value per pair}.

    Variants: "ours", each baseline of ``config.baselines``, "source" (undeformed); the
    keypoint rows "ours/keypoint error" and "nearest neighbour/keypoint error" hold the
    mean over the keypoints present on both shapes (pairs sharing none are skipped).
    cache, cache_scope: `PairCache` and the fingerprint its entries are kept under (include
        the checkpoint, see `fingerprint`); pairs found there are not recomputed.
    shard: (i, n): compute only pairs k with k mod n = i (others come from the cache or
        are left out).
    baseline_scope: fingerprint of the rows that do not depend on the network (source,
        cross-fits, nearest neighbour; `fingerprint(None, config)`), kept apart so that a
        new checkpoint reuses them. None: every row is kept under ``cache_scope``. Entries
        written that way are read either way.
    codes: the codes of each pair (default: per ``config.code_from``, kept in memory only).
    """
    codes = codes or PairCodes(model, config, device)
    out: dict[str, list[float]] = {}
    for k, (a, b) in enumerate(pairs):
        key = f"{a.category}|{k}|{a.seed}|{b.seed}"
        mine = cache.get(cache_scope, key) if cache is not None else None
        base = cache.get(baseline_scope, key) if cache is not None and baseline_scope else None
        if mine is not None:  # entries written before the split hold every row
            mine, old_base = _split_rows(mine)
            base = base or old_base or None
        if (mine is None or base is None) and _in_shard(k, shard):
            start = time.perf_counter()
            new_mine, new_base = _split_rows(_evaluate_pair(
                model, a, b, k, config, device, network=mine is None, baselines=base is None,
                codes=codes))
            if cache is not None and baseline_scope:
                if mine is None:
                    cache.put(cache_scope, key, new_mine)
                if base is None:
                    cache.put(baseline_scope, key, new_base)
            elif cache is not None:
                cache.put(cache_scope, key, {**(mine or new_mine), **(base or new_base)})
            mine, base = mine if mine is not None else new_mine, base or new_base
            if progress:
                progress(f"pair {k + 1}/{len(pairs)} ({time.perf_counter() - start:.0f} s)")
        if mine is None or base is None:
            continue
        for name, value in {**mine, **base}.items():
            out.setdefault(name, []).append(float(value))
    return out


def _evaluate_pair(
    model: ImplicitModel, a: Shape, b: Shape, k: int, config: EvalConfig, device: str,
    network: bool = True, baselines: bool = True, codes: PairCodes | None = None,
) -> dict[str, float]:
    """Table 1 / Table 2 values of pair k: {"<variant>/<metric>": value}.

    network: the "ours" rows; baselines: the rows that do not use the network (source,
    cross-fits, nearest-neighbour keypoints); codes: as in `evaluate_pairs`.
    """
    field_ = decoder_field(model.decoder, config.layers, config.layer_weights)
    out: dict[str, float] = {}

    def add(variant: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            out[f"{variant}/{metric}"] = float(value)

    pair = prepare_pair(a, b, config.points, config.max_edge, config.seed + k)
    if network:
        za, zb = (codes or PairCodes(model, config, device))(pair)
        moved = match_points(field_, pair.vertices.to(device), za, zb, config.match).points
        add("ours", deformation_metrics(pair, moved, config.part_emd_points, k))
    if baselines:
        add("source", deformation_metrics(pair, pair.vertices, config.part_emd_points, k))
        for name, fit in config.baselines.items():
            fitted = cross_fit(pair.vertices.to(device), pair.faces.to(device),
                               pair.face_index.to(device), pair.bary.to(device),
                               pair.target_points.to(device), fit)
            add(name, deformation_metrics(pair, fitted, config.part_emd_points, k))
    both = a.keypoint_mask & b.keypoint_mask
    if both.any():
        mesh_b = b.mesh()
        gt = b.keypoints[both].astype(np.float64)
        if network:
            kp = torch.from_numpy(a.keypoints[both]).float().to(device)
            kp_moved = match_points(field_, kp, za, zb, config.match).points.cpu().double().numpy()
            add("ours", {"keypoint error": keypoint_error(kp_moved, mesh_b, gt)})
        if baselines:
            add("nearest neighbour", {"keypoint error": keypoint_error(a.keypoints[both], mesh_b, gt)})
    return out


def layer_sweep(
    model: ImplicitModel, pairs: list[tuple[Shape, Shape]], config: EvalConfig, device: str,
    cache: PairCache | None = None, cache_scope: str = "", shard: tuple[int, int] = (0, 1),
    codes: PairCodes | None = None,
) -> dict[int, tuple[list[float], list[float]]]:
    """Figure 6: per matched layer l (alone), CD of the matched source samples to the
    source's and to the target's samples. Returns {l: (CD to source per pair, CD to target
    per pair)}. cache, cache_scope, shard, codes: as in `evaluate_pairs` (job index: layer
    x pair)."""
    codes = codes or PairCodes(model, config, device)
    out: dict[int, tuple[list[float], list[float]]] = {}
    layers = range(1, model.decoder.num_feature_layers + 1)
    for li, layer in enumerate(layers):
        field_ = decoder_field(model.decoder, (layer,), (1.0,))
        to_src, to_tgt = [], []
        for k, (a, b) in enumerate(pairs):
            key = f"{a.category}|fig6|{layer}|{k}|{a.seed}|{b.seed}"
            values = cache.get(cache_scope, key) if cache is not None else None
            if values is None and _in_shard(li * len(pairs) + k, shard):
                pair = prepare_pair(a, b, config.points, config.max_edge, config.seed + k)
                za, zb = codes(pair)
                x = pair.source_points
                moved = match_points(field_, x.to(device), za, zb, config.match).points.cpu()
                values = {
                    "source": float(chamfer_distance(moved[None], x[None]).chamfer_mean[0]),
                    "target": float(chamfer_distance(moved[None], pair.target_points[None])
                                    .chamfer_mean[0]),
                }
                if cache is not None:
                    cache.put(cache_scope, key, values)
            if values is not None:
                to_src.append(values["source"])
                to_tgt.append(values["target"])
        out[layer] = (to_src, to_tgt)
    return out


def plot_layer_sweep(sweep: dict[int, tuple[list[float], list[float]]], path: str | Path,
                     title: str) -> None:
    """Draw the Figure 6 line plot (mean CD x1e-3 to source and to target per layer) as a PNG."""
    from PIL import Image, ImageDraw

    layers = sorted(sweep)
    src = [1e3 * float(np.mean(sweep[layer][0])) for layer in layers]
    tgt = [1e3 * float(np.mean(sweep[layer][1])) for layer in layers]
    w, h, m = 640, 420, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    top = max(max(src + tgt), 1e-9) * 1.1

    def xy(i: int, v: float) -> tuple[float, float]:
        x = m + (w - 2 * m) * (i / max(len(layers) - 1, 1))
        return x, h - m - (h - 2 * m) * v / top

    d.line([(m, m), (m, h - m), (w - m, h - m)], fill="black", width=1)
    for i, layer in enumerate(layers):
        x, _ = xy(i, 0)
        d.text((x - 3, h - m + 8), str(layer), fill="black")
    for j in range(5):
        v = top * j / 4
        _, y = xy(0, v)
        d.text((8, y - 6), f"{v:.1f}", fill="black")
        d.line([(m - 4, y), (m, y)], fill="black")
    for values, colour, label in ((src, (40, 90, 200), "CD to source"),
                                  (tgt, (220, 60, 40), "CD to target")):
        pts = [xy(i, v) for i, v in enumerate(values)]
        d.line(pts, fill=colour, width=3)
        for x, y in pts:
            d.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)
        d.text((pts[-1][0] - 80, pts[-1][1] - 18), label, fill=colour)
    d.text((m, 20), title, fill="black")
    d.text((w // 2 - 40, h - 25), "matched layer", fill="black")
    d.text((8, m - 30), "CD x1e-3", fill="black")
    img.save(path)


_SCALE = {"CD": ("CD (x1e-3)", 1e3), "EMD": ("EMD (x1e-2)", 1e2),
          "part CD": ("part CD (x1e-3)", 1e3), "part EMD": ("part EMD (x1e-2)", 1e2),
          "keypoint error": ("keypoint error", 1.0)}


def _row(variant: str, category: str, condition: str, metric: str, ci, n: int) -> dict:
    """One results row: a `BootstrapCI` over ``n`` pairs."""
    return {"variant": variant, "category": category, "condition": condition, "metric": metric,
            "value": ci.value, "ci_low": ci.low, "ci_high": ci.high, "n": int(n)}


def _rows(values: dict[str, list[float]], category: str, condition: str, seed: int) -> list[dict]:
    rows = []
    for name, vals in values.items():
        variant, metric = name.split("/")
        label, scale = _SCALE[metric]
        arr = np.asarray(vals, dtype=np.float64)
        arr = arr[np.isfinite(arr)] * scale
        if arr.size == 0:
            continue
        rows.append(_row(variant, category, condition, label, bootstrap_ci(arr, seed=seed),
                         arr.size))
    return rows


PAIRED_METRICS = ("part CD", "part EMD")
"""The measures of the paper's claim (ours better at part level), compared pair by pair."""


def _paired_rows(values: dict[str, list[float]], category: str, condition: str,
                 seed: int) -> list[dict]:
    """Paired comparisons over the same pairs, so per-pair difficulty cancels:

    - "ours - <row>": mean of ours minus another row (a cross-fit, the source) for each
      metric of `PAIRED_METRICS` (negative: ours is lower; a CI below 0: it holds);
    - "ours / nearest neighbour": the keypoint error as a fraction of nearest neighbour's
      (the issue's target is <= 0.6), with a paired bootstrap CI of the ratio of means.
    Pairs where either value is not finite are left out of that comparison.
    """
    rows = []

    def add(variant: str, label: str, ci, n: int) -> None:
        rows.append(_row(variant, category, condition, label, ci, n))

    others = sorted({name.split("/")[0] for name in values} - {"ours", "nearest neighbour"})
    for metric in PAIRED_METRICS:
        label, scale = _SCALE[metric]
        ours = values.get(f"ours/{metric}")
        for other in others:
            theirs = values.get(f"{other}/{metric}")
            if ours is None or theirs is None or len(ours) != len(theirs):
                continue
            a, b = np.asarray(ours) * scale, np.asarray(theirs) * scale
            keep = np.isfinite(a) & np.isfinite(b)
            if keep.any():
                add(f"ours - {other}", label, paired_bootstrap_ci(a[keep], b[keep], seed=seed),
                    int(keep.sum()))
    ours, nearest = values.get("ours/keypoint error"), values.get("nearest neighbour/keypoint error")
    if ours and nearest and len(ours) == len(nearest):
        a, b = np.asarray(ours), np.asarray(nearest)
        keep = np.isfinite(a) & np.isfinite(b)
        if keep.any():
            add("ours / nearest neighbour", "keypoint error ratio",
                paired_ratio_ci(a[keep], b[keep], seed=seed), int(keep.sum()))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``shapebridge eval feature_matching``."""
    d = EvalConfig()
    parser.add_argument("--categories", default="chair",
                        help=f"comma-separated categories with a checkpoint (of {', '.join(CATEGORIES)}); "
                             "the paper: chair,table,airplane")
    parser.add_argument("--checkpoint-dir", default=str(DEFAULT_ZOO),
                        help="folder of <category>.pt checkpoints")
    parser.add_argument("--pairs", type=int, default=d.pairs, help="random test pairs (paper: 100)")
    parser.add_argument("--armchair-pairs", type=int, default=None,
                        help="chairs: the first N of the --pairs armchair -> no-arm pairs "
                             "(default: all --pairs of them; the paper gives no count)")
    parser.add_argument("--points", type=int, default=d.points, help="surface samples per shape")
    parser.add_argument("--max-edge", type=float, default=d.max_edge)
    parser.add_argument("--steps", type=int, default=d.match.steps)
    parser.add_argument("--fit-iterations", type=int, default=300,
                        help="Adam steps of the cross-fitting baselines")
    parser.add_argument("--fig6-pairs", type=int, default=20,
                        help="pairs of the per-layer sweep (0: skip Figure 6)")
    parser.add_argument("--plot", default=None,
                        help="Figure 6 PNG (default: next to --json, <stem>_layers.png)")
    parser.add_argument("--code-from", choices=("encoder", "autodecode"), default=d.code_from,
                        help="shape codes: the voxel encoder's (the paper) or those refined by "
                             "auto-decoding (the add-on's option; rows under conditions "
                             "'..., auto-decoded codes', each shape's code kept in --cache)")
    parser.add_argument("--autodecode-steps", type=int, default=d.autodecode_steps)
    parser.add_argument("--autodecode-samples", type=int, default=d.autodecode_samples)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--json", default=None, help="results path (writes .json and .md)")
    parser.add_argument("--cache", default=None,
                        help="JSON-lines file of per-pair results: a rerun resumes from it")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="compute only pairs k with k mod N = I into --cache and write no "
                             "tables; then one run without --shard writes them")
    parser.add_argument("--cached-only", action="store_true",
                        help="compute nothing: write the tables from the pairs in --cache "
                             "(each row's n says how many)")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in --json except those of the categories "
                             "and conditions this run writes, and record both commands (e.g. "
                             "re-evaluate one category's new checkpoint)")


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return (0, 1)
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        return None
    return (i, n) if 0 <= i < n else None


def run(args: argparse.Namespace) -> int:
    """Evaluate each category's checkpoint; print and write the tables and the plot."""
    categories = [c.strip() for c in str(args.categories).split(",") if c.strip()]
    unknown = [c for c in categories if c not in CATEGORIES]
    if not categories or unknown:
        print(f"--categories must name categories of {', '.join(CATEGORIES)}, got {args.categories!r}")
        return 2
    shard = _parse_shard(args.shard)
    if shard is None or (args.shard is not None and args.cache is None):
        print(f"--shard must be I/N with 0 <= I < N and needs --cache, got {args.shard!r}")
        return 2
    sharded = args.shard is not None
    if args.armchair_pairs is not None and args.armchair_pairs < 0:
        print(f"--armchair-pairs must be >= 0, got {args.armchair_pairs}")
        return 2
    if args.cached_only:
        if args.cache is None or sharded:
            print("--cached-only needs --cache and no --shard")
            return 2
        shard = (0, 0)
    try:  # a results file --append cannot read is refused before hours of matching
        old_rows, old_commands = previous_results(args.json) if args.append else ([], [])
    except ValueError as err:
        print(err)
        return 2
    try:
        config = EvalConfig(pairs=args.pairs, points=args.points, max_edge=args.max_edge,
                            match=MatchConfig(steps=args.steps), seed=args.seed,
                            code_from=args.code_from, autodecode_steps=args.autodecode_steps,
                            autodecode_samples=args.autodecode_samples)
    except ValueError as err:
        print(err)
        return 2
    suffix = ", auto-decoded codes" if config.code_from == "autodecode" else ""
    for fit in config.baselines.values():
        fit.iterations = args.fit_iterations
    models, scopes = {}, {}
    for c in categories:
        path = Path(args.checkpoint_dir) / f"{c}.pt"
        try:
            models[c], _ = load_checkpoint(path, args.device)
        except FileNotFoundError as err:
            print(err)
            return 2
        scopes[c] = fingerprint(path, config)
    cache = PairCache(args.cache) if args.cache else None
    baseline_fingerprint = fingerprint(None, config)  # rows without the network: any checkpoint
    codes = {c: PairCodes(models[c], config, args.device, cache, f"{scopes[c]}|codes")
             for c in categories}
    rows: list[dict] = []

    def evaluate(c: str, pairs: list[tuple[Shape, Shape]], condition: str) -> None:
        def log(message: str) -> None:
            print(f"{c}, {condition}{suffix}: {message}", flush=True)

        values = evaluate_pairs(models[c], pairs, config, args.device, log, cache,
                                f"{scopes[c]}|{condition}", shard,
                                f"{baseline_fingerprint}|{condition}|baselines", codes[c])
        condition += suffix
        if not sharded:  # a shard only fills the cache
            rows.extend(_rows(values, c, condition, args.seed))
            rows.extend(_paired_rows(values, c, condition, args.seed))

    for c in categories:
        draws = {"random test pairs": select_pairs(c, args.pairs, args.seed)}
        if c == "chair":
            arm = select_pairs(c, args.pairs, args.seed, armchair_to_no_arm)
            draws["armchair->no-arm"] = arm[: args.armchair_pairs] \
                if args.armchair_pairs is not None else arm
        codes[c].precompute([p for pairs in draws.values() for p in pairs], shard)
        for condition, pairs in draws.items():
            if pairs:
                evaluate(c, pairs, condition)
    if args.fig6_pairs > 0:
        c = categories[0]
        sweep = layer_sweep(models[c], select_pairs(c, args.fig6_pairs, args.seed + 1), config,
                            args.device, cache, f"{scopes[c]}|Figure 6", shard, codes[c])
        sweep = {} if sharded else {k: v for k, v in sweep.items() if v[0]}
        for layer, (to_src, to_tgt) in sweep.items():
            for target, vals in (("source", to_src), ("target", to_tgt)):
                ci = bootstrap_ci(1e3 * np.asarray(vals), seed=args.seed)
                rows.append(_row(f"ours, layer {layer} only", c, "Figure 6" + suffix,
                                 f"CD to {target} (x1e-3)", ci, len(vals)))
        plot = args.plot or (str(Path(args.json).with_name(Path(args.json).stem + "_layers.png"))
                             if args.json else None)
        if plot and sweep:
            plot_layer_sweep(sweep, plot, f"Figure 6 ({c}): matched layer vs chamfer")
            print(f"wrote {plot}")
    if sharded:
        print(f"shard {args.shard} done; its pairs are in {args.cache}. Run again without "
              "--shard (same --cache) to write the tables.")
        return 0
    mine = {(r["category"], r["condition"]) for r in rows}
    rows = [r for r in old_rows if (r.get("category"), r.get("condition")) not in mine] + rows
    commands = old_commands + [" ".join(sys.argv)]
    write_results("feature_matching", "eval", rows, args.json,
                  "Implicit feature matching (paper 001): Table 1, Table 2, Figure 6 on built-in data",
                  COMMAND_SEPARATOR.join(commands))
    return 0
