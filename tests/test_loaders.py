"""backend.data.loaders on small fixtures written in each real format under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.data import loaders as L
from blender_addon.conventions import blender_to_canonical_points


def assert_close(actual, expected, *, atol: float = 1e-5, name: str = "") -> None:
    """allclose that says where the largest difference is."""
    a, e = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name}: shape {a.shape} != expected {e.shape}"
    diff = np.abs(a - e)
    if diff.size and diff.max() > atol:
        idx = np.unravel_index(np.argmax(diff), diff.shape)
        raise AssertionError(f"{name}: largest difference at {idx}: {a[idx]} vs {e[idx]}")


def sorted_rows(points: np.ndarray) -> np.ndarray:
    pts = np.round(np.asarray(points, dtype=np.float64), 5)
    return pts[np.lexsort(pts.T[::-1])]


def check_canonical(shape: L.LoadedShape) -> None:
    """Unit cube, centred, longest side 1, valid faces."""
    lo, hi = shape.vertices.min(0), shape.vertices.max(0)
    assert_close((lo + hi) / 2, np.zeros(3), atol=1e-6, name="bbox centre")
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    assert shape.vertices.dtype == np.float32 and shape.faces.dtype == np.int32


def part_faces(shape: L.LoadedShape) -> dict[str, int]:
    counts = np.bincount(shape.face_parts, minlength=len(shape.part_labels))
    return dict(zip(shape.part_labels, counts.tolist()))


def two_boxes() -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    a = trimesh.creation.box((1.0, 0.2, 1.0))
    b = trimesh.creation.box((0.2, 2.0, 0.2))
    b.apply_translation((2.0, 0.5, -1.0))
    return a, b


OBJ_TWO_GROUPS = """# two named groups, one quad and one triangle
v 0 0 0
v 2 0 0
v 2 0 1
v 0 0 1
v 0 1 0
v 2 1 0
v 2 3 0
g seat
f 1 2 3 4
g back
f 5 6 7
"""


# ---------------------------------------------------------------------------
# single files


def test_obj_named_groups_become_parts_and_normalisation_inverts(tmp_path):
    path = tmp_path / "chair.obj"
    path.write_text(OBJ_TWO_GROUPS)
    shape = L.load_mesh_file(path)
    check_canonical(shape)
    assert shape.name == "chair" and shape.source_path == str(path)
    assert part_faces(shape) == {"back": 1, "seat": 2}  # the quad is triangulated
    original = np.array(
        [ln.split()[1:] for ln in OBJ_TWO_GROUPS.splitlines() if ln.startswith("v ")], float
    )
    assert_close(
        sorted_rows(L.to_source_frame(shape.vertices, shape.normalization)), sorted_rows(original)
    )
    # each face's part: the seat lies in the y = 0 plane of the file
    seat = L.to_source_frame(
        shape.vertices[shape.faces[shape.face_parts == shape.part_labels.index("seat")]].reshape(
            -1, 3
        ),
        shape.normalization,
    )
    assert_close(seat[:, 1], np.zeros(len(seat)), name="seat y")


def test_z_up_file_matches_blender_to_canonical_rotation(tmp_path):
    path = tmp_path / "chair.obj"
    path.write_text(OBJ_TWO_GROUPS)
    shape = L.load_mesh_file(path, up="z")
    assert shape.normalization["front"] == "-y"
    original = np.array(
        [ln.split()[1:] for ln in OBJ_TWO_GROUPS.splitlines() if ln.startswith("v ")], float
    )
    rotated = blender_to_canonical_points(original)
    lo, hi = rotated.min(0), rotated.max(0)
    expected = (rotated - (lo + hi) / 2) / (hi - lo).max()
    assert_close(sorted_rows(shape.vertices), sorted_rows(expected))


@pytest.mark.parametrize("suffix", ["ply", "stl", "off"])
def test_single_piece_files_split_into_connected_components(tmp_path, suffix):
    a, b = two_boxes()
    path = tmp_path / f"two.{suffix}"
    trimesh.util.concatenate([a, b]).export(path)
    shape = L.load_mesh_file(path)
    check_canonical(shape)
    assert part_faces(shape) == {"component_0": 12, "component_1": 12}
    assert len(shape.vertices) == 16  # STL's triangle soup is merged
    back = L.to_source_frame(shape.vertices, shape.normalization)
    assert_close(sorted_rows(back), sorted_rows(np.concatenate([a.vertices, b.vertices])))
    # faces of one component stay within one box
    for part in range(2):
        pts = back[shape.faces[shape.face_parts == part].reshape(-1)]
        assert (pts[:, 0] > 1.0).all() or (pts[:, 0] < 1.0).all()


def test_glb_named_meshes_with_node_transform(tmp_path):
    a, b = two_boxes()
    scene = trimesh.Scene()
    scene.add_geometry(a, node_name="seat", geom_name="seat_mesh")
    lift = trimesh.transformations.translation_matrix((0.0, 3.0, 0.0))
    scene.add_geometry(b, node_name="leg", geom_name="leg_mesh", transform=lift)
    path = tmp_path / "chair.glb"
    scene.export(path)
    shape = L.load_mesh_file(path, category="chair")
    check_canonical(shape)
    assert part_faces(shape) == {"leg": 12, "seat": 12} and shape.category == "chair"
    back = L.to_source_frame(shape.vertices, shape.normalization)
    leg = back[shape.faces[shape.face_parts == shape.part_labels.index("leg")].reshape(-1)]
    assert_close(
        sorted_rows(np.unique(leg, axis=0)), sorted_rows(b.vertices + [0, 3, 0]), name="leg"
    )


def test_obj_single_box_is_one_component(tmp_path):
    path = tmp_path / "box.obj"
    trimesh.creation.box((1, 2, 3)).export(path)
    shape = L.load_mesh_file(path)
    assert shape.part_labels == ["component_0"]
    assert_close(shape.vertices.max(0), [1 / 6, 1 / 3, 0.5])


def test_normalisation_round_trip_for_every_orientation():
    pts = np.random.default_rng(0).normal(size=(50, 3)) * [1, 2, 3] + [4, -1, 2]
    for up in ("y", "z"):
        for front in ("+x", "-x", "+y", "-y", "+z", "-z"):
            if front[1] == up:
                with pytest.raises(ValueError, match="perpendicular"):
                    L._normalization(pts, up, front)
                continue
            norm = L._normalization(pts, up, front)
            canon = L.to_canonical_frame(pts, norm)
            assert (canon.max(0) - canon.min(0)).max() == pytest.approx(1.0)
            assert_close(L.to_source_frame(canon, norm), pts, atol=1e-9, name=f"{up}{front}")
            rot = L._rotation(up, front)
            assert np.linalg.det(rot) == pytest.approx(1.0)


def test_connected_components_naive_cross_check():
    rng = np.random.default_rng(1)
    meshes = [
        trimesh.creation.icosphere(1).apply_translation(rng.normal(size=3) * 10) for _ in range(4)
    ]
    mesh = trimesh.util.concatenate(meshes)
    faces = mesh.faces[rng.permutation(len(mesh.faces))]
    labels = L.connected_component_parts(mesh.vertices, faces)
    # naive: flood fill over faces sharing a vertex
    unvisited, naive = set(range(len(faces))), np.full(len(faces), -1)
    comp = 0
    while unvisited:
        stack = [min(unvisited)]
        while stack:
            f = stack.pop()
            if f not in unvisited:
                continue
            unvisited.discard(f)
            naive[f] = comp
            stack += [g for g in unvisited if set(faces[g]) & set(faces[f])]
        comp += 1
    assert labels.max() == 3 and np.array_equal(labels, naive)


def test_mesh_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        L.load_mesh_file(tmp_path / "missing.obj")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported format"):
        L.load_mesh_file(tmp_path / "notes.txt")
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(cloud)
    with pytest.raises(ValueError, match="no triangle faces"):
        L.load_mesh_file(cloud)
    good = tmp_path / "ok.obj"
    good.write_text(OBJ_TWO_GROUPS)
    with pytest.raises(ValueError, match="up must be"):
        L.load_mesh_file(good, up="x")


# ---------------------------------------------------------------------------
# folders and datasets


def test_user_folder_recursive_with_warnings(tmp_path):
    (tmp_path / "chairs").mkdir()
    (tmp_path / "chairs" / "a.obj").write_text(OBJ_TWO_GROUPS)
    (tmp_path / "chairs" / "a.mtl").write_text("newmtl x\n")
    a, b = two_boxes()
    trimesh.util.concatenate([a, b]).export(tmp_path / "loose.stl")
    (tmp_path / "readme.txt").write_text("not a mesh")
    (tmp_path / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n")
    with pytest.warns(UserWarning) as record:
        shapes = L.load_user_folder(tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "readme.txt" in messages and "broken.off" in messages and "a.mtl" not in messages
    assert [(s.name, s.category) for s in shapes] == [("chairs/a", "chairs"), ("loose", None)]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no loadable mesh"):
        L.load_user_folder(empty)
    with pytest.raises(ValueError, match="not a folder"):
        L.load_user_folder(tmp_path / "nope")


def make_shapenet(root: Path) -> None:
    for synset, model in [("03001627", "chair1"), ("03001627", "chair2"), ("99999999", "thing")]:
        folder = root / synset / model / "models"
        folder.mkdir(parents=True)
        (folder / "model_normalized.obj").write_text(OBJ_TWO_GROUPS)
    (root / "taxonomy.json").write_text(
        json.dumps([{"synsetId": "99999999", "name": "gizmo,widget", "children": []}])
    )


def test_shapenet_folder(tmp_path):
    make_shapenet(tmp_path)
    shapes = L.load_shapenet_v2(tmp_path)
    assert [(s.name, s.category) for s in shapes] == [
        ("chair1", "chair"),
        ("chair2", "chair"),
        ("thing", "gizmo"),
    ]
    assert [s.name for s in L.load_shapenet_v2(tmp_path, synset="chair")] == ["chair1", "chair2"]
    assert len(L.load_shapenet_v2(tmp_path, synset="03001627", limit=1)) == 1
    shape = shapes[0]
    assert shape.normalization["front"] == "-z" and set(shape.part_labels) == {"seat", "back"}
    # front -Z in ShapeNet becomes +Z: the seat (z from 0 to 1 in the file) is mirrored
    original = np.array(
        [ln.split()[1:] for ln in OBJ_TWO_GROUPS.splitlines() if ln.startswith("v ")], float
    )
    flipped = original * [-1, 1, -1]
    lo, hi = flipped.min(0), flipped.max(0)
    assert_close(
        sorted_rows(shape.vertices), sorted_rows((flipped - (lo + hi) / 2) / (hi - lo).max())
    )
    with pytest.raises(ValueError, match="no synset folder"):
        L.load_shapenet_v2(tmp_path, synset="sofa")


def write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"v {x} {y} {z}" for x, y, z in vertices] + [
        f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces
    ]
    path.write_text("\n".join(lines) + "\n")


def make_partnet(root: Path) -> dict[str, trimesh.Trimesh]:
    folder = root / "1234"
    (folder / "objs").mkdir(parents=True)
    boxes = {
        "new-0": trimesh.creation.box((1, 1, 0.1)).apply_translation((0, 1, -0.5)),
        "new-1": trimesh.creation.box((0.8, 0.8, 0.05)).apply_translation((0, 1, -0.4)),
        "new-2": trimesh.creation.box((1, 0.1, 1)),
    }
    for name, mesh in boxes.items():
        write_obj(folder / "objs" / f"{name}.obj", mesh.vertices, mesh.faces)
    tree = [
        {
            "id": 0,
            "text": "Chair",
            "name": "chair",
            "objs": ["new-0", "new-1", "new-2"],
            "children": [
                {
                    "id": 1,
                    "text": "Chair Back",
                    "name": "chair_back",
                    "children": [
                        {"id": 3, "text": "Back Frame", "name": "back_frame", "objs": ["new-0"]},
                        {"id": 4, "text": "Back Pad", "name": "back_pad", "objs": ["new-1"]},
                    ],
                },
                {"id": 2, "text": "Chair Seat", "name": "chair_seat", "objs": ["new-2"]},
            ],
        }
    ]
    (folder / "result.json").write_text(json.dumps(tree))
    return boxes


def test_partnet_hierarchy_levels(tmp_path):
    boxes = make_partnet(tmp_path)
    (leaf,) = L.load_partnet(tmp_path)
    assert leaf.name == "1234" and leaf.category == "chair"
    assert part_faces(leaf) == {"Back Frame": 12, "Back Pad": 12, "Chair Seat": 12}
    back = L.to_source_frame(leaf.vertices, leaf.normalization)
    all_vertices = np.concatenate([m.vertices for m in boxes.values()])
    assert_close(sorted_rows(back), sorted_rows(all_vertices))
    pad = back[leaf.faces[leaf.face_parts == leaf.part_labels.index("Back Pad")].reshape(-1)]
    assert_close(sorted_rows(np.unique(pad, axis=0)), sorted_rows(boxes["new-1"].vertices))
    (top,) = L.load_partnet(tmp_path, depth=1, label_key="name")
    assert part_faces(top) == {"chair_back": 24, "chair_seat": 12}
    (tmp_path / "1234" / "objs" / "new-1.obj").unlink()
    with pytest.raises(ValueError, match="missing mesh"):
        L.load_partnet(tmp_path)
    with pytest.raises(ValueError, match="depth"):
        L.load_partnet(tmp_path, depth=0)


PCD_HEADER = """# .PCD v0.7 - Point Cloud Data file format
VERSION 0.7
FIELDS x y z rgb
SIZE 4 4 4 4
TYPE F F F F
COUNT 1 1 1 1
WIDTH {n}
HEIGHT 1
VIEWPOINT 0 0 0 1 0 0 0
POINTS {n}
DATA ascii
"""


def make_keypointnet(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    clouds, entries = {}, []
    for model, n in [("m1", 40), ("m2", 25)]:
        pts = rng.random((n, 3)) * [0.4, 0.8, 0.6] - 0.2
        clouds[model] = pts
        (root / "pcds" / "03001627").mkdir(parents=True, exist_ok=True)
        body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f} 4.2108e+06" for x, y, z in pts)
        (root / "pcds" / "03001627" / f"{model}.pcd").write_text(
            PCD_HEADER.format(n=n) + body + "\n"
        )
        idx = [0, 7, n - 1]
        entries.append(
            {
                "class_id": "03001627",
                "model_id": model,
                "keypoints": [
                    {
                        "xyz": np.round(pts[i], 6).tolist(),
                        "rgb": [255, 0, 0],
                        "semantic_id": s,
                        "pcd_info": {"point_index": i},
                        "mesh_info": {"face_index": 0, "face_uv": [0.2, 0.3, 0.5]},
                    }
                    for s, i in zip([2, 0, 5], idx)
                ],
                "symmetries": {"reflection": []},
            }
        )
    entries.append({"class_id": "03001627", "model_id": "absent", "keypoints": []})
    annotation = root / "annotations" / "chair.json"
    annotation.parent.mkdir()
    annotation.write_text(json.dumps(entries))
    return annotation, clouds


def test_keypointnet_pcd(tmp_path):
    annotation, clouds = make_keypointnet(tmp_path)
    with pytest.warns(UserWarning, match="absent"):
        shapes = L.load_keypointnet(annotation, pcd_root=tmp_path / "pcds")
    assert [s.name for s in shapes] == ["m1", "m2"]
    for shape in shapes:
        assert shape.category == "chair" and shape.faces.shape == (0, 3)
        check_canonical(shape)
        assert shape.keypoint_ids.tolist() == [2, 0, 5] and shape.keypoint_names == ["2", "0", "5"]
        # keypoints and their cloud points coincide after normalisation
        assert_close(shape.keypoints, shape.vertices[shape.keypoint_point_index], atol=1e-5)
        assert_close(
            L.to_source_frame(shape.vertices, shape.normalization), clouds[shape.name], atol=1e-5
        )
    assert len(L.load_keypointnet(annotation, pcd_root=tmp_path / "pcds", limit=1)) == 1
    with pytest.raises(ValueError, match="exactly one"):
        L.load_keypointnet(annotation)


def test_keypointnet_mesh_root(tmp_path):
    mesh = trimesh.creation.box((0.4, 0.8, 0.6))
    (tmp_path / "ply" / "02691156").mkdir(parents=True)
    mesh.export(tmp_path / "ply" / "02691156" / "p1.ply")
    corner = mesh.vertices[0].tolist()
    entry = {
        "class_id": "02691156",
        "model_id": "p1",
        "keypoints": [
            {
                "xyz": corner,
                "rgb": [0, 0, 0],
                "semantic_id": 1,
                "pcd_info": {"point_index": 0},
                "mesh_info": {"face_index": 0, "face_uv": [1, 0, 0]},
            }
        ],
    }
    annotation = tmp_path / "airplane.json"
    annotation.write_text(json.dumps([entry]))
    (shape,) = L.load_keypointnet(annotation, mesh_root=tmp_path / "ply")
    assert shape.category == "airplane" and shape.part_labels == ["component_0"]
    assert_close(L.to_source_frame(shape.keypoints, shape.normalization), [corner])
    # front -Z -> +Z mirrors x and z
    assert_close(shape.keypoints, [np.array(corner) * [-1, 1, -1] / 0.8])


def test_read_pcd_rejects_binary(tmp_path):
    path = tmp_path / "b.pcd"
    path.write_text(PCD_HEADER.replace("ascii", "binary").format(n=1))
    with pytest.raises(ValueError, match="only ASCII"):
        L.read_pcd_ascii(path)


def test_loaded_shape_and_pcd_guards(tmp_path):
    good = dict(
        name="s",
        category=None,
        vertices=np.zeros((3, 3), np.float32),
        faces=np.array([[0, 1, 2]], np.int32),
        face_parts=np.zeros(1, np.int32),
        part_labels=["p"],
        keypoints=None,
        keypoint_names=None,
        source_path="",
        normalization={},
    )
    L.LoadedShape(**good)
    with pytest.raises(ValueError, match="float32"):
        L.LoadedShape(**{**good, "vertices": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="face indices"):
        L.LoadedShape(**{**good, "faces": np.array([[0, 1, 3]], np.int32)})
    with pytest.raises(ValueError, match="keypoint_point_index"):
        L.LoadedShape(
            **{**good, "keypoints": np.zeros((1, 3), np.float32)},
            keypoint_point_index=np.array([5], np.int32),
        )
    path = tmp_path / "n.pcd"
    path.write_text("FIELDS a b c\nDATA ascii\n1 2 3\n")
    with pytest.raises(ValueError, match="no x y z"):
        L.read_pcd_ascii(path)
    with pytest.raises(ValueError, match="no <anno_id>/result.json"):
        L.load_partnet(tmp_path)
