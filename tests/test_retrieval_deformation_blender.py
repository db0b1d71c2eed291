"""Retrieve & Deform from the add-on (bpy 5.0.1) through a real backend process, with a
user library indexed from OBJ files whose groups name their parts; and the part-children
result builder on its own (all or nothing)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

from blender_addon import bridge, protocol  # noqa: E402
from blender_addon.bridge.results import split_parts  # noqa: E402
from blender_addon.ui.state import SESSION  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

LABELS = ("seat", "back", "legs")


def box(lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """An axis-aligned box: 8 vertices (float64), 12 outward triangles (int, 0-based)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v, f


def chair_parts(seat_h: float, back_h: float, width: float) -> dict[str, list]:
    """Y-up chair boxes per part label: a seat, a back and four legs."""
    w, d = width / 2, 0.25
    legs = [box((sx * w - (0.06 if sx > 0 else 0), 0, sz * d - (0.06 if sz > 0 else 0)),
                (sx * w + (0 if sx > 0 else 0.06), seat_h, sz * d + (0 if sz > 0 else 0.06)))
            for sx in (-1, 1) for sz in (-1, 1)]
    return {"seat": [box((-w, seat_h, -d), (w, seat_h + 0.06, d))],
            "back": [box((-w, seat_h + 0.06, -d), (w, seat_h + 0.06 + back_h, -d + 0.06))],
            "legs": legs}


def write_obj(path, parts: dict[str, list]) -> None:
    """An OBJ with one ``g`` group per part (1-based indices)."""
    lines, offset = [], 0
    for label, boxes in parts.items():
        lines.append(f"g {label}")
        for v, f in boxes:
            lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
            lines += [f"f {a + offset + 1} {b + offset + 1} {c + offset + 1}" for a, b, c in f]
            offset += len(v)
    path.write_text("\n".join(lines) + "\n")


def merged(parts: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    vs, fs, offset = [], [], 0
    for boxes in parts.values():
        for v, f in boxes:
            vs.append(v)
            fs.append(f + offset)
            offset += len(v)
    return np.concatenate(vs), np.concatenate(fs)


@pytest.fixture
def user_library(tmp_path):
    """Three grouped OBJ chairs indexed with `shapebridge library index`."""
    from backend.methods.retrieval_deformation import library_cli

    folder = tmp_path / "meshes"
    folder.mkdir()
    for i, (seat, back, width) in enumerate([(0.45, 0.5, 0.5), (0.4, 0.7, 0.45), (0.5, 0.35, 0.6)]):
        write_obj(folder / f"chair_{i}.obj", chair_parts(seat, back, width))
    parser = argparse.ArgumentParser()
    library_cli.add_arguments(parser)
    out = tmp_path / "library"
    assert library_cli.run(parser.parse_args([str(folder), "--out", str(out),
                                              "--n-points", "512"])) == 0
    return out


def result_roots() -> list:
    coll = bpy.data.collections.get(bridge.COLLECTION_NAME)
    objs = list(coll.objects) if coll is not None else []
    return sorted((o for o in objs if o.parent is None), key=lambda o: o["shapebridge_rank"])


def make_target():
    """A chair target mesh (Blender Z-up: the Y-up boxes rotated), posed in the world."""
    v, f = merged(chair_parts(0.42, 0.55, 0.52))
    v = v[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0])  # Y-up -> Z-up, front +Z -> -Y
    mesh = bridge.new_mesh("TargetChair", v.astype(np.float32), f.astype(np.int32))
    obj = bpy.data.objects.new("TargetChair", mesh)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = (1.0, -2.0, 0.5)
    obj.rotation_euler = (0.0, 0.0, 0.6)
    obj.scale = (2.0, 2.0, 2.0)
    bpy.context.view_layer.update()
    for o in bpy.context.view_layer.objects:
        o.select_set(False)
    obj.select_set(True)
    bpy.context.view_layer.objects.active = obj
    return obj


def world_vertices(obj) -> np.ndarray:
    m = np.array(obj.matrix_world)
    v = np.array([tuple(x.co) for x in obj.data.vertices])
    return v @ m[:3, :3].T + m[:3, 3]


