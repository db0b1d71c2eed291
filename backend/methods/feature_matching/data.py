"""Training samples for the IM-Net model and voxelisation of user meshes.

IM-Net's coarse-to-fine training fits occupancy at one point per cell of 16^3, 32^3 and
64^3 grids over the network's grid (the canonical unit cube, or a larger cube with a
margin: ``half_extent``); at 64^3 it keeps the cells near the surface first (cells whose
3x3x3 neighbourhood is not all inside or all outside) and fills up with random other
cells. The point is the cell's centre (``sampling="center"``) or, as IM-Net's own point
sampling, a random 256^3 voxel of the cell with the cell's max-pooled label
(``"imnet"``, `subvoxel_samples`). The encoder sees 64^3 cell-centre occupancy.
Samples are stored as flat cell indices (int32), 256^3 voxel indices (uint8) and
occupancy (bool) to stay small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.data.generate import shape_seed, split_of
from backend.data.shapes import generate_shape

__all__ = [
    "RESOLUTIONS",
    "SAMPLE_COUNTS",
    "TrainingSet",
    "FINE_RESOLUTION",
    "build_training_set",
    "cell_centers",
    "category_seeds",
    "sample_cells",
    "subvoxel_points",
    "subvoxel_samples",
    "voxelize_mesh",
]

RESOLUTIONS: tuple[int, ...] = (16, 32, 64)
"""Grid resolutions of the three coarse-to-fine phases."""
SAMPLE_COUNTS: tuple[int, ...] = (4096, 32768, 32768)
"""Cells kept per shape at each resolution (all of 16^3 and 32^3; 32768 of 64^3)."""


FINE_RESOLUTION = 256
"""Resolution of the fine grid IM-Net's point sampling draws from (``sampling="imnet"``)."""


