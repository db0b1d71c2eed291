"""Parallel, resumable, seeded generation of a procedural dataset into the store.

Shape ``i`` of a dataset gets the seed ``shape_seed(seed, category, i)`` (a hash, so
it does not depend on the count or the worker layout) and the split ``split_of`` that
seed (80/10/10 by a second hash, so adding shapes never moves an existing one).
Each worker builds whole shapes (procedural shape, mesh, samples, renders) with one
torch thread; the parent writes each shard as soon as all its rows have arrived.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing as mp
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backend.data.render import RenderConfig
from backend.data.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    INDEX_DTYPE,
    SPLITS,
    Record,
    complete_shards,
    field_specs,
    read_manifest,
    remove_partial_shards,
    shard_name,
    write_json,
    write_shard,
)

SPLIT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass(frozen=True)
class GenerateConfig:
    """What a dataset directory holds; stored in its manifest and checked on resume."""

    category: str
    """One of backend.data.shapes.CATEGORIES."""
    count: int
    """Number of shapes."""
    seed: int = 0
    """Dataset seed; shape i's seed is shape_seed(seed, category, i)."""
    shard_size: int = 256
    """Shapes per shard."""
    render: RenderConfig = field(default_factory=RenderConfig)
    """Views per shape, resolution, lights, backgrounds."""

    def to_json(self) -> dict:
        """JSON form (the manifest's ``config``)."""
        d = dataclasses.asdict(self)
        d["render"]["elevation_range_deg"] = list(self.render.elevation_range_deg)
        d["render"]["light_elevation_range_deg"] = list(self.render.light_elevation_range_deg)
        d["render"]["backgrounds"] = list(self.render.backgrounds)
        return d


