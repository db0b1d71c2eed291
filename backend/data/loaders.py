"""Loaders for the real shape formats users have, into one `LoadedShape` structure.

- `load_mesh_file` / `load_user_folder`: OBJ, GLB/GLTF, PLY, STL, OFF through trimesh.
- `load_shapenet_v2`: ShapeNetCore v2 folders.
- `load_partnet`: PartNet hierarchies (``result.json`` + ``objs/``).
- `load_keypointnet`: KeypointNet annotations with their ASCII PCD clouds or meshes.

Every shape comes back in the backend's canonical frame: Y-up, right-handed, front
facing +Z, centred at the origin with its longest bounding-box side 1 (so inside
[-0.5, 0.5]^3). ``LoadedShape.normalization`` records how, and `to_source_frame`
undoes it:

    canonical = scale * (R(up, front) @ source - center)

where ``R`` is the rotation taking the file's up axis to +Y and its front axis to
+Z, and ``center``/``scale`` are the unit-cube normalisation of the rotated shape
computed by ``blender_addon.conventions.normalize_to_unit_cube`` (the one owner of
normalisation; ``R`` for ``up="z"`` equals its Blender-to-canonical rotation).

Frame assumptions, from the datasets' documentation: ShapeNetCore v2 models (and
the KeypointNet clouds sampled from them) are Y-up with the front facing -Z.
PartNet meshes are assumed to share ShapeNet's alignment; pass ``front`` if yours
come out backwards. A folder of user meshes is taken as Y-up, front +Z (glTF's
convention); use ``up="z"`` for Z-up exports (front then defaults to Blender's -Y).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import trimesh
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from blender_addon.conventions import Normalization, normalize_to_unit_cube

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply", ".stl", ".off")
# Files that accompany meshes (materials, buffers, textures): skipped without a warning.
_COMPANION_SUFFIXES = {".mtl", ".bin", ".png", ".jpg", ".jpeg", ".tga", ".bmp", ".tif", ".tiff"}

# ShapeNetCore v2 synset ids of common categories -> short names (KeypointNet uses the same ids).
SHAPENET_SYNSETS: dict[str, str] = {
    "02691156": "airplane",
    "02747177": "trash_bin",
    "02808440": "bathtub",
    "02818832": "bed",
    "02828884": "bench",
    "02871439": "bookshelf",
    "02876657": "bottle",
    "02880940": "bowl",
    "02924116": "bus",
    "02933112": "cabinet",
    "02954340": "cap",
    "02958343": "car",
    "03001627": "chair",
    "03046257": "clock",
    "03211117": "display",
    "03467517": "guitar",
    "03513137": "helmet",
    "03593526": "jar",
    "03624134": "knife",
    "03636649": "lamp",
    "03642806": "laptop",
    "03691459": "loudspeaker",
    "03790512": "motorcycle",
    "03797390": "mug",
    "03948459": "pistol",
    "04090263": "rifle",
    "04225987": "skateboard",
    "04256520": "sofa",
    "04379243": "table",
    "04401088": "telephone",
    "04530566": "vessel",
}

_AXES = {
    "+x": (1.0, 0.0, 0.0),
    "-x": (-1.0, 0.0, 0.0),
    "+y": (0.0, 1.0, 0.0),
    "-y": (0.0, -1.0, 0.0),
    "+z": (0.0, 0.0, 1.0),
    "-z": (0.0, 0.0, -1.0),
}
_DEFAULT_FRONT = {"y": "+z", "z": "-y"}


@dataclass
class LoadedShape:
    """One shape in the canonical frame, with its parts and optional keypoints.

    name: stable id (ShapeNet model id, PartNet annotation id, file path stem).
    category: category name (e.g. "chair") or None when unknown.
    vertices: (V, 3) float32, canonical frame (Y-up, front +Z, unit cube).
    faces: (F, 3) int32 triangle indices into vertices; (0, 3) for point clouds.
    face_parts: (F,) int32 part index of each face, into part_labels.
    part_labels: one label per part (group/node name, hierarchy text, or
        "component_<i>" for connected components).
    keypoints: (K, 3) float32 canonical frame, or None.
    keypoint_names: K names (KeypointNet: the semantic id as a string), or None.
    keypoint_ids: (K,) int32 semantic ids (consistent within a category), or None.
    keypoint_point_index: (K,) int32 index of each keypoint into vertices when the
        vertices are the annotated point cloud (KeypointNet ``pcd_info``), or None.
    source_path: the file (or annotation folder) the shape was read from.
    normalization: {"center": [3] bbox centre after rotation to canonical axes,
        "scale": float, "up": "y" | "z", "front": "+x" | ... | "-z"}; see
        `to_source_frame`.
    """

    name: str
    category: str | None
    vertices: np.ndarray
    faces: np.ndarray
    face_parts: np.ndarray
    part_labels: list[str]
    keypoints: np.ndarray | None
    keypoint_names: list[str] | None
    source_path: str
    normalization: dict
    keypoint_ids: np.ndarray | None = None
    keypoint_point_index: np.ndarray | None = None

    def __post_init__(self) -> None:
        v, f = self.vertices, self.faces
        if v.dtype != np.float32 or v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(
                f"{self.name}: vertices must be (V, 3) float32, got {v.dtype} {v.shape}"
            )
        if f.dtype != np.int32 or f.ndim != 2 or f.shape[1] != 3:
            raise ValueError(f"{self.name}: faces must be (F, 3) int32, got {f.dtype} {f.shape}")
        if self.face_parts.shape != (len(f),):
            raise ValueError(f"{self.name}: face_parts must have shape ({len(f)},)")
        if len(f) and (f.min() < 0 or f.max() >= len(v)):
            raise ValueError(f"{self.name}: face indices must lie in [0, {len(v) - 1}]")
        if len(f) and self.face_parts.max() >= len(self.part_labels):
            raise ValueError(
                f"{self.name}: face_parts index past the {len(self.part_labels)} labels"
            )
        kp = self.keypoints
        if kp is None:
            return
        if kp.dtype != np.float32 or kp.ndim != 2 or kp.shape[1] != 3:
            raise ValueError(
                f"{self.name}: keypoints must be (K, 3) float32, got {kp.dtype} {kp.shape}"
            )
        k = len(kp)
        if self.keypoint_names is not None and len(self.keypoint_names) != k:
            raise ValueError(
                f"{self.name}: {len(self.keypoint_names)} keypoint names for {k} keypoints"
            )
        for field in ("keypoint_ids", "keypoint_point_index"):
            value = getattr(self, field)
            if value is not None and value.shape != (k,):
                raise ValueError(f"{self.name}: {field} must have shape ({k},), got {value.shape}")
        index = self.keypoint_point_index
        if index is not None and k and (index.min() < 0 or index.max() >= len(v)):
            raise ValueError(f"{self.name}: keypoint_point_index past the {len(v)} points")


def to_source_frame(points: np.ndarray, normalization: dict) -> np.ndarray:
    """Undo the canonical normalisation.

    points: (N, 3) float, canonical frame. normalization: a `LoadedShape.normalization`.
    Returns (N, 3) float64 in the frame and units of the source file.
    """
    rot = _rotation(normalization["up"], normalization["front"])
    norm = Normalization(np.asarray(normalization["center"]), normalization["scale"])
    return norm.invert(points) @ rot


def to_canonical_frame(points: np.ndarray, normalization: dict) -> np.ndarray:
    """Apply a shape's normalisation to more points of the same source file.

    points: (N, 3) float, source frame. Returns (N, 3) float64 canonical frame.
    """
    rot = _rotation(normalization["up"], normalization["front"])
    norm = Normalization(np.asarray(normalization["center"]), normalization["scale"])
    return norm.apply(np.asarray(points, dtype=np.float64) @ rot.T)


def _rotation(up: str, front: str) -> np.ndarray:
    """(3, 3) rotation taking the source up axis to +Y and the front axis to +Z."""
    if up not in _DEFAULT_FRONT:
        raise ValueError(f"up must be 'y' or 'z' (the file's up axis), got {up!r}")
    if front not in _AXES:
        raise ValueError(f"front must be one of {sorted(_AXES)}, got {front!r}")
    u = np.array(_AXES["+" + up])
    f = np.array(_AXES[front])
    if abs(u @ f) > 0:
        raise ValueError(f"front {front!r} must be perpendicular to up {up!r}")
    return np.stack([np.cross(u, f), u, f])  # rows: images of +X, +Y, +Z


def _normalization(vertices: np.ndarray, up: str, front: str | None) -> dict:
    front = _DEFAULT_FRONT.get(up, "+z") if front is None else front
    if not np.isfinite(vertices).all():
        raise ValueError("the shape has non-finite (NaN or inf) coordinates")
    _, norm = normalize_to_unit_cube(vertices @ _rotation(up, front).T)
    return {"center": norm.center.tolist(), "scale": norm.scale, "up": up, "front": front}


def connected_component_parts(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Part index of each face from the mesh's connected components.

    vertices: (V, 3) float, any frame; faces: (F, 3) int. Vertices at identical
    positions are treated as one (STL soups, UV seams), so only geometrically
    disconnected pieces become separate parts. Returns (F,) int32 component
    index, numbered in order of each component's first face.
    """
    if len(faces) == 0:
        return np.zeros(0, dtype=np.int32)
    _, merged = np.unique(np.asarray(vertices), axis=0, return_inverse=True)
    f = merged.reshape(-1)[faces]
    n = int(merged.max()) + 1
    rows = f.reshape(-1)
    cols = f[:, [1, 2, 0]].reshape(-1)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[f[:, 0]]
    _, first = np.unique(face_label, return_index=True)
    rank = np.empty(len(first), dtype=np.int32)
    rank[np.argsort(first)] = np.arange(len(first), dtype=np.int32)
    return rank[face_label]


