"""On-disk dataset store: sharded ``.npy`` files, memory-mapped, with a JSON manifest.

Layout of a dataset directory (one category; see docs/data.md, "Store format")::

    DIR/manifest.json              format, version, category, counts, config, splits, fields
    DIR/index.npy                  structured (N,) array: shard, row, seed, split per shape
    DIR/shards/shard-00000/        shapes [0, shard_size): one file per field
        <field>.npy                fixed-size field, stacked: (rows, *shape)
        <field>.npy + <field>.offsets.npy
                                   ragged field: rows concatenated along axis 0, and
                                   (rows + 1,) int64 offsets; row r is data[off[r]:off[r+1]]
        meta.json                  per-row JSON objects (shape attributes, part descriptions)

Shards are written to a temporary directory and renamed into place, so a shard directory
that exists is complete; an interrupted generation resumes by writing the missing ones.
Every file is deterministic (no timestamps), so the same config gives the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "shapebridge-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
INDEX_DTYPE = np.dtype([("shard", "<i4"), ("row", "<i4"), ("seed", "<i8"), ("split", "u1")])


@dataclass
class Record:
    """Everything stored for one shape.

    fixed: name -> array whose shape and dtype are the same for every shape of the dataset.
    ragged: name -> array whose first axis varies per shape (mesh vertices, faces, parts).
    meta: JSON-serialisable dict (attributes, part primitive descriptions).
    """

    fixed: dict[str, np.ndarray]
    ragged: dict[str, np.ndarray]
    meta: dict[str, Any]


def shard_name(shard: int) -> str:
    """Directory name of shard number ``shard`` (``shard-00042``)."""
    return f"shard-{shard:05d}"


def field_specs(record: Record) -> dict[str, dict]:
    """Manifest description of a record's fields: dtype (numpy str) and per-shape shape.

    Fixed fields: ``{"kind": "fixed", "dtype": "<f4", "shape": [...]}``; ragged fields:
    ``{"kind": "ragged", "dtype": ..., "inner_shape": [...]}`` (shape without axis 0).
    """
    specs: dict[str, dict] = {}
    for name, a in sorted(record.fixed.items()):
        specs[name] = {"kind": "fixed", "dtype": a.dtype.str, "shape": list(a.shape)}
    for name, a in sorted(record.ragged.items()):
        specs[name] = {"kind": "ragged", "dtype": a.dtype.str, "inner_shape": list(a.shape[1:])}
    return specs


def write_shard(root: str | Path, shard: int, records: list[Record], specs: dict) -> Path:
    """Write one complete shard atomically (temporary directory, then rename).

    records: the shard's shapes in row order. specs: :func:`field_specs` of the dataset;
    every record must match it (a mismatch is a generator bug and raises ValueError).
    Returns the shard directory.
    """
    shards = Path(root) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    final = shards / shard_name(shard)
    if final.exists():
        raise FileExistsError(f"{final} already exists; a complete shard is never rewritten")
    tmp = shards / f".tmp-{shard_name(shard)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for r, rec in enumerate(records):
        got = field_specs(rec)
        if got != specs:
            diff = sorted(k for k in set(got) | set(specs) if got.get(k) != specs.get(k))
            raise ValueError(f"shard {shard} row {r}: fields {diff} differ from the manifest")
    for name, spec in specs.items():
        if spec["kind"] == "fixed":
            np.save(tmp / f"{name}.npy", np.stack([rec.fixed[name] for rec in records]))
        else:
            parts = [rec.ragged[name] for rec in records]
            offsets = np.zeros(len(parts) + 1, dtype=np.int64)
            offsets[1:] = np.cumsum([len(p) for p in parts])
            np.save(tmp / f"{name}.npy", np.concatenate(parts, axis=0))
            np.save(tmp / f"{name}.offsets.npy", offsets)
    meta = [rec.meta for rec in records]
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True, indent=1) + "\n")
    os.rename(tmp, final)
    return final


def complete_shards(root: str | Path) -> set[int]:
    """Shard numbers whose directory exists (hence was fully written)."""
    shards = Path(root) / "shards"
    if not shards.is_dir():
        return set()
    return {int(p.name[6:]) for p in shards.iterdir() if p.name.startswith("shard-")}


def remove_partial_shards(root: str | Path) -> None:
    """Delete temporary shard directories left behind by an interrupted writer."""
    shards = Path(root) / "shards"
    if shards.is_dir():
        for p in shards.iterdir():
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as sorted, indented JSON, atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=1) + "\n")
    os.replace(tmp, path)


def read_manifest(root: str | Path) -> dict:
    """Load and check ``DIR/manifest.json``; raises ValueError if it is not a dataset."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise ValueError(
            f"{root} is not a ShapeBridge dataset (no manifest.json); "
            "create one with `shapebridge data generate`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a {FORMAT_NAME} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {manifest.get('version')}; this ShapeBridge reads "
            f"version {FORMAT_VERSION}; regenerate the dataset"
        )
    return manifest