def test_retrieve_and_deform_user_library_end_to_end(addon, backend_server, user_library):
    assert bpy.ops.shapebridge.connect(address=backend_server.address) == {"FINISHED"}
    assert "retrieval_deformation" in SESSION.methods
    target = make_target()
    target_world = world_vertices(target)
    bpy.ops.ed.undo_push(message="scene built")
    params = {"library": str(user_library), "top_k": 3, "ido": True, "ido_max_iters": 5,
              "n_points": 256}
    run = dict(method="retrieval_deformation", wait="BLOCK", params_json=json.dumps(params),
               inputs_json=json.dumps({"mesh": target.name}))
    assert bpy.ops.shapebridge.run_method(**run) == {"FINISHED"}

    roots = result_roots()
    assert len(roots) == 3
    assert sorted(r["shapebridge_source_name"] for r in roots) == ["chair_0", "chair_1", "chair_2"]
    fits = [r["shapebridge_fit_chamfer_l2sq"] for r in roots]
    assert fits == sorted(fits) and all(np.isfinite(fits))
    assert [r["shapebridge_rank"] for r in roots] == [1, 2, 3]
    lo, hi = target_world.min(0), target_world.max(0)
    margin = 0.5 * (hi - lo).max()
    for root in roots:
        assert root.type == "EMPTY"
        assert_close(np.array(root.matrix_world), np.array(target.matrix_world), atol=1e-5,
                     name="placement")
        assert root["shapebridge_method"] == "retrieval_deformation"
        assert np.isfinite(root["shapebridge_retrieval_distance"])
        children = sorted(root.children, key=lambda c: c["shapebridge_part"])
        assert [c["shapebridge_part"] for c in children] == sorted(LABELS)
        for child in children:
            assert child.type == "MESH" and len(child.data.polygons) > 0
            assert child.name.split(".")[0] == child["shapebridge_part"]
            # the (near-identity, untrained) deformed source overlays the target in the world
            w = world_vertices(child)
            assert (w > lo - margin).all() and (w < hi + margin).all(), child.name
        legs = next(c for c in children if c["shapebridge_part"] == "legs")
        assert len(legs.data.polygons) == 4 * 12
    # only the best candidate is shown at first
    vl = bpy.context.view_layer
    assert [r.hide_get(view_layer=vl) for r in roots] == [False, True, True]
    assert all(c.hide_get(view_layer=vl) for c in roots[1].children)

    # the whole result is one undo step
    names = [o.name for r in roots for o in (r, *r.children)]
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert result_roots() == []
    assert not [n for n in names if n in bpy.data.objects]
    assert "TargetChair" in bpy.data.objects

    # again, then step through the candidates and keep one
    target = bpy.data.objects["TargetChair"]
    bpy.context.view_layer.objects.active = target
    target.select_set(True)
    assert bpy.ops.shapebridge.run_method(**run) == {"FINISHED"}
    roots = result_roots()
    vl = bpy.context.view_layer

    def shown():
        return [i for i, r in enumerate(roots) if not r.hide_get(view_layer=vl)]

    assert bpy.ops.shapebridge.step_candidate(direction=1) == {"FINISHED"}  # no active: one group
    assert shown() == [1]
    assert all(not c.hide_get(view_layer=vl) for c in roots[1].children)
    assert all(c.hide_get(view_layer=vl) and c.hide_render for c in roots[0].children)
    assert bpy.context.view_layer.objects.active == roots[1]
    assert bpy.ops.shapebridge.step_candidate(direction=-1) == {"FINISHED"}
    assert bpy.ops.shapebridge.step_candidate(direction=-1) == {"FINISHED"}  # wraps around
    assert shown() == [2]
    kept_name, kept_source = roots[2].name, roots[2]["shapebridge_source_name"]
    assert bpy.ops.shapebridge.keep_candidate() == {"FINISHED"}
    left = result_roots()
    assert [r.name for r in left] == [kept_name] and not left[0].hide_get(view_layer=vl)
    assert left[0]["shapebridge_source_name"] == kept_source
    assert len(left[0].children) == 3
    coll = bpy.data.collections[bridge.COLLECTION_NAME]
    assert len(coll.objects) == 4


