"""Source libraries: part-segmented source meshes with their deformation structure.

A library holds, per source, its mesh (vertices, faces, face_parts, part labels), a fixed
number of area-uniform surface samples with their part index, the part box centres, the
connectivity joints and a symmetry flag. It is built from the built-in families
(`builtin_library`) or from a folder of the user's meshes (`folder_library`, parts from
named groups or connected components) and stored as plain ``.npy`` files plus a JSON
manifest (`SourceLibrary.save` / `SourceLibrary.load`; nothing is pickled).

Ragged per-source arrays are concatenated along axis 0 with (S + 1,) int64 offsets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.core.metrics import chamfer_distance
from backend.data.generate import shape_seed, split_of
from backend.data.loaders import load_user_folder
from backend.data.samples import sample_surface
from backend.data.shapes import Mesh, generate_shape
from backend.methods.retrieval_deformation.deformation import (
    JOINT_TOLERANCE,
    PARAMS_PER_PART,
    constraint_matrix,
    find_joints,
    nullspace_projector,
    part_centers,
    reflect_x,
)

#: A source is flagged bilaterally symmetric when the chamfer between one half of its
#: samples and the mirror image of the other half is at most this factor times the
#: chamfer between the two halves as they are (the sampling noise at this density).
SYMMETRY_FACTOR = 2.0
_RAGGED = ("vertices", "faces", "face_parts", "centers", "joint_pairs", "joint_points")


@dataclass
class SourceBatch:
    """Padded tensors of B sources (P = the largest part count among them).

    points: (B, N, 3) float32 surface samples, canonical frame.
    point_parts: (B, N) int64 part index of each sample.
    centers: (B, P, 3) float32 part box centres (0 on padded parts).
    part_mask: (B, P) bool, True on real parts.
    projector: (B, 6P, 6P) float32 connectivity null-space projector (0 on padded parts).
    symmetric: (B,) bool, source is bilaterally symmetric (symmetry loss applies).
    """

    points: torch.Tensor
    point_parts: torch.Tensor
    centers: torch.Tensor
    part_mask: torch.Tensor
    projector: torch.Tensor
    symmetric: torch.Tensor


@dataclass
class SourceLibrary:
    """S part-segmented sources (see the module docstring for the storage layout).

    names: S source ids; categories: S category names (or None); part_labels: S lists of
    part label strings. points: (S, N, 3) float32 samples; point_parts: (S, N) int32.
    arrays: ragged arrays by name (vertices (sum V, 3) float32, faces (sum F, 3) int32
    local to each source, face_parts (sum F,) int32, centers (sum P, 3) float32,
    joint_pairs (sum J, 2) int32, joint_points (sum J, 3) float32) and offsets: (S + 1,)
    int64 per ragged name. symmetric: (S,) bool.
    """

    names: list[str]
    categories: list[str | None]
    part_labels: list[list[str]]
    points: np.ndarray
    point_parts: np.ndarray
    symmetric: np.ndarray
    arrays: dict[str, np.ndarray]
    offsets: dict[str, np.ndarray]
    _projectors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def ragged(self, name: str, s: int) -> np.ndarray:
        """Source ``s``'s slice of a ragged array."""
        o = self.offsets[name]
        return self.arrays[name][o[s]:o[s + 1]]

    def num_parts(self, s: int) -> int:
        return len(self.part_labels[s])

    def max_parts(self) -> int:
        return max(self.num_parts(s) for s in range(len(self)))

    def mesh(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source ``s``'s mesh: vertices (V, 3) float32, faces (F, 3) int32, face_parts (F,)."""
        return self.ragged("vertices", s), self.ragged("faces", s), self.ragged("face_parts", s)

    def projector(self, s: int) -> np.ndarray:
        """(6P, 6P) float64 connectivity null-space projector of source ``s`` (cached)."""
        if s not in self._projectors:
            a = constraint_matrix(
                self.ragged("centers", s).astype(np.float64),
                self.ragged("joint_pairs", s),
                self.ragged("joint_points", s).astype(np.float64),
            )
            self._projectors[s] = nullspace_projector(a, PARAMS_PER_PART * self.num_parts(s))
        return self._projectors[s]

    def batch(self, indices: np.ndarray | torch.Tensor, device: str | torch.device) -> SourceBatch:
        """Padded tensors of the sources ``indices`` ((B,) int) on ``device``."""
        idx = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64).reshape(-1)
        p = max(self.num_parts(int(s)) for s in idx)
        centers = np.zeros((len(idx), p, 3), np.float32)
        mask = np.zeros((len(idx), p), bool)
        proj = np.zeros((len(idx), 6 * p, 6 * p), np.float32)
        for b, s in enumerate(idx):
            n = self.num_parts(int(s))
            centers[b, :n] = self.ragged("centers", int(s))
            mask[b, :n] = True
            proj[b, : 6 * n, : 6 * n] = self.projector(int(s))
        return SourceBatch(
            points=torch.from_numpy(self.points[idx]).to(device),
            point_parts=torch.from_numpy(self.point_parts[idx].astype(np.int64)).to(device),
            centers=torch.from_numpy(centers).to(device),
            part_mask=torch.from_numpy(mask).to(device),
            projector=torch.from_numpy(proj).to(device),
            symmetric=torch.from_numpy(self.symmetric[idx]).to(device),
        )

    def save(self, directory: str | Path) -> Path:
        """Write the library into ``directory`` (created): manifest.json + .npy files."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        np.save(root / "points.npy", self.points)
        np.save(root / "point_parts.npy", self.point_parts)
        np.save(root / "symmetric.npy", self.symmetric)
        for name in _RAGGED:
            np.save(root / f"{name}.npy", self.arrays[name])
            np.save(root / f"{name}.offsets.npy", self.offsets[name])
        manifest = {
            "format": "shapebridge-source-library",
            "version": 1,
            "names": self.names,
            "categories": self.categories,
            "part_labels": self.part_labels,
        }
        (root / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        return root

    @classmethod
    def load(cls, directory: str | Path) -> SourceLibrary:
        """Read a library written by `save`. Raises ValueError if it is not one."""
        root = Path(directory)
        path = root / "manifest.json"
        if not path.is_file():
            raise ValueError(
                f"{root} is not a source library (no manifest.json); build one with "
                "`shapebridge library index DIR`"
            )
        manifest = json.loads(path.read_text())
        if manifest.get("format") != "shapebridge-source-library":
            raise ValueError(f"{path} is not a ShapeBridge source library manifest")
        return cls(
            names=manifest["names"],
            categories=manifest["categories"],
            part_labels=manifest["part_labels"],
            points=np.load(root / "points.npy"),
            point_parts=np.load(root / "point_parts.npy"),
            symmetric=np.load(root / "symmetric.npy"),
            arrays={n: np.load(root / f"{n}.npy") for n in _RAGGED},
            offsets={n: np.load(root / f"{n}.offsets.npy") for n in _RAGGED},
        )


@dataclass
class _Source:
    name: str
    category: str | None
    vertices: np.ndarray
    faces: np.ndarray
    face_parts: np.ndarray
    part_labels: list[str]


def is_symmetric(points: np.ndarray, rng: np.random.Generator) -> bool:
    """Whether (N, 3) canonical samples are mirror-symmetric about x = 0 (see SYMMETRY_FACTOR)."""
    perm = rng.permutation(len(points))
    half = len(points) // 2
    a = torch.from_numpy(points[perm[:half]][None].astype(np.float32))
    b = torch.from_numpy(points[perm[half:]][None].astype(np.float32))
    noise = chamfer_distance(a, b).chamfer.item()
    mirrored = chamfer_distance(a, reflect_x(b)).chamfer.item()
    return mirrored <= SYMMETRY_FACTOR * noise + 1e-6


def prepare_source(
    source: _Source, n_points: int, rng: np.random.Generator, tolerance: float = JOINT_TOLERANCE
) -> dict:
    """Samples, parts, joints and symmetry of one source mesh (canonical frame).

    Parts without faces are dropped and the rest renumbered in order.
    """
    used = np.unique(source.face_parts)
    remap = np.full(int(source.face_parts.max()) + 1, -1, np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    face_parts = remap[source.face_parts]
    labels = [source.part_labels[i] for i in used]
    mesh = Mesh(source.vertices.astype(np.float32), source.faces.astype(np.int32), face_parts)
    pts, _, face = sample_surface(mesh, n_points, rng)
    parts = face_parts[face]
    # Part geometry from the samples and every vertex of the part's faces (small parts
    # may receive few samples).
    fv = mesh.faces.reshape(-1)
    vparts = np.repeat(face_parts, 3)
    dense = np.concatenate([pts, mesh.vertices[fv].astype(np.float64)])
    dense_parts = np.concatenate([parts, vparts])
    centers = part_centers(dense, dense_parts, len(labels))
    pairs, joints = find_joints(dense, dense_parts, len(labels), tolerance)
    symmetric = is_symmetric(pts, rng)
    return {
        "name": source.name,
        "category": source.category,
        "part_labels": labels,
        "points": pts.astype(np.float32),
        "point_parts": parts.astype(np.int32),
        "symmetric": symmetric,
        "vertices": mesh.vertices,
        "faces": mesh.faces,
        "face_parts": face_parts,
        "centers": centers.astype(np.float32),
        "joint_pairs": pairs.astype(np.int32),
        "joint_points": joints.astype(np.float32),
    }


def _assemble(prepared: list[dict]) -> SourceLibrary:
    if not prepared:
        raise ValueError("a source library needs at least one source")
    arrays, offsets = {}, {}
    for name in _RAGGED:
        parts = [p[name] for p in prepared]
        arrays[name] = np.concatenate(parts)
        offsets[name] = np.concatenate([[0], np.cumsum([len(x) for x in parts])]).astype(np.int64)
    return SourceLibrary(
        names=[p["name"] for p in prepared],
        categories=[p["category"] for p in prepared],
        part_labels=[p["part_labels"] for p in prepared],
        points=np.stack([p["points"] for p in prepared]),
        point_parts=np.stack([p["point_parts"] for p in prepared]),
        symmetric=np.array([p["symmetric"] for p in prepared], bool),
        arrays=arrays,
        offsets=offsets,
    )


def builtin_source_seeds(category: str, count: int, seed: int = 0) -> list[int]:
    """Shape seeds of the first ``count`` train-split shapes of a built-in category.

    These are the shapes `builtin_library` uses as sources (same seeds and split rule as
    ``shapebridge data generate --seed SEED``).
    """
    seeds, i = [], 0
    while len(seeds) < count:
        s = shape_seed(seed, category, i)
        if split_of(s) == 0:
            seeds.append(s)
        i += 1
    return seeds


def builtin_library(
    category: str, count: int, seed: int = 0, n_points: int = 2048
) -> SourceLibrary:
    """Library of ``count`` built-in ``category`` shapes (train split), parts as generated.

    n_points: surface samples stored per source. Deterministic in (category, count, seed).
    """
    if count < 1:
        raise ValueError(f"a library needs at least one source; got count={count}")
    prepared = []
    for k, s in enumerate(builtin_source_seeds(category, count, seed)):
        shape = generate_shape(category, s)
        mesh = shape.mesh()
        labels = [p.label for p in shape.parts]
        src = _Source(f"{category}/{s}", category, mesh.vertices, mesh.faces, mesh.face_parts, labels)
        prepared.append(prepare_source(src, n_points, np.random.default_rng([seed, k])))
    return _assemble(prepared)


def folder_library(
    directory: str | Path, up: str = "y", front: str | None = None, n_points: int = 2048,
    seed: int = 0,
) -> SourceLibrary:
    """Library from a folder of the user's meshes (OBJ, GLB/GLTF, PLY, STL, OFF).

    Parts are the files' named groups, or connected components for single-piece files
    (see `backend.data.loaders.load_mesh_file`). up/front: the files' axes.
    """
    prepared = []
    for k, shape in enumerate(load_user_folder(directory, up, front)):
        src = _Source(
            shape.name, shape.category, shape.vertices, shape.faces, shape.face_parts,
            list(shape.part_labels),
        )
        prepared.append(prepare_source(src, n_points, np.random.default_rng([seed, k])))
    return _assemble(prepared)
