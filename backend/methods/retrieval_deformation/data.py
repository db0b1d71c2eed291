"""Training / evaluation targets for the built-in families: surface points and renders.

Targets are train-split (or test-split) shapes of the same seed stream as
``shapebridge data generate``; training targets skip the shapes used as library sources.
With ``data_dir`` (a dataset written by ``shapebridge data generate``) points and images
are read from the store instead of being generated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.data.generate import shape_seed, split_of
from backend.data.render import RenderConfig, render_shape
from backend.data.samples import sample_surface
from backend.data.shapes import generate_shape

SPLITS = ("train", "val", "test")


@dataclass
class Targets:
    """T targets. seeds: (T,) int64 shape seeds; points: (T, N, 3) float32 surface samples,
    canonical frame; images: (T, V, H, W, 3) uint8 renders or None."""

    seeds: np.ndarray
    points: np.ndarray
    images: np.ndarray | None


def split_seeds(category: str, split: str, count: int, seed: int = 0, skip: int = 0) -> list[int]:
    """The first ``count`` shape seeds of ``split`` after skipping ``skip`` of them."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    want, out, i = SPLITS.index(split), [], 0
    while len(out) < count + skip:
        s = shape_seed(seed, category, i)
        if split_of(s) == want:
            out.append(s)
        i += 1
    return out[skip:]


def builtin_targets(
    category: str, split: str, count: int, *, seed: int = 0, skip: int = 0,
    n_points: int = 2048, images: bool = False, resolution: int = 128, views: int = 8,
    data_dir: str | None = None,
) -> Targets:
    """Targets of a built-in category (see the module docstring).

    images: also render ``views`` RGB views per target at ``resolution`` (PyTorch3D).
    """
    if data_dir is not None:
        return _stored_targets(data_dir, split, count, skip, n_points, images, seed)
    seeds = split_seeds(category, split, count, seed, skip)
    pts, ims = [], []
    config = RenderConfig(resolution=resolution, views=views)
    for k, s in enumerate(seeds):
        shape = generate_shape(category, s)
        p, _, _ = sample_surface(shape.mesh(), n_points, np.random.default_rng([seed, s, k]))
        pts.append(p.astype(np.float32))
        if images:
            ims.append(render_shape(shape, config).rgb)
    return Targets(np.asarray(seeds, np.int64), np.stack(pts), np.stack(ims) if images else None)


def _stored_targets(data_dir: str, split: str, count: int, skip: int, n_points: int,
                    images: bool, seed: int) -> Targets:
    from backend.data.store import DatasetReader

    ds = DatasetReader(data_dir)
    index = ds.split(split)[skip:skip + count]
    if len(index) == 0:
        raise ValueError(f"{data_dir} has no {split!r} shapes past the first {skip}")
    rng = np.random.default_rng(seed)
    pts, ims, seeds = [], [], []
    for i in index:
        surface = np.asarray(ds.field(int(i), "samples_surface_points"))
        pts.append(surface[rng.choice(len(surface), n_points, replace=len(surface) < n_points)])
        if images:
            ims.append(np.asarray(ds.renders(int(i))["rgb"]))
        seeds.append(int(ds.index["seed"][int(i)]))
    return Targets(np.asarray(seeds, np.int64), np.stack(pts).astype(np.float32),
                   np.stack(ims) if images else None)