def _build_shape(
    parts: list[tuple[str, np.ndarray, np.ndarray]],
    *,
    name: str,
    category: str | None,
    source_path: str,
    up: str,
    front: str | None,
    split_components: bool,
    keypoints: np.ndarray | None = None,
) -> LoadedShape:
    """Concatenate (label, (n, 3) source-frame vertices, (m, 3) faces) parts and normalise.

    keypoints: (K, 3) float source frame, normalised with the shape, or None.
    """
    verts, faces, face_parts = [], [], []
    offset = 0
    for i, (_, v, f) in enumerate(parts):
        verts.append(np.asarray(v, dtype=np.float64))
        faces.append(np.asarray(f, dtype=np.int64) + offset)
        face_parts.append(np.full(len(f), i, dtype=np.int32))
        offset += len(v)
    vertices = np.concatenate(verts)
    all_faces = np.concatenate(faces)
    labels = [label for label, _, _ in parts]
    part_index = np.concatenate(face_parts)
    if split_components and len(parts) == 1:
        part_index = connected_component_parts(vertices, all_faces)
        labels = [f"component_{i}" for i in range(int(part_index.max(initial=-1)) + 1)]
    norm = _normalization(vertices, up, front)
    kp = None if keypoints is None else to_canonical_frame(keypoints, norm).astype(np.float32)
    return LoadedShape(
        name=name,
        category=category,
        vertices=to_canonical_frame(vertices, norm).astype(np.float32),
        faces=all_faces.astype(np.int32).reshape(-1, 3),
        face_parts=part_index.astype(np.int32),
        part_labels=labels,
        keypoints=kp,
        keypoint_names=None,
        source_path=source_path,
        normalization=norm,
    )


