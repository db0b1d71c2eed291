"""Cameras: Blender camera objects <-> OpenCV K, R, t, size through `conventions`."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix

from .. import conventions
from .common import BridgeError
from .mesh import matrix_array


def blender_camera(obj: bpy.types.Object, scene: bpy.types.Scene) -> conventions.BlenderCamera:
    """The plain numbers of a camera object as `conventions.BlenderCamera` (render size from
    the scene's output settings)."""
    if obj is None or obj.type != "CAMERA":
        what = "nothing" if obj is None else f"'{obj.name}' ({obj.type.lower()})"
        raise BridgeError(f"a camera is needed but {what} was given; select a camera object")
    data = obj.data
    if data.type != "PERSP":
        raise BridgeError(
            f"camera '{obj.name}' is {data.type.lower()}; only perspective cameras are supported"
        )
    render = scene.render
    pct = render.resolution_percentage
    try:
        return conventions.BlenderCamera(
            matrix_world=matrix_array(obj.matrix_world),
            lens_mm=float(data.lens),
            sensor_width=float(data.sensor_width),
            sensor_height=float(data.sensor_height),
            sensor_fit=data.sensor_fit,
            shift_x=float(data.shift_x),
            shift_y=float(data.shift_y),
            resolution_x=max(1, render.resolution_x * pct // 100),
            resolution_y=max(1, render.resolution_y * pct // 100),
            pixel_aspect=float(render.pixel_aspect_x / render.pixel_aspect_y),
        )
    except ValueError as exc:
        raise BridgeError(f"camera '{obj.name}' cannot be used: {exc}") from None


def read_camera(obj: bpy.types.Object, scene: bpy.types.Scene) -> dict[str, np.ndarray]:
    """A camera object as OpenCV arrays in Blender world coordinates.

    Returns {"K": (3, 3) float32 pixels, "R": (3, 3) float32 world->camera, "t": (3,) float32,
    "size": (2,) int32 (H, W)}.
    """
    cv = conventions.blender_to_opencv(blender_camera(obj, scene))
    return {
        "K": cv.K.astype(np.float32),
        "R": cv.R.astype(np.float32),
        "t": cv.t.astype(np.float32),
        "size": np.asarray(cv.size, dtype=np.int32),
    }


def new_camera_object(name: str, arrays: dict[str, np.ndarray]) -> bpy.types.Object:
    """A new (unlinked) camera object from OpenCV arrays.

    arrays: K (3, 3), R (3, 3), t (3,) mapping the frame the result is placed in (Blender
    coordinates) to OpenCV camera coordinates, size (2,) = (H, W) pixels.
    The object's matrix_world is the camera pose in that frame; the caller composes it with
    the placement matrix. Sensor fit, lens shift and focal length reproduce K.
    """
    missing = [k for k in ("K", "R", "t", "size") if k not in arrays]
    if missing:
        raise BridgeError(f"camera '{name}' lacks the array(s) {', '.join(missing)}")
    try:
        cv = conventions.OpenCVCamera(
            K=np.asarray(arrays["K"], np.float64),
            R=np.asarray(arrays["R"], np.float64),
            t=np.asarray(arrays["t"], np.float64),
            size=tuple(int(s) for s in np.asarray(arrays["size"]).reshape(-1)),
        )
        cam = conventions.opencv_to_blender(cv)
    except ValueError as exc:
        raise BridgeError(f"camera '{name}' from the backend is invalid: {exc}") from None
    data = bpy.data.cameras.new(name)
    data.lens = cam.lens_mm
    data.sensor_width = cam.sensor_width
    data.sensor_height = cam.sensor_height
    data.sensor_fit = cam.sensor_fit
    data.shift_x = cam.shift_x
    data.shift_y = cam.shift_y
    obj = bpy.data.objects.new(name, data)
    obj.matrix_world = Matrix([[float(x) for x in row] for row in cam.matrix_world])
    obj["shapebridge_resolution"] = [cam.resolution_x, cam.resolution_y]
    obj["shapebridge_pixel_aspect"] = float(cam.pixel_aspect)
    return obj
