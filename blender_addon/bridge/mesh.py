"""Meshes: read positions and triangles as arrays, build new meshes through attribute layers.

Fast paths only: `foreach_get` / `foreach_set` over contiguous float32 / int32 buffers,
never `from_pydata` or per-element Python loops. Blender 4.x/5.x stores positions in the
``position`` attribute and corner vertices in ``.corner_vert``; Blender 3.x has neither, so
the older `vertices` / `loops` / `polygons` properties are used there (feature-tested, not
version-tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bpy
import numpy as np

from .common import BridgeError


@dataclass(frozen=True)
class MeshArrays:
    """A mesh object read as arrays.

    vertices: (V, 3) float32, object-local Blender coordinates (Z-up), after modifiers.
    faces: (F, 3) int32 triangle vertex indices in [0, V).
    matrix_world: (4, 4) float32 object-to-world matrix (row-major, column vectors).
    """

    vertices: np.ndarray
    faces: np.ndarray
    matrix_world: np.ndarray


def matrix_array(matrix) -> np.ndarray:
    """A `mathutils.Matrix` (4x4) as a (4, 4) float32 array, rows as in Blender."""
    return np.array([list(row) for row in matrix], dtype=np.float32)


def _positions(mesh: bpy.types.Mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions of a mesh datablock."""
    out = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    attr = mesh.attributes.get("position")
    if attr is not None and attr.data_type == "FLOAT_VECTOR" and attr.domain == "POINT":
        attr.data.foreach_get("vector", out)
    else:  # Blender 3.x: no generic position attribute
        mesh.vertices.foreach_get("co", out)
    return out.reshape(-1, 3)


def _triangles(mesh: bpy.types.Mesh) -> np.ndarray:
    """(F, 3) int32 triangulation of a mesh datablock (n-gons split as Blender displays them)."""
    mesh.calc_loop_triangles()
    out = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("vertices", out)
    return out.reshape(-1, 3)


def _needs_evaluation(obj: bpy.types.Object) -> bool:
    shape_keys = getattr(obj.data, "shape_keys", None)
    return bool(obj.modifiers) or shape_keys is not None


def _evaluated(obj: bpy.types.Object, depsgraph, reader):
    """Run `reader(mesh)` on the object's evaluated mesh (modifiers and shape keys applied)."""
    if depsgraph is None:
        depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        return reader(mesh)
    finally:
        evaluated.to_mesh_clear()


def _check_mesh_object(obj: bpy.types.Object) -> None:
    if obj is None:
        raise BridgeError("no object was given; select a mesh object")
    if obj.type != "MESH":
        raise BridgeError(
            f"object '{obj.name}' is a {obj.type.lower()}, not a mesh; select a mesh object"
        )


def read_mesh(
    obj: bpy.types.Object, *, depsgraph=None, apply_modifiers: bool = True
) -> MeshArrays:
    """Read a mesh object as triangles in its local frame.

    obj: a mesh object. With apply_modifiers the evaluated mesh (modifiers, shape keys) is
    read, as the artist sees it; the object itself is never changed.
    Returns `MeshArrays` (vertices (V, 3) float32 local, faces (F, 3) int32, matrix_world).
    Raises BridgeError if the object is not a mesh or has no faces.
    """
    _check_mesh_object(obj)

    def reader(mesh):
        return _positions(mesh), _triangles(mesh)

    if apply_modifiers and _needs_evaluation(obj):
        vertices, faces = _evaluated(obj, depsgraph, reader)
    else:
        vertices, faces = reader(obj.data)
    if len(faces) == 0:
        raise BridgeError(
            f"mesh '{obj.name}' has {len(vertices)} vertices and 0 faces; "
            "select a mesh with faces (fill holes or add faces first)"
        )
    return MeshArrays(vertices, faces, matrix_array(obj.matrix_world))


def read_points(obj: bpy.types.Object, *, depsgraph=None) -> np.ndarray:
    """Vertex positions of a mesh object as a point set: (N, 3) float32, object-local frame."""
    _check_mesh_object(obj)
    if _needs_evaluation(obj):
        points = _evaluated(obj, depsgraph, _positions)
    else:
        points = _positions(obj.data)
    if len(points) == 0:
        raise BridgeError(f"object '{obj.name}' has no vertices; select an object with points")
    return points