def test_retrieve_and_deform_from_an_image_file(addon, backend_server, user_library, tmp_path):
    """Image target: a PNG file loaded as an image datablock, named as the input; the
    candidates come back with their part children, the image is left as it was, and the
    untrained image model (no image checkpoint for a user library) is reported."""
    from PIL import Image

    rgb = np.full((96, 80, 3), 255, np.uint8)
    rgb[20:70, 25:55] = (120, 80, 40)  # a brown seat-and-back block on white
    rgb[70:90, 27:31] = rgb[70:90, 49:53] = (60, 40, 20)  # two legs
    path = tmp_path / "chair_photo.png"
    Image.fromarray(rgb).save(path)
    image = bpy.data.images.load(str(path))
    before = np.array(image.pixels[:], np.float32)
    assert bpy.ops.shapebridge.connect(address=backend_server.address) == {"FINISHED"}
    params = {"library": str(user_library), "top_k": 2, "ido": True}
    assert bpy.ops.shapebridge.run_method(
        method="retrieval_deformation", wait="BLOCK", params_json=json.dumps(params),
        inputs_json=json.dumps({"image": image.name})) == {"FINISHED"}
    roots = result_roots()
    assert len(roots) == 2 and [r["shapebridge_rank"] for r in roots] == [1, 2]
    assert {r["shapebridge_source_name"] for r in roots} <= {"chair_0", "chair_1", "chair_2"}
    for root in roots:
        assert sorted(c["shapebridge_part"] for c in root.children) == sorted(LABELS)
        assert "shapebridge_fit_chamfer_l2sq" not in root  # no 3D target: no fit, no IDO
    assert np.array_equal(np.array(image.pixels[:], np.float32), before)
    assert "untrained" in SESSION.last_error


def test_keep_without_candidates_reports_error(addon):
    with pytest.raises(RuntimeError, match="no result candidates"):
        bpy.ops.shapebridge.keep_candidate()


def _message(face_parts: list[np.ndarray], labels: list[str]) -> protocol.Message:
    """A result with one part-children candidate per entry of ``face_parts``."""
    v, f = merged(chair_parts(0.45, 0.5, 0.5))
    outputs, arrays = [], {}
    for i, fp in enumerate(face_parts):
        name = f"candidate_{i + 1}"
        outputs.append({"name": name, "kind": "mesh",
                        "meta": {"object_name": f"Retrieved_{i + 1}", "part_labels": labels,
                                 "parts_as_children": True, "rank": i + 1}})
        arrays.update({f"{name}.vertices": v.astype(np.float32),
                       f"{name}.faces": f.astype(np.int32), f"{name}.face_parts": fp})
    body = {"outputs": outputs, "provenance": {"method": "retrieval_deformation"}}
    return protocol.Message(protocol.MsgType.RESULT, job="j", body=body, arrays=arrays)


def test_part_children_builder_all_or_nothing(addon):
    parts = np.repeat(np.array([0, 1, 2, 2, 2, 2], np.int32), 12)
    objs = bridge.apply_result(_message([parts], list(LABELS)), undo=False)
    assert [o.name for o in objs] == ["Retrieved_1", *LABELS]
    assert [o.parent.name for o in objs[1:]] == ["Retrieved_1"] * 3
    assert [len(o.data.polygons) for o in objs[1:]] == [12, 12, 48]
    assert [len(o.data.vertices) for o in objs[1:]] == [8, 8, 32]
    for o in list(bpy.data.objects):
        bpy.data.objects.remove(o)
    n_meshes = len(bpy.data.meshes)
    # the second candidate names part 3, which has no label: the first candidate's empty
    # and part meshes (already built) must be removed too
    bad = parts.copy()
    bad[-1] = 3
    with pytest.raises(bridge.BridgeError, match="part labels"):
        bridge.apply_result(_message([parts, bad], list(LABELS)), undo=False)
    assert len(bpy.data.objects) == 0 and len(bpy.data.meshes) == n_meshes
    msg = _message([parts, parts], list(LABELS))
    msg.arrays["candidate_2.faces"] = msg.arrays["candidate_2.faces"] + 100
    with pytest.raises(bridge.BridgeError, match="face index"):
        bridge.apply_result(msg, undo=False)
    assert len(bpy.data.objects) == 0 and len(bpy.data.meshes) == n_meshes


def test_split_parts_matches_naive_loop():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(40, 3)).astype(np.float32)
    f = rng.integers(0, 40, size=(60, 3)).astype(np.int32)
    fp = rng.integers(0, 4, size=60).astype(np.int32)
    fp[fp == 2] = 1  # part 2 is empty
    pieces = split_parts(v, f, fp, 4)
    assert len(pieces) == 4 and len(pieces[2][1]) == 0 and len(pieces[2][0]) == 0
    for i, (pv, pf) in enumerate(pieces):
        naive = [[tuple(v[j]) for j in tri] for tri, p in zip(f, fp) if p == i]
        got = [[tuple(pv[j]) for j in tri] for tri in pf]
        assert got == naive
        assert len(pv) == len(np.unique(f[fp == i]))
