"""Write a backend result into the scene: all or nothing, one undo step.

Stage 1 builds every datablock unlinked (meshes with colours, parts and shape keys,
empties, cameras) and records provenance as custom properties; if anything fails, every
datablock built so far is removed and `BridgeError` is raised, so the scene never holds
half a result. Stage 2 links the objects into the "ShapeBridge" collection, placed at the
world matrix of the input named by ``meta["placement"]``, and pushes one undo step. The
user's input objects are only read (their matrices were captured at submit time).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from .. import protocol
from .camera import new_camera_object
from .common import BridgeError
from .mesh import (
    add_color_attribute,
    add_part_groups,
    add_shape_keys,
    add_trajectory_slider,
    check_mesh_arrays,
    new_mesh,
)

COLLECTION_NAME = "ShapeBridge"

# meta keys consumed by the builders (everything else becomes a custom property)
_BUILDER_META = {"object_name", "placement", "part_labels", "shape_key_names", "color_name", "names",
                 "parts_as_children", "hidden", "trajectory_slider", "shape_key_times"}


def _idprop_value(value: Any) -> Any:
    """A value Blender can store as a custom property (JSON text for anything structured)."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _provenance(obj: bpy.types.Object, body: Mapping[str, Any], output: Mapping[str, Any]) -> None:
    prov = body.get("provenance") or {}
    obj["shapebridge_method"] = str(prov.get("method", ""))
    obj["shapebridge_output"] = str(output.get("name", ""))
    obj["shapebridge_models"] = ", ".join(str(m) for m in prov.get("models") or [])
    obj["shapebridge_params"] = json.dumps(prov.get("params") or {}, sort_keys=True, default=str)
    obj["shapebridge_job"] = str(prov.get("job", ""))
    obj["shapebridge_server_version"] = str(prov.get("server_version", ""))
    obj["shapebridge_device"] = str(prov.get("device", ""))
    scores = body.get("scores") or {}
    if scores:
        obj["shapebridge_scores"] = {str(k): _idprop_value(v) for k, v in scores.items()}
    for key, value in (output.get("meta") or {}).items():
        if key not in _BUILDER_META:
            obj[f"shapebridge_{key}"] = _idprop_value(value)


