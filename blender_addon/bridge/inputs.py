"""Method inputs: the arrays ``"<input>.<field>"`` for one input spec from a Blender datablock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import bpy
import numpy as np

from .camera import read_camera
from .common import BridgeError
from .image import read_image
from .mesh import matrix_array, read_mesh, read_points


def input_arrays(
    spec: Mapping[str, Any], source: Any, scene: bpy.types.Scene, *, depsgraph=None
) -> dict[str, np.ndarray]:
    """Arrays of one method input read from `source`.

    spec: an input spec of the method schema ({name, kind, doc, optional}).
    source: a mesh object (kind mesh, points), a camera object (camera) or an image
        datablock (image).
    Returns, by kind, with prefix ``spec["name"]``:
        mesh: vertices (V, 3) float32 object-local, faces (F, 3) int32, matrix_world (4, 4)
            float32; points: points (N, 3) float32 object-local, matrix_world;
        image: pixels (H, W, C) float32 top row first;
        camera: K (3, 3), R (3, 3), t (3,) float32 in Blender world, size (2,) int32 (H, W).
    """
    name, kind = spec["name"], spec["kind"]
    if kind == "mesh":
        m = read_mesh(source, depsgraph=depsgraph)
        fields = {"vertices": m.vertices, "faces": m.faces, "matrix_world": m.matrix_world}
    elif kind == "points":
        points = read_points(source, depsgraph=depsgraph)
        fields = {"points": points, "matrix_world": matrix_array(source.matrix_world)}
    elif kind == "image":
        if not isinstance(source, bpy.types.Image):
            raise BridgeError(f"input '{name}' needs an image; pick one in the method's panel")
        fields = {"pixels": read_image(source)}
    elif kind == "camera":
        fields = read_camera(source, scene)
    else:
        raise BridgeError(
            f"input '{name}' is of kind '{kind}', which this add-on version cannot send; "
            "update the add-on"
        )
    return {f"{name}.{k}": v for k, v in fields.items()}