def cell_centers(index: torch.Tensor | np.ndarray, resolution: int,
                 half_extent: float = 0.5) -> torch.Tensor:
    """Canonical-frame centres of flat cell indices of an R^3 grid over [-h, h]^3
    (h = ``half_extent``; a network's grid: `ModelConfig.grid_half_extent`).

    index: (...) int, flat index x * R^2 + y * R + z (C order of an [x, y, z] array).
    Returns (..., 3) float32 points.
    """
    index = torch.as_tensor(index).long()
    r = resolution
    ijk = torch.stack([index // (r * r), (index // r) % r, index % r], dim=-1)
    return ((ijk.float() + 0.5) / r - 0.5) * (2 * half_extent)


def sample_cells(occupancy: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of ``count`` cells of an occupancy grid, near-surface cells first.

    occupancy: (R, R, R) bool, [x, y, z] at cell centres. Returns (count,) int32, all
    cells in order when count == R^3; else every near-surface cell (random subset if
    there are more than count) plus random other cells.
    """
    r = occupancy.shape[0]
    if occupancy.shape != (r, r, r):
        raise ValueError(f"occupancy must be a cubic (R, R, R) grid, got {occupancy.shape}")
    total = r**3
    if count > total:
        raise ValueError(f"cannot sample {count} cells from a {r}^3 grid")
    if count == total:
        return np.arange(total, dtype=np.int32)
    occ = torch.from_numpy(np.ascontiguousarray(occupancy)).float()[None, None]
    grown = torch.nn.functional.max_pool3d(occ, 3, stride=1, padding=1)
    shrunk = -torch.nn.functional.max_pool3d(-occ, 3, stride=1, padding=1)
    near = (grown != shrunk)[0, 0].numpy().reshape(-1)
    near_idx, far_idx = np.flatnonzero(near), np.flatnonzero(~near)
    if len(near_idx) >= count:
        return np.sort(rng.choice(near_idx, count, replace=False)).astype(np.int32)
    fill = rng.choice(far_idx, count - len(near_idx), replace=False)
    return np.sort(np.concatenate([near_idx, fill])).astype(np.int32)


def subvoxel_samples(fine: np.ndarray, resolution: int, count: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IM-Net's point sampling at one resolution, from a fine occupancy grid.

    A cell of the R^3 grid is occupied when any of its fine voxels is (IM-Net max-pools its
    256^3 voxels), ``count`` cells are chosen as `sample_cells` does (near-surface first),
    and each chosen cell gives one point: a random fine voxel of the cell whose occupancy
    equals the cell's. So every point's label is exact, points lie off the cell centres,
    and parts thinner than a cell are kept (a cell-centre grid can miss them).
    fine: (F, F, F) bool, [x, y, z], F a multiple of R.
    Returns (cells (count,) int32 flat indices of the R^3 grid, points (count, 3) int64
    indices of the chosen fine voxels, values (count,) bool).
    """
    f, r = fine.shape[0], resolution
    if fine.shape != (f, f, f) or f % r:
        raise ValueError(f"fine must be a cubic grid whose side is a multiple of {r}, got {fine.shape}")
    m = f // r
    blocks = fine.reshape(r, m, r, m, r, m).transpose(0, 2, 4, 1, 3, 5).reshape(r**3, m**3)
    coarse = blocks.any(axis=1)
    cells = sample_cells(coarse.reshape(r, r, r), count, rng)
    values = coarse[cells]
    sub = rng.integers(0, m**3, size=len(cells))  # empty cells: any fine voxel is empty
    full = np.flatnonzero(values)
    if len(full):  # occupied cells: a random occupied fine voxel
        keys = rng.random((len(full), m**3), dtype=np.float32)
        sub[full] = np.argmax(np.where(blocks[cells[full]], keys, -1.0), axis=1)
    cx, cy, cz = cells // (r * r), (cells // r) % r, cells % r
    sx, sy, sz = sub // (m * m), (sub // m) % m, sub % m
    points = np.stack([cx * m + sx, cy * m + sy, cz * m + sz], axis=1).astype(np.int64)
    return cells.astype(np.int32), points, values


def subvoxel_points(index: torch.Tensor | np.ndarray, fine: int = FINE_RESOLUTION,
                    half_extent: float = 0.5) -> torch.Tensor:
    """Canonical-frame centres of fine-voxel indices (..., 3) of an F^3 grid over [-h, h]^3.
    Returns (..., 3) float32 points."""
    index = torch.as_tensor(index).float()
    return ((index + 0.5) / fine - 0.5) * (2 * half_extent)


def voxelize_mesh(vertices: np.ndarray, faces: np.ndarray, resolution: int = 64,
                  half_extent: float = 0.5) -> np.ndarray:
    """Occupancy of a closed triangle mesh at the cell centres of an R^3 grid over
    [-h, h]^3 (h = ``half_extent``).

    vertices: (V, 3) float, canonical frame (unit cube); faces: (F, 3) int.
    Casts one ray per (x, y) column along +z and counts crossings (even-odd rule), so
    the mesh should be closed; open meshes give streaks. Returns (R, R, R) bool [x, y, z].
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise ValueError("voxelize_mesh needs vertices (V, 3) and at least one face (F, 3)")
    r = resolution
    centres = ((np.arange(r) + 0.5) / r - 0.5) * (2 * half_extent)
    # Irrational offsets keep rays off triangle edges and vertices.
    cx = centres + 1.234567e-7
    cy = centres + 2.7182818e-7
    qx, qy = np.meshgrid(cx, cy, indexing="ij")
    qx, qy = qx.reshape(-1), qy.reshape(-1)  # column c = x * r + y
    counts = np.zeros((r * r, r + 1), dtype=np.int32)
    tri = v[f]
    for start in range(0, len(f), 1024):
        t = tri[start : start + 1024]  # (T, 3, 3)
        a, b, c = t[:, 0], t[:, 1], t[:, 2]
        den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        ok = np.abs(den) > 1e-18  # triangles seen edge-on from +z cannot be crossed
        a, b, c, den = a[ok], b[ok], c[ok], den[ok]
        dx = qx[:, None] - c[None, :, 0]
        dy = qy[:, None] - c[None, :, 1]
        w0 = ((b[:, 1] - c[:, 1]) * dx + (c[:, 0] - b[:, 0]) * dy) / den
        w1 = ((c[:, 1] - a[:, 1]) * dx + (a[:, 0] - c[:, 0]) * dy) / den
        w2 = 1.0 - w0 - w1
        hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        col, tj = np.nonzero(hit)
        z = w0[col, tj] * a[tj, 2] + w1[col, tj] * b[tj, 2] + w2[col, tj] * c[tj, 2]
        first = np.searchsorted(centres, z, side="right")  # first cell above the crossing
        np.add.at(counts, (col, first), 1)
    inside = (np.cumsum(counts[:, :r], axis=1) % 2).astype(bool)
    return inside.reshape(r, r, r)


def category_seeds(category: str, split: str, count: int, seed: int = 0) -> list[int]:
    """The first ``count`` shape seeds of a category's split (train / val / test).

    Uses the built-in dataset's seeding (`shape_seed`, `split_of`), so the seeds are
    those of ``shapebridge data generate --seed SEED``.
    """
    split_id = {"train": 0, "val": 1, "test": 2}.get(split)
    if split_id is None:
        raise ValueError(f"split must be train, val or test, got {split!r}")
    out, i = [], 0
    while len(out) < count:
        s = shape_seed(seed, category, i)
        if split_of(s) == split_id:
            out.append(s)
        i += 1
    return out


@dataclass
class TrainingSet:
    """Coarse-to-fine samples of S shapes.

    voxels: (S, 64, 64, 64) bool encoder input, [x, y, z].
    cells: one (S, n_r) int32 array of flat cell indices per resolution in RESOLUTIONS.
    occupancy: one (S, n_r) bool array per resolution, occupancy at those cell centres
        (``points`` given: at those points).
    seeds: the S shape seeds.
    points: None (samples at the cell centres) or, for IM-Net's sampling
        (`subvoxel_samples`), one (S, n_r, 3) uint8 array per resolution of fine-voxel
        indices of a FINE_RESOLUTION^3 grid (`subvoxel_points` gives the positions).
    """

    voxels: np.ndarray
    cells: list[np.ndarray]
    occupancy: list[np.ndarray]
    seeds: list[int]
    points: list[np.ndarray] | None = None


def build_training_set(
    category: str, seeds: list[int], counts: tuple[int, ...] = SAMPLE_COUNTS, seed: int = 0,
    half_extent: float = 0.5, sampling: str = "center",
) -> TrainingSet:
    """Generate the built-in shapes of ``seeds`` and their coarse-to-fine samples.

    counts: cells kept per shape at each resolution of RESOLUTIONS.
    half_extent: the grids cover [-h, h]^3 of the canonical frame (the network's
        `ModelConfig.grid_half_extent`).
    sampling: "center" (exact occupancy at the cells' centres) or "imnet" (IM-Net's point
        sampling from a 256^3 grid, `subvoxel_samples`). The encoder's 64^3 voxels are the
        cell-centre occupancy either way (as `voxelize_mesh` gives for user meshes).
    """
    if sampling not in ("center", "imnet"):
        raise ValueError(f"sampling must be 'center' or 'imnet', got {sampling!r}")
    if len(counts) != len(RESOLUTIONS):
        raise ValueError(f"counts needs one entry per resolution {RESOLUTIONS}, got {counts}")
    rng = np.random.default_rng(seed)
    voxels = np.zeros((len(seeds), 64, 64, 64), dtype=bool)
    cells = [np.zeros((len(seeds), n), np.int32) for n in counts]
    occ = [np.zeros((len(seeds), n), bool) for n in counts]
    points = [np.zeros((len(seeds), n, 3), np.uint8) for n in counts] \
        if sampling == "imnet" else None
    for i, s in enumerate(seeds):
        shape = generate_shape(category, s)
        voxels[i] = shape.occupancy_grid(64, half_extent)
        fine = shape.occupancy_grid(FINE_RESOLUTION, half_extent) if points is not None else None
        for j, (r, n) in enumerate(zip(RESOLUTIONS, counts, strict=True)):
            if points is not None:
                cells[j][i], points[j][i], occ[j][i] = subvoxel_samples(fine, r, n, rng)
                continue
            grid = voxels[i] if r == 64 else shape.occupancy_grid(r, half_extent)
            idx = sample_cells(grid, n, rng)
            cells[j][i] = idx
            occ[j][i] = grid.reshape(-1)[idx]
    return TrainingSet(voxels, cells, occ, list(seeds), points)