class DatasetReader:
    """Random access to a complete dataset directory, through memory-mapped shards.

    ``reader[i]`` returns every fixed-size field of shape ``i`` as read-only views into
    memory-mapped files (no copy), plus ``seed`` and ``split``. Ragged fields come from
    :meth:`ragged` / :meth:`mesh`. At most ``max_open_shards`` shards stay mapped (each
    mapped file holds a file descriptor); views handed out stay valid after eviction.
    """

    def __init__(self, root: str | Path, max_open_shards: int = 8) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if not self.manifest.get("complete"):
            raise ValueError(
                f"{self.root} is incomplete (generation was interrupted); run the same "
                "`shapebridge data generate` command again to finish it"
            )
        self.index: np.ndarray = np.load(self.root / "index.npy")
        if self.index.dtype != INDEX_DTYPE or len(self.index) != self.manifest["count"]:
            raise ValueError(f"{self.root}/index.npy does not match the manifest")
        self.fields: dict[str, dict] = self.manifest["fields"]
        self.category: str = self.manifest["category"]
        self._max_open = max_open_shards
        self._shards: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.index)

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"shape index {i} out of range for a dataset of {len(self)}")
        return i % len(self)

    def _file(self, shard: int, filename: str) -> Any:
        """A shard's file, memory-mapped (``.npy``) or parsed (``.json``), LRU-cached."""
        files = self._shards.get(shard)
        if files is None:
            files = self._shards[shard] = {}
            if len(self._shards) > self._max_open:
                self._shards.popitem(last=False)
        else:
            self._shards.move_to_end(shard)
        if filename not in files:
            path = self.root / "shards" / shard_name(shard) / filename
            if filename.endswith(".json"):
                files[filename] = json.loads(path.read_text())
            else:
                files[filename] = np.load(path, mmap_mode="r")
        return files[filename]

    def field(self, i: int, name: str) -> np.ndarray:
        """Field ``name`` of shape ``i``: a memmap view for fixed fields, one row's slice
        of the concatenated data for ragged fields (also a view)."""
        i = self._check(i)
        spec = self.fields.get(name)
        if spec is None:
            raise KeyError(f"no field {name!r}; this dataset has {sorted(self.fields)}")
        shard, row = int(self.index["shard"][i]), int(self.index["row"][i])
        data = self._file(shard, f"{name}.npy")
        if spec["kind"] == "fixed":
            return data[row]
        offsets = self._file(shard, f"{name}.offsets.npy")
        return data[offsets[row] : offsets[row + 1]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """All fixed-size fields of shape ``i`` (memmap views) plus ``seed`` and ``split``."""
        i = self._check(i)
        out: dict[str, Any] = {
            name: self.field(i, name)
            for name, spec in self.fields.items()
            if spec["kind"] == "fixed"
        }
        out["seed"] = int(self.index["seed"][i])
        out["split"] = SPLITS[int(self.index["split"][i])]
        return out

    def ragged(self, i: int, name: str) -> np.ndarray:
        """Ragged field ``name`` of shape ``i`` (e.g. ``mesh_vertices``), a memmap view."""
        if self.fields.get(name, {}).get("kind") != "ragged":
            raise KeyError(f"{name!r} is not a ragged field of this dataset")
        return self.field(i, name)

    def split(self, name: str) -> np.ndarray:
        """(n,) int64 global indices of the shapes in split ``name`` (train, val or test)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; use one of {SPLITS}")
        return np.flatnonzero(self.index["split"] == SPLITS.index(name)).astype(np.int64)

    def mesh(self, i: int) -> dict[str, np.ndarray]:
        """Mesh of shape ``i``: vertices (V, 3) float32 canonical, faces (F, 3) int32 CCW
        outward, face_parts (F,) int32 index into the shape's parts."""
        return {
            "vertices": self.field(i, "mesh_vertices"),
            "faces": self.field(i, "mesh_faces"),
            "face_parts": self.field(i, "mesh_face_parts"),
        }

    def group(self, i: int, prefix: str) -> dict[str, np.ndarray]:
        """Fixed fields named ``<prefix>_<name>``, keyed by ``name`` (memmap views)."""
        p = prefix + "_"
        return {
            n[len(p) :]: self.field(i, n)
            for n, s in self.fields.items()
            if n.startswith(p) and s["kind"] == "fixed"
        }

    def renders(self, i: int) -> dict[str, np.ndarray]:
        """Renders and cameras of shape ``i`` (see backend.data.render.Renders fields)."""
        return self.group(i, "render")

    def samples(self, i: int) -> dict[str, np.ndarray]:
        """Point, SDF and voxel samples of shape ``i`` (ShapeSamples fields)."""
        return self.group(i, "samples")

    def meta(self, i: int) -> dict[str, Any]:
        """Per-shape JSON metadata (attributes, parts) of shape ``i``."""
        i = self._check(i)
        shard, row = int(self.index["shard"][i]), int(self.index["row"][i])
        return self._file(shard, "meta.json")[row]