def shape_seed(seed: int, category: str, index: int) -> int:
    """Seed of shape ``index`` of ``category`` in a dataset of seed ``seed``: a 63-bit
    blake2b hash of the three, so shapes do not depend on the dataset's size."""
    h = hashlib.blake2b(f"shapebridge/{seed}/{category}/{index}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & (2**63 - 1)


def split_of(seed: int) -> int:
    """Split id (index into store.SPLITS) of a shape seed: 80 % train, 10 % val, 10 % test,
    from a hash of the seed alone."""
    h = hashlib.blake2b(f"split/{seed}".encode(), digest_size=8)
    u = int.from_bytes(h.digest(), "little") / 2.0**64
    edges = np.cumsum([SPLIT_FRACTIONS[s] for s in SPLITS])
    return int(min(np.searchsorted(edges, u, side="right"), len(SPLITS) - 1))


def build_index(config: GenerateConfig) -> np.ndarray:
    """(N,) INDEX_DTYPE structured array: shard, row, seed and split of every shape."""
    n = config.count
    index = np.zeros(n, dtype=INDEX_DTYPE)
    i = np.arange(n)
    index["shard"] = i // config.shard_size
    index["row"] = i % config.shard_size
    index["seed"] = [shape_seed(config.seed, config.category, k) for k in range(n)]
    index["split"] = [split_of(int(s)) for s in index["seed"]]
    return index


def build_record(category: str, seed: int, render: RenderConfig, device: str = "cpu") -> Record:
    """Generate one shape and everything stored for it (deterministic in its arguments)."""
    from backend.data.render import render_mesh
    from backend.data.samples import sample_shape
    from backend.data.shapes import generate_shape

    shape = generate_shape(category, seed)
    mesh = shape.mesh()
    samples = sample_shape(shape, seed)
    renders = render_mesh(
        mesh.vertices, mesh.faces, mesh.face_parts, shape.part_label_ids(), render, seed, device
    )
    return make_record(shape, samples, renders)


def make_record(shape, samples, renders) -> Record:
    """The stored record of a Shape, its ShapeSamples and its Renders."""
    mesh = shape.mesh()
    fixed = {
        "keypoints": np.asarray(shape.keypoints, dtype=np.float32),
        "keypoint_mask": np.asarray(shape.keypoint_mask, dtype=bool),
    }
    for f in dataclasses.fields(samples):
        fixed[f"samples_{f.name}"] = np.asarray(getattr(samples, f.name))
    for name, a in renders.as_dict().items():
        fixed[f"render_{name}"] = a
    ragged = {
        "mesh_vertices": np.asarray(mesh.vertices, dtype=np.float32),
        "mesh_faces": np.asarray(mesh.faces, dtype=np.int32),
        "mesh_face_parts": np.asarray(mesh.face_parts, dtype=np.int32),
        "part_label_ids": np.asarray(shape.part_label_ids(), dtype=np.int32),
        "part_transforms": np.stack([p.transform for p in shape.parts]).astype(np.float32),
    }
    meta = {
        "attributes": _jsonable(shape.attributes),
        "parts": [
            {"primitive": p.primitive, "params": p.params, "label": p.label, "instance": p.instance}
            for p in shape.parts
        ],
    }
    return Record(fixed=fixed, ragged=ragged, meta=meta)


def _jsonable(value):
    """Attributes as plain JSON types (numpy scalars become Python ones)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _work(job: tuple[str, int, int, RenderConfig, str]) -> tuple[int, Record]:
    category, i, seed, render, device = job
    return i, build_record(category, seed, render, device)


def _manifest(config: GenerateConfig, index: np.ndarray, fields: dict | None, done: bool) -> dict:
    from backend.data.shapes import KEYPOINT_NAMES, PART_LABELS

    counts = np.bincount(index["split"], minlength=len(SPLITS))
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": done,
        "category": config.category,
        "count": config.count,
        "shard_size": config.shard_size,
        "num_shards": -(-config.count // config.shard_size),
        "config": config.to_json(),
        "splits": {
            "rule": "blake2b hash of the shape seed (backend.data.generate.split_of)",
            "fractions": SPLIT_FRACTIONS,
            "counts": {s: int(c) for s, c in zip(SPLITS, counts)},
        },
        "part_labels": list(PART_LABELS[config.category]),
        "keypoint_names": list(KEYPOINT_NAMES[config.category]),
        "fields": fields,
    }


def _reusable_shards(root: Path, config: GenerateConfig) -> set[int]:
    """Complete shards whose rows are still those of ``config``; the others are deleted."""
    n_shards = -(-config.count // config.shard_size)
    keep = set()
    for s in sorted(complete_shards(root)):
        want = min(config.shard_size, config.count - s * config.shard_size)
        path = root / "shards" / shard_name(s)
        rows = np.load(path / "keypoints.npy", mmap_mode="r").shape[0]
        if s < n_shards and rows == want:
            keep.add(s)
        else:
            shutil.rmtree(path)
    return keep


def generate_dataset(
    out: str | Path,
    config: GenerateConfig,
    workers: int | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> dict:
    """Generate (or finish) the dataset of ``config`` in directory ``out``.

    Complete shards already in ``out`` are kept (resume); a directory made with a
    different config (other than ``count``) is refused. workers: processes (default: one
    per CPU core; 1 runs in this process). Returns {"written": [...], "skipped": [...]}
    shard numbers.
    """
    from backend.data.shapes import CATEGORIES

    if config.category not in CATEGORIES:
        raise ValueError(f"unknown category {config.category!r}; use one of {CATEGORIES}")
    if config.count < 1 or config.shard_size < 1:
        raise ValueError(f"count and shard_size must be >= 1; got {config.count}, "
                         f"{config.shard_size}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    fields = None
    if (root / "manifest.json").exists():
        old = read_manifest(root)
        mine = config.to_json()
        if {**old["config"], "count": 0} != {**mine, "count": 0}:
            raise ValueError(
                f"{root} holds a dataset made with another config ({old['config']}); "
                "use a new --out directory or delete this one"
            )
        fields = old["fields"]
    remove_partial_shards(root)
    keep = _reusable_shards(root, config)
    index = build_index(config)
    np.save(root / "index.npy", index)
    write_json(root / "manifest.json", _manifest(config, index, fields, done=False))

    n_shards = -(-config.count // config.shard_size)
    todo = [s for s in range(n_shards) if s not in keep]
    jobs = [
        (config.category, i, int(index["seed"][i]), config.render, device)
        for s in todo
        for i in range(s * config.shard_size, min((s + 1) * config.shard_size, config.count))
    ]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.count, initial=config.count - len(jobs), unit="shape",
                   desc=config.category)
    pending: dict[int, dict[int, Record]] = {s: {} for s in todo}
    for i, record in _run_jobs(jobs, workers):
        if fields is None:
            fields = field_specs(record)
            write_json(root / "manifest.json", _manifest(config, index, fields, done=False))
        s = i // config.shard_size
        pending[s][i] = record
        rows = min(config.shard_size, config.count - s * config.shard_size)
        if len(pending[s]) == rows:
            write_shard(root, s, [pending[s][k] for k in sorted(pending[s])], fields)
            del pending[s]
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    write_json(root / "manifest.json", _manifest(config, index, fields, done=True))
    return {"written": todo, "skipped": sorted(keep)}


def _run_jobs(jobs: list, workers: int | None) -> Iterator[tuple[int, Record]]:
    """Yield (shape index, record) in job order, from a process pool or this process."""
    import os

    import torch

    n = workers or os.cpu_count() or 1
    if n == 1 or len(jobs) <= 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # same arithmetic as a worker, hence the same bytes
        try:
            for job in jobs:
                yield _work(job)
        finally:
            torch.set_num_threads(threads)
        return
    ctx = mp.get_context("spawn")  # torch and fork do not mix
    with ctx.Pool(min(n, len(jobs)), initializer=_init_worker) as pool:
        yield from pool.imap(_work, jobs, chunksize=1)