def _scene_parts(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Triangle-mesh parts (node name, (n, 3) float64 vertices in the file frame, faces)."""
    # OBJ: one piece per `o`/`g` group; materials are not needed (and may be missing).
    obj = path.suffix.lower() == ".obj"
    kwargs = {"split_object": True, "split_groups": True, "skip_materials": True} if obj else {}
    try:
        scene = trimesh.load_scene(str(path), **kwargs)
    except Exception as exc:  # trimesh raises many types for malformed files
        raise ValueError(f"could not read mesh file {path}: {exc}") from exc
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, geom_name = scene.graph[node]
        geom = scene.geometry[geom_name]
        if not isinstance(geom, trimesh.Trimesh) or len(geom.faces) == 0:
            continue  # point clouds, curves
        verts = trimesh.transform_points(np.asarray(geom.vertices, dtype=np.float64), transform)
        parts.append((str(node), verts, np.asarray(geom.faces)))
    if not parts:
        raise ValueError(f"mesh file {path} has no triangle faces; give a mesh, not a point cloud")
    return parts


def load_mesh_file(
    path: str | Path,
    up: str = "y",
    front: str | None = None,
    *,
    name: str | None = None,
    category: str | None = None,
) -> LoadedShape:
    """Load one mesh file (OBJ, GLB/GLTF, PLY, STL, OFF) in the canonical frame.

    up: the file's up axis, "y" (default, glTF/ShapeNet) or "z" (Blender, CAD).
    front: the file's front axis ("+z" default for Y-up, "-y" for Z-up).
    name: shape id (default: the file stem); category: stored as given.

    Parts are the file's named pieces when it has several (OBJ ``o``/``g`` groups,
    glTF nodes, with node transforms applied), labelled by those names; a file with
    a single piece is split into connected components ("component_<i>"), as the
    ComplementMe preprocessing of paper 000 does. Polygons are triangulated.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"mesh file {path} does not exist")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported format {path.suffix!r}; use one of {MESH_SUFFIXES}")
    return _build_shape(
        _scene_parts(path),
        name=path.stem if name is None else name,
        category=category,
        source_path=str(path),
        up=up,
        front=front,
        split_components=True,
    )


