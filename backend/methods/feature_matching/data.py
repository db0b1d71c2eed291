"""Training samples for the IM-Net model and voxelisation of user meshes.

IM-Net's coarse-to-fine training fits occupancy at the cell centres of 16^3, 32^3 and
64^3 grids over the unit cube [-0.5, 0.5]^3 (canonical frame); at 64^3 it keeps the
cells near the surface first (cells whose 3x3x3 neighbourhood is not all inside or all
outside) and fills up with random other cells. The encoder sees 64^3 occupancy.
Samples are stored as flat cell indices (int32) plus occupancy (bool) to stay small.
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
    "build_training_set",
    "cell_centers",
    "category_seeds",
    "sample_cells",
    "voxelize_mesh",
]

RESOLUTIONS: tuple[int, ...] = (16, 32, 64)
"""Grid resolutions of the three coarse-to-fine phases."""
SAMPLE_COUNTS: tuple[int, ...] = (4096, 32768, 32768)
"""Cells kept per shape at each resolution (all of 16^3 and 32^3; 32768 of 64^3)."""


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
    occupancy: one (S, n_r) bool array per resolution, occupancy at those cell centres.
    seeds: the S shape seeds.
    """

    voxels: np.ndarray
    cells: list[np.ndarray]
    occupancy: list[np.ndarray]
    seeds: list[int]


def build_training_set(
    category: str, seeds: list[int], counts: tuple[int, ...] = SAMPLE_COUNTS, seed: int = 0,
    half_extent: float = 0.5,
) -> TrainingSet:
    """Generate the built-in shapes of ``seeds`` and their coarse-to-fine samples.

    counts: cells kept per shape at each resolution of RESOLUTIONS.
    half_extent: the grids cover [-h, h]^3 of the canonical frame (the network's
        `ModelConfig.grid_half_extent`).
    """
    if len(counts) != len(RESOLUTIONS):
        raise ValueError(f"counts needs one entry per resolution {RESOLUTIONS}, got {counts}")
    rng = np.random.default_rng(seed)
    voxels = np.zeros((len(seeds), 64, 64, 64), dtype=bool)
    cells = [np.zeros((len(seeds), n), np.int32) for n in counts]
    occ = [np.zeros((len(seeds), n), bool) for n in counts]
    for i, s in enumerate(seeds):
        shape = generate_shape(category, s)
        for j, (r, n) in enumerate(zip(RESOLUTIONS, counts, strict=True)):
            grid = shape.occupancy_grid(r, half_extent)
            if r == 64:
                voxels[i] = grid
            idx = sample_cells(grid, n, rng)
            cells[j][i] = idx
            occ[j][i] = grid.reshape(-1)[idx]
    return TrainingSet(voxels, cells, occ, list(seeds))