def check_mesh_arrays(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple:
    """Validate and convert result arrays: vertices (V, 3) float32, faces (F, 3) int32 in range."""
    v = np.ascontiguousarray(vertices, dtype=np.float32)
    f = np.ascontiguousarray(faces, dtype=np.int32)
    if v.ndim != 2 or v.shape[1] != 3:
        raise BridgeError(f"{what}: vertices must have shape (V, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise BridgeError(f"{what}: faces must have shape (F, 3), got {f.shape}")
    if not np.isfinite(v).all():
        raise BridgeError(f"{what}: vertices contain NaN or infinite values")
    if f.size and (f.min() < 0 or f.max() >= len(v)):
        raise BridgeError(f"{what}: a face index is outside 0..{len(v) - 1}")
    return v, f


def new_mesh(name: str, vertices: np.ndarray, faces: np.ndarray) -> bpy.types.Mesh:
    """A new (unlinked) mesh datablock from triangles.

    vertices: (V, 3) float32, object-local Blender coordinates.
    faces: (F, 3) int32 vertex indices in [0, V).
    Degenerate triangles (a repeated index) are removed by `Mesh.validate`.
    """
    v, f = check_mesh_arrays(vertices, faces, f"mesh '{name}'")
    mesh = bpy.data.meshes.new(name)
    try:
        mesh.vertices.add(len(v))
        mesh.loops.add(f.size)
        mesh.polygons.add(len(f))
        loop_start = np.arange(0, f.size, 3, dtype=np.int32)
        position = mesh.attributes.get("position")
        corner_vert = mesh.attributes.get(".corner_vert")
        if position is not None and corner_vert is not None:  # Blender 4.x / 5.x
            position.data.foreach_set("vector", v.ravel())
            corner_vert.data.foreach_set("value", f.ravel())
            mesh.polygons.foreach_set("loop_start", loop_start)
        else:  # Blender 3.x
            mesh.vertices.foreach_set("co", v.ravel())
            mesh.loops.foreach_set("vertex_index", f.ravel())
            mesh.polygons.foreach_set("loop_start", loop_start)
            mesh.polygons.foreach_set("loop_total", np.full(len(f), 3, dtype=np.int32))
        mesh.update(calc_edges=True)
        if len(f) and (
            (f[:, 0] == f[:, 1]).any() or (f[:, 1] == f[:, 2]).any() or (f[:, 0] == f[:, 2]).any()
        ):
            mesh.validate(verbose=False)
    except Exception:
        bpy.data.meshes.remove(mesh)
        raise
    return mesh


def add_color_attribute(mesh: bpy.types.Mesh, name: str, colors: np.ndarray) -> None:
    """Add a per-vertex colour attribute and make it the active/render colour.

    colors: (V, 3) or (V, 4) float32 linear RGB(A) in [0, 1], one row per vertex.
    """
    c = np.asarray(colors, dtype=np.float32)
    if c.ndim != 2 or c.shape[0] != len(mesh.vertices) or c.shape[1] not in (3, 4):
        raise BridgeError(
            f"colour attribute '{name}' must have shape ({len(mesh.vertices)}, 3 or 4), "
            f"got {c.shape}"
        )
    if c.shape[1] == 3:
        c = np.concatenate([c, np.ones((len(c), 1), np.float32)], axis=1)
    attr = mesh.color_attributes.new(name=name, type="FLOAT_COLOR", domain="POINT")
    attr.data.foreach_set("color", np.ascontiguousarray(c).ravel())
    if hasattr(mesh.color_attributes, "active_color"):
        mesh.color_attributes.active_color = attr
    if hasattr(mesh.color_attributes, "render_color_index"):
        mesh.color_attributes.render_color_index = mesh.color_attributes.active_color_index


def add_shape_keys(obj: bpy.types.Object, keys: np.ndarray, names: Sequence[str]) -> None:
    """Add a Basis and one shape key per row of `keys` to a mesh object.

    keys: (K, V, 3) float32 vertex positions per key, object-local frame.
    names: K key names (e.g. the steps of a deformation trajectory).
    """
    k = np.asarray(keys, dtype=np.float32)
    n_vertices = len(obj.data.vertices)
    if k.ndim != 3 or k.shape[1:] != (n_vertices, 3):
        raise BridgeError(
            f"shape keys of '{obj.name}' must have shape (K, {n_vertices}, 3), got {k.shape}"
        )
    if len(names) != len(k):
        raise BridgeError(f"{len(k)} shape keys but {len(names)} names were sent")
    if not np.isfinite(k).all():
        raise BridgeError(f"shape keys of '{obj.name}' contain NaN or infinite values")
    obj.shape_key_add(name="Basis", from_mix=False)
    for name, co in zip(names, k):
        key = obj.shape_key_add(name=str(name), from_mix=False)
        key.data.foreach_set("co", np.ascontiguousarray(co).ravel())
    obj.data.shape_keys.use_relative = True


def trajectory_weights(times: Sequence[float], t: float) -> np.ndarray:
    """Shape key values that blend piecewise-linearly along a trajectory at slider ``t``.

    times: (K,) increasing key times in [0, 1] (K >= 2). Key i gets the hat function that is
    1 at times[i] and falls linearly to 0 at its neighbours' times (clamped at both ends), so
    the values sum to 1 and relative keys holding absolute positions interpolate them.
    Returns (K,) float64 weights; the drivers of `add_trajectory_slider` evaluate the same.
    """
    ts = np.asarray(times, dtype=np.float64)
    return np.array([np.interp(float(t), ts, row) for row in np.eye(len(ts))])


def _hat_expression(times: np.ndarray, i: int) -> str:
    """Driver expression of key i's hat weight in the slider variable ``t`` (simple
    expression subset: arithmetic, min, max, so Blender evaluates it without Python)."""
    k = len(times)
    rising = falling = None
    if i > 0:
        a, b = times[i - 1], times[i]
        rising = f"(t - {a!r}) / {b - a!r}"
    if i < k - 1:
        b, c = times[i], times[i + 1]
        falling = f"({c!r} - t) / {c - b!r}"
    if rising is None:
        return f"max(0.0, min(1.0, {falling}))"
    if falling is None:
        return f"max(0.0, min(1.0, {rising}))"
    return f"max(0.0, min({rising}, {falling}))"


def add_trajectory_slider(
    obj: bpy.types.Object, times: Sequence[float] | None = None, prop: str = "shapebridge_t"
) -> None:
    """Drive all trajectory shape keys of ``obj`` by one 0-1 custom property ``obj[prop]``.

    obj: a mesh object whose shape keys after the Basis are the trajectory's positions at
        ``times`` (added by `add_shape_keys`).
    times: (K,) strictly increasing key times from 0 to 1; None means evenly spaced.
    Each key's value gets a driver with the hat weight of `trajectory_weights`, so moving the
    slider blends the mesh piecewise-linearly along the trajectory; the slider starts at 1
    (the end of the trajectory).
    """
    key = obj.data.shape_keys
    blocks = list(key.key_blocks)[1:] if key is not None else []
    if len(blocks) < 2:
        raise BridgeError(f"'{obj.name}' needs at least 2 shape keys for a trajectory slider, "
                          f"has {len(blocks)}")
    ts = np.linspace(0.0, 1.0, len(blocks)) if times is None else np.asarray(times, np.float64)
    if ts.shape != (len(blocks),) or not np.all(np.diff(ts) > 0) or ts[0] != 0 or ts[-1] != 1:
        raise BridgeError(f"trajectory times of '{obj.name}' must be {len(blocks)} increasing "
                          f"values from 0 to 1, got {np.asarray(times).tolist()}")
    obj[prop] = 1.0
    obj.id_properties_ui(prop).update(
        min=0.0, max=1.0, soft_min=0.0, soft_max=1.0, step=1,
        description="Position along the deformation trajectory (0 = source, 1 = matched)",
    )
    for i, block in enumerate(blocks):
        block.slider_min, block.slider_max = 0.0, 1.0
        driver = block.driver_add("value").driver
        driver.type = "SCRIPTED"
        var = driver.variables.new()
        var.name, var.type = "t", "SINGLE_PROP"
        var.targets[0].id_type = "OBJECT"
        var.targets[0].id = obj
        var.targets[0].data_path = f'["{prop}"]'
        driver.expression = _hat_expression(ts, i)


def add_part_groups(
    obj: bpy.types.Object, face_parts: np.ndarray, labels: Sequence[str] | None
) -> None:
    """Store a face segmentation as an integer face attribute ``part`` and one vertex group
    per part (a vertex joins the groups of all faces around it).

    face_parts: (F, ) int32 part index per triangle, in [0, len(labels)).
    labels: part names; None names them ``part_<i>``.
    """
    mesh = obj.data
    parts = np.ascontiguousarray(face_parts, dtype=np.int32)
    if parts.shape != (len(mesh.polygons),):
        raise BridgeError(
            f"face_parts of '{obj.name}' must have shape ({len(mesh.polygons)},), got {parts.shape}"
        )
    n_parts = int(parts.max()) + 1 if parts.size else 0
    if parts.size and parts.min() < 0:
        raise BridgeError(f"face_parts of '{obj.name}' has a negative part index")
    if labels is None:
        labels = [f"part_{i}" for i in range(n_parts)]
    if n_parts > len(labels):
        raise BridgeError(f"face_parts of '{obj.name}' names part {n_parts - 1} but only "
                          f"{len(labels)} part labels were sent")
    attr = mesh.attributes.new(name="part", type="INT", domain="FACE")
    attr.data.foreach_set("value", parts)
    corner = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", corner)
    loop_start = np.empty(len(mesh.polygons), dtype=np.int32)
    mesh.polygons.foreach_get("loop_start", loop_start)
    tris = corner[loop_start[:, None] + np.arange(3)]
    for i, label in enumerate(labels):
        members = np.unique(tris[parts == i])
        group = obj.vertex_groups.new(name=str(label))
        if members.size:
            group.add(members.tolist(), 1.0, "REPLACE")