def load_user_folder(
    directory: str | Path, up: str = "y", front: str | None = None
) -> list[LoadedShape]:
    """Load every supported mesh under a folder, recursively, sorted by path.

    Shape names are the paths relative to the folder without suffix
    ("chairs/armchair"); the category is the first sub-folder's name (None for
    files directly in the folder). Unsupported files and files that fail to load
    are skipped with a warning (material, buffer and texture files silently).
    Raises ValueError when the folder is missing or yields no shape.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    shapes = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        suffix = path.suffix.lower()
        if any(part.startswith(".") for part in rel.parts) or suffix in _COMPANION_SUFFIXES:
            continue
        if suffix not in MESH_SUFFIXES:
            warnings.warn(
                f"skipping {path}: unsupported format (supported: {', '.join(MESH_SUFFIXES)})",
                stacklevel=2,
            )
            continue
        try:
            shape = load_mesh_file(
                path,
                up,
                front,
                name=rel.with_suffix("").as_posix(),
                category=rel.parts[0] if len(rel.parts) > 1 else None,
            )
        except ValueError as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        shapes.append(shape)
    if not shapes:
        raise ValueError(f"no loadable mesh in {root}; put {', '.join(MESH_SUFFIXES)} files in it")
    return shapes


def _synset_names(root: Path) -> dict[str, str]:
    """Synset id -> name: the built-in table, then taxonomy.json (first lemma) if present."""
    names = {}
    taxonomy = root / "taxonomy.json"
    if taxonomy.is_file():
        for entry in json.loads(taxonomy.read_text()):
            names[entry["synsetId"]] = entry["name"].split(",")[0].strip()
    names.update(SHAPENET_SYNSETS)
    return names


def load_shapenet_v2(
    root: str | Path, synset: str | None = None, limit: int | None = None
) -> list[LoadedShape]:
    """Load ShapeNetCore v2 models, ``root/<synset>/<model_id>/models/model_normalized.obj``.

    synset: a synset id ("03001627") or a category name ("chair"); None loads all.
    limit: at most this many models (in sorted synset, model id order).
    Models are Y-up, front -Z (ShapeNetCore v2 alignment) and are rotated to the
    canonical front +Z. Parts are the OBJ's groups. Models whose OBJ fails to load
    are skipped with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"ShapeNet root {root} is not a folder")
    names = _synset_names(root)
    synsets = sorted(p.name for p in root.iterdir() if p.is_dir())
    if synset is not None:
        wanted = {sid for sid, n in names.items() if n == synset} | {synset}
        synsets = [s for s in synsets if s in wanted]
        if not synsets:
            raise ValueError(f"no synset folder for {synset!r} under {root}")
    shapes = []
    for sid in synsets:
        for model_dir in sorted(p for p in (root / sid).iterdir() if p.is_dir()):
            if limit is not None and len(shapes) >= limit:
                return shapes
            obj = model_dir / "models" / "model_normalized.obj"
            if not obj.is_file():
                continue
            try:
                shape = load_mesh_file(
                    obj, "y", "-z", name=model_dir.name, category=names.get(sid, sid)
                )
            except ValueError as exc:
                warnings.warn(f"skipping ShapeNet model {model_dir.name}: {exc}", stacklevel=2)
                continue
            shapes.append(shape)
    if not shapes:
        raise ValueError(f"no <synset>/<model_id>/models/model_normalized.obj found under {root}")
    return shapes