def split_parts(
    vertices: np.ndarray, faces: np.ndarray, face_parts: np.ndarray, n_parts: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split a part-labelled triangle mesh into one compact mesh per part.

    vertices: (V, 3) float32 object-local; faces: (F, 3) int32 in [0, V);
    face_parts: (F,) int32 part index per face in [0, n_parts).
    Returns n_parts (vertices (V_i, 3) float32, faces (F_i, 3) int32) pairs, a part with
    no faces giving empty arrays; a vertex shared by several parts is copied into each.
    """
    v = np.asarray(vertices, dtype=np.float32)
    f = np.asarray(faces, dtype=np.int64)
    fp = np.asarray(face_parts)
    if fp.shape != (len(f),):
        raise BridgeError(f"face_parts must have shape ({len(f)},), got {fp.shape}")
    if fp.size and (fp.min() < 0 or fp.max() >= n_parts):
        raise BridgeError(f"face_parts holds part indices outside [0, {n_parts})")
    out = []
    for i in range(n_parts):
        fi = f[fp == i]
        used, local = np.unique(fi, return_inverse=True)
        out.append((v[used], local.reshape(-1, 3).astype(np.int32)))
    return out


def _build_part_children(name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                         created):
    """An empty named ``name`` with one child mesh object per part, named by its label."""
    if "face_parts" not in arrays:
        raise BridgeError(f"mesh output '{name}' asks for parts as children but has no face_parts")
    check_mesh_arrays(arrays["vertices"], arrays["faces"], f"mesh '{name}'")
    fp = np.asarray(arrays["face_parts"])
    labels = meta.get("part_labels")
    n_parts = int(fp.max()) + 1 if fp.size else 0
    if labels is None:
        labels = [f"part_{i}" for i in range(n_parts)]
    if n_parts > len(labels):
        raise BridgeError(f"face_parts of '{name}' names part {n_parts - 1} but only "
                          f"{len(labels)} part labels were sent")
    parent = bpy.data.objects.new(name, None)
    created.append(parent)
    parent.empty_display_type = "PLAIN_AXES"
    objs = [parent]
    for label, (v, f) in zip(labels, split_parts(arrays["vertices"], arrays["faces"], fp,
                                                 len(labels))):
        if not len(f):
            continue
        mesh = new_mesh(str(label), v, f)
        created.append(mesh)
        child = bpy.data.objects.new(str(label), mesh)
        created.append(child)
        child.parent = parent
        child["shapebridge_part"] = str(label)
        objs.append(child)
    v = np.asarray(arrays["vertices"], dtype=np.float64)
    extent = float(np.ptp(v, axis=0).max()) if len(v) > 1 else 1.0
    parent.empty_display_size = max(0.5 * extent, 1e-3)
    return objs


def _build_mesh(name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], created):
    if "vertices" not in arrays or "faces" not in arrays:
        raise BridgeError(f"mesh output '{name}' lacks its vertices or faces")
    if meta.get("parts_as_children"):
        return _build_part_children(name, arrays, meta, created)
    mesh = new_mesh(name, arrays["vertices"], arrays["faces"])
    created.append(mesh)
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    if "colors" in arrays:
        add_color_attribute(mesh, str(meta.get("color_name") or "Color"), arrays["colors"])
    if "face_parts" in arrays:
        add_part_groups(obj, arrays["face_parts"], meta.get("part_labels"))
    if "shape_keys" in arrays:
        keys = arrays["shape_keys"]
        names = meta.get("shape_key_names") or [f"Key {i + 1}" for i in range(len(keys))]
        add_shape_keys(obj, keys, names)
        if meta.get("trajectory_slider"):  # one 0-1 slider obj["shapebridge_t"] drives all keys
            add_trajectory_slider(obj, meta.get("shape_key_times"))
    return [obj]


def _build_empties(name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], created):
    positions = np.asarray(arrays.get("positions", np.zeros((0, 3))), dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or not np.isfinite(positions).all():
        raise BridgeError(f"empties output '{name}' needs finite positions of shape (K, 3)")
    names = meta.get("names") or [f"{name}_{i}" for i in range(len(positions))]
    if len(names) != len(positions):
        raise BridgeError(f"empties output '{name}' has {len(positions)} positions but "
                          f"{len(names)} names")
    extent = float(np.ptp(positions, axis=0).max()) if len(positions) > 1 else 1.0
    parent = bpy.data.objects.new(name, None)
    created.append(parent)
    parent.empty_display_type = "PLAIN_AXES"
    parent.empty_display_size = max(0.05 * extent, 1e-3)
    objs = [parent]
    for label, p in zip(names, positions):
        child = bpy.data.objects.new(str(label), None)
        created.append(child)
        child.empty_display_type = "SPHERE"
        child.empty_display_size = max(0.02 * extent, 1e-3)
        child.parent = parent
        child.location = tuple(float(x) for x in p)
        objs.append(child)
    return objs


def _build_camera(name: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], created):
    obj = new_camera_object(name, dict(arrays))
    created.append(obj.data)
    created.append(obj)
    return [obj]


_BUILDERS = {"mesh": _build_mesh, "empties": _build_empties, "camera": _build_camera}


def _remove(created: list) -> None:
    """Remove datablocks built for a failed result, objects first."""
    for block in reversed(created):
        if isinstance(block, bpy.types.Object):
            bpy.data.objects.remove(block, do_unlink=True)
        elif isinstance(block, bpy.types.Mesh):
            bpy.data.meshes.remove(block, do_unlink=True)
        elif isinstance(block, bpy.types.Camera):
            bpy.data.cameras.remove(block, do_unlink=True)


def result_collection(scene: bpy.types.Scene, name: str = COLLECTION_NAME) -> bpy.types.Collection:
    """The scene's result collection, created and linked under the scene collection if needed."""
    coll = bpy.data.collections.get(name)
    if coll is None:
        coll = bpy.data.collections.new(name)
    if coll.name not in {c.name for c in scene.collection.children_recursive}:
        scene.collection.children.link(coll)
    return coll


def apply_result(
    message: protocol.Message,
    *,
    placements: Mapping[str, Any] | None = None,
    scene: bpy.types.Scene | None = None,
    undo: bool = True,
) -> list[bpy.types.Object]:
    """Build a result message's outputs into the scene; return the new objects.

    message: a ``result`` message: body {"outputs": [{name, kind, meta}], "scores",
        "provenance", ...} and arrays ``"<output>.<field>"`` (see backend Output).
    Output meta flags: ``parts_as_children`` builds a mesh output as an empty with one child
        mesh object per part (named by its label); ``hidden`` hides the output's objects;
        ``trajectory_slider`` drives a mesh's shape keys (positions at ``shape_key_times``,
        default evenly spaced over [0, 1]) by one 0-1 custom property ``shapebridge_t``.
    placements: input name -> (4, 4) world matrix of the object that input was read from,
        captured at submit time; an output whose meta names a placement input gets it as
        its world matrix (its arrays are in that object's local frame), else identity.
    undo: push one undo step "ShapeBridge: <method>" after linking.
    Raises BridgeError (the scene unchanged) if an output cannot be built.
    """
    scene = scene or bpy.context.scene
    placements = placements or {}
    body = message.body or {}
    method = (body.get("provenance") or {}).get("method") or message.method or "result"
    outputs = body.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise BridgeError(f"the result of {method} has no outputs to add to the scene")
    created: list = []
    roots: list[tuple[bpy.types.Object, Any]] = []
    new_objects: list[bpy.types.Object] = []
    hidden: list[bpy.types.Object] = []
    try:
        for output in outputs:
            kind, name = output.get("kind"), str(output.get("name", "result"))
            meta = output.get("meta") or {}
            builder = _BUILDERS.get(kind)
            if builder is None:
                raise BridgeError(
                    f"output '{name}' is of kind '{kind}', which this add-on cannot build; "
                    "update the add-on"
                )
            arrays = protocol.group(message.arrays, name)
            objs = builder(str(meta.get("object_name") or name), arrays, meta, created)
            for obj in objs:
                _provenance(obj, body, output)
            placement = meta.get("placement")
            if placement is not None and placement not in placements:
                raise BridgeError(
                    f"output '{name}' is placed at input '{placement}', which was not sent"
                )
            roots.append((objs[0], placements.get(placement)))
            new_objects.extend(objs)
            if meta.get("hidden"):
                hidden.extend(objs)
    except Exception as exc:
        _remove(created)
        if isinstance(exc, BridgeError):
            raise BridgeError(f"the result of {method} was not added: {exc}") from None
        raise BridgeError(
            f"the result of {method} was not added ({type(exc).__name__}: {exc}); "
            "nothing was changed in the scene"
        ) from exc

    coll = result_collection(scene)
    for root, matrix in roots:
        if matrix is not None:
            m = Matrix([[float(x) for x in row] for row in np.asarray(matrix)])
            root.matrix_world = m @ root.matrix_world
    for obj in new_objects:
        coll.objects.link(obj)
    view_layer = bpy.context.view_layer if scene == bpy.context.scene else scene.view_layers[0]
    for obj in hidden:  # e.g. the lower-ranked of several alternatives
        obj.hide_set(True, view_layer=view_layer)
        obj.hide_render = True
    if undo:
        bpy.ops.ed.undo_push(message=f"ShapeBridge: {method}")
    return new_objects