def load_partnet(
    root: str | Path,
    anno_ids: list[str] | None = None,
    *,
    depth: int | None = None,
    label_key: str = "text",
    result_file: str = "result.json",
    limit: int | None = None,
    front: str = "-z",
) -> list[LoadedShape]:
    """Load PartNet shapes, ``root/<anno_id>/result.json`` + ``root/<anno_id>/objs/<name>.obj``.

    result.json is a one-element list holding the root node; each node has "id",
    "text" (e.g. "Chair Back"), "name" (e.g. "chair_back"), optional "children" and
    "objs" (names of the obj files below it). The root's "name" is the category.
    anno_ids: annotation folders to load (default: all, sorted).
    depth: hierarchy level whose nodes become parts (1 = the root's children);
        branches that end above it contribute their leaf. None: the leaves.
    label_key: node field used as part label ("text" or "name"; falls back to
        the other when missing).
    result_file: "result.json" or "result_after_merging.json".
    front: the meshes' front axis (assumed ShapeNet-aligned: Y-up, front -Z).
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"PartNet root {root} is not a folder")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 (1 = the root's children) or None, got {depth}")
    if anno_ids is None:
        anno_ids = sorted(p.name for p in root.iterdir() if (p / result_file).is_file())
    anno_ids = anno_ids[:limit] if limit is not None else anno_ids
    if not anno_ids:
        raise ValueError(f"no <anno_id>/{result_file} found under {root}")
    return [
        _load_partnet_one(root / str(a), depth, label_key, result_file, front) for a in anno_ids
    ]


def _load_partnet_one(
    folder: Path, depth: int | None, label_key: str, result_file: str, front: str
) -> LoadedShape:
    result = folder / result_file
    if not result.is_file():
        raise ValueError(f"PartNet annotation {folder.name} has no {result_file}")
    tree = json.loads(result.read_text())
    node = tree[0] if isinstance(tree, list) else tree
    parts = []
    for part in _partnet_nodes(node, 0, depth):
        label = part.get(label_key, part.get("name" if label_key == "text" else "text"))
        verts, faces, offset = [], [], 0
        for obj_name in _partnet_objs(part):
            obj = folder / "objs" / f"{obj_name}.obj"
            if not obj.is_file():
                raise ValueError(f"PartNet annotation {folder.name}: missing mesh {obj}")
            mesh = trimesh.load_mesh(str(obj), process=False)
            verts.append(np.asarray(mesh.vertices, dtype=np.float64))
            faces.append(np.asarray(mesh.faces) + offset)
            offset += len(mesh.vertices)
        if verts:
            parts.append((str(label), np.concatenate(verts), np.concatenate(faces)))
    if not parts:
        raise ValueError(f"PartNet annotation {folder.name} lists no part meshes")
    return _build_shape(
        parts,
        name=folder.name,
        category=node.get("name"),
        source_path=str(folder),
        up="y",
        front=front,
        split_components=False,
    )


def _partnet_nodes(node: dict, level: int, depth: int | None) -> list[dict]:
    """Nodes at the requested depth (or leaves above it) under node, in file order."""
    children = node.get("children") or []
    if not children or (depth is not None and level == depth):
        return [node]
    return [n for child in children for n in _partnet_nodes(child, level + 1, depth)]


def _partnet_objs(node: dict) -> list[str]:
    """The node's obj names: its own "objs" list, else the union of its children's."""
    if node.get("objs"):
        return list(node["objs"])
    return [o for child in node.get("children") or [] for o in _partnet_objs(child)]


def read_pcd_ascii(path: str | Path) -> np.ndarray:
    """Read the x, y, z fields of an ASCII PCD file (KeypointNet's ``pcds/``).

    Returns (P, 3) float32 points in the file's frame. Binary PCD is refused.
    """
    path = Path(path)
    lines = path.read_text().splitlines()
    fields: list[str] = []
    counts: list[int] = []
    for i, line in enumerate(lines):
        key, *rest = line.split() or [""]
        if key == "FIELDS":
            fields = rest
        elif key == "COUNT":
            counts = [int(c) for c in rest]
        elif key == "DATA":
            if rest != ["ascii"]:
                raise ValueError(f"{path}: only ASCII PCD is supported, got DATA {' '.join(rest)}")
            body = [row for row in lines[i + 1 :] if row.strip()]
            break
    else:
        raise ValueError(f"{path}: not a PCD file (no DATA line)")
    if not {"x", "y", "z"} <= set(fields):
        raise ValueError(f"{path}: PCD has no x y z fields (FIELDS {' '.join(fields)})")
    counts = counts or [1] * len(fields)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cols = [int(starts[fields.index(c)]) for c in "xyz"]
    data = np.loadtxt(body, dtype=np.float64, ndmin=2)
    return data[:, cols].astype(np.float32)


def load_keypointnet(
    annotation_json: str | Path,
    pcd_root: str | Path | None = None,
    mesh_root: str | Path | None = None,
    *,
    class_id: str | None = None,
    limit: int | None = None,
) -> list[LoadedShape]:
    """Load KeypointNet annotations with their point clouds or meshes.

    annotation_json: a KeypointNet annotation file, a list of {"class_id",
        "model_id", "keypoints": [{"xyz": [3], "rgb": [3], "semantic_id": int,
        "pcd_info": {"point_index": int}, "mesh_info": {"face_index": int,
        "face_uv": [3]}}], "symmetries": ...}.
    pcd_root: folder with ``<class_id>/<model_id>.pcd`` (ASCII); the shape's
        vertices are then the cloud's points (no faces) and
        ``keypoint_point_index`` holds ``pcd_info.point_index``.
    mesh_root: instead, folder with ``<class_id>/<model_id>.ply`` (KeypointNet's
        ShapeNetCore.v2.ply); parts are connected components.
    class_id: keep only this synset id. limit: at most this many models.

    Keypoints are the annotated "xyz" (same frame as the cloud and mesh,
    ShapeNetCore v2: Y-up, front -Z), normalised together with the shape into the
    canonical frame; ``keypoint_ids`` holds the semantic ids and ``keypoint_names``
    the same ids as strings. Models whose cloud or mesh file is missing are
    skipped with a warning.
    """
    if (pcd_root is None) == (mesh_root is None):
        raise ValueError(
            "give exactly one of pcd_root (ASCII .pcd clouds) or mesh_root (.ply meshes)"
        )
    entries = json.loads(Path(annotation_json).read_text())
    if not isinstance(entries, list):
        raise ValueError(f"{annotation_json}: expected a list of annotated models")
    if class_id is not None:
        entries = [e for e in entries if e["class_id"] == class_id]
    shapes = []
    for entry in entries:
        if limit is not None and len(shapes) >= limit:
            break
        cid, mid = entry["class_id"], entry["model_id"]
        kps = entry["keypoints"]
        xyz = np.array([k["xyz"] for k in kps], dtype=np.float64).reshape(-1, 3)
        ids = np.array([k["semantic_id"] for k in kps], dtype=np.int32)
        category = SHAPENET_SYNSETS.get(cid, cid)
        if pcd_root is not None:
            path = Path(pcd_root) / cid / f"{mid}.pcd"
            if not path.is_file():
                warnings.warn(
                    f"skipping KeypointNet model {mid}: no point cloud {path}", stacklevel=2
                )
                continue
            points = read_pcd_ascii(path).astype(np.float64)
            norm = _normalization(points, "y", "-z")
            shape = LoadedShape(
                name=mid,
                category=category,
                vertices=to_canonical_frame(points, norm).astype(np.float32),
                faces=np.zeros((0, 3), dtype=np.int32),
                face_parts=np.zeros(0, dtype=np.int32),
                part_labels=[],
                keypoints=to_canonical_frame(xyz, norm).astype(np.float32),
                keypoint_names=[str(i) for i in ids],
                source_path=str(path),
                normalization=norm,
                keypoint_ids=ids,
                keypoint_point_index=np.array(
                    [k["pcd_info"]["point_index"] for k in kps], dtype=np.int32
                ),
            )
        else:
            path = Path(mesh_root) / cid / f"{mid}.ply"
            if not path.is_file():
                warnings.warn(f"skipping KeypointNet model {mid}: no mesh {path}", stacklevel=2)
                continue
            shape = _build_shape(
                _scene_parts(path),
                name=mid,
                category=category,
                source_path=str(path),
                up="y",
                front="-z",
                split_components=True,
                keypoints=xyz,
            )
            shape = replace(shape, keypoint_names=[str(i) for i in ids], keypoint_ids=ids)
        shapes.append(shape)
    if not shapes:
        raise ValueError(f"no KeypointNet model of {annotation_json} could be loaded")
    return shapes
