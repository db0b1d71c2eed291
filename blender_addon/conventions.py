"""Frames, normalisation and cameras: the one owner of every convention conversion.

Pure numpy (no bpy, no torch), so Blender, the Python client and the backend share it.
The backend imports it as ``blender_addon.conventions``. Every function returns float64
arrays; see ``docs/conventions.md`` for the derivations.

Frames
    Blender world / object-local: Z-up, right-handed, metres, object front faces -Y
    (Blender's "Front" view looks along +Y at the -Y side).
    Canonical (backend, ShapeNet): Y-up, right-handed, front faces +Z, object centred at
    the origin inside the unit cube [-0.5, 0.5]^3 (longest bounding-box side 1).
    Blender -> canonical is the rotation x' = x, y' = z, z' = -y.

Cameras
    Blender camera: looks down its local -Z, local +Y is image up, local +X image right.
    OpenCV camera: x_cam = R @ x_world + t; looks down +Z, +X right, +Y down. Pixel
    coordinates are continuous with the origin at the top-left *corner* of the image, so
    the centre of pixel (row i, column j) is at (u, v) = (j + 0.5, i + 0.5) and an
    unshifted camera has (cx, cy) = (W / 2, H / 2). Subtract 0.5 from cx and cy for tools
    that put pixel centres on integers (cv2.projectPoints, COLMAP).
    PyTorch3D camera: +X left, +Y up, +Z into the scene, row vectors
    X_cam = X_world @ R + T; focal length and principal point in NDC units, where NDC
    spans [-1, 1] along the shorter image side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

__all__ = [
    "BLENDER_TO_CANONICAL",
    "CANONICAL_TO_BLENDER",
    "BlenderCamera",
    "CanonicalTransform",
    "Normalization",
    "OpenCVCamera",
    "PyTorch3DCamera",
    "azimuth_elevation_camera",
    "blender_local_to_canonical",
    "blender_to_canonical_points",
    "blender_to_opencv",
    "blender_world_to_canonical_matrix",
    "camera_to_frame",
    "canonical_to_blender_local",
    "canonical_to_blender_points",
    "denormalize",
    "look_at_opencv",
    "normalize_to_unit_cube",
    "opencv_to_blender",
    "opencv_to_pytorch3d",
    "pytorch3d_to_opencv",
]

# Homogeneous rotation taking Blender coordinates (Z-up, front -Y) to canonical
# coordinates (Y-up, front +Z): x' = x, y' = z, z' = -y.
BLENDER_TO_CANONICAL: np.ndarray = np.array(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)
BLENDER_TO_CANONICAL.setflags(write=False)
# Its inverse (the transpose): x = x', y = -z', z = y'.
CANONICAL_TO_BLENDER: np.ndarray = np.ascontiguousarray(BLENDER_TO_CANONICAL.T)
CANONICAL_TO_BLENDER.setflags(write=False)

# Blender camera axes (+X right, +Y up, looking down -Z) to OpenCV axes (+X right, +Y down,
# looking down +Z), and likewise OpenCV <-> PyTorch3D (+X left, +Y up, +Z forward).
_FLIP_YZ = np.diag([1.0, -1.0, -1.0])
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])

SensorFit = Literal["AUTO", "HORIZONTAL", "VERTICAL"]
_SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")
# Sensor width written by `opencv_to_blender` (Blender's default full-frame width).
DEFAULT_SENSOR_WIDTH_MM = 36.0
DEFAULT_SENSOR_HEIGHT_MM = 24.0
# Relative tolerance for "this K has no skew" and "up is not parallel to forward".
_TOL = 1e-6
# Tolerance of |R^T R - I| for "this matrix is a rotation": loose enough for rotations
# that crossed the wire as float32 (errors ~4e-7), tight enough to reject any scale.
_ROT_TOL = 1e-5


# --------------------------------------------------------------------------------------
# Validation helpers


def _points(points: np.ndarray, name: str) -> np.ndarray:
    """Return `points` as a finite (N, 3) float64 array or raise a ValueError naming it."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3); got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values; remove them first.")
    return arr


def _matrix(matrix: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """Return `matrix` as a finite float64 array of `shape` or raise a ValueError naming it."""
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got shape {arr.shape}.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return arr


def _is_rotation(r: np.ndarray) -> bool:
    """True when the (3, 3) matrix `r` is orthonormal with determinant +1 (within _ROT_TOL)."""
    return bool(np.allclose(r.T @ r, np.eye(3), rtol=0.0, atol=_ROT_TOL) and np.linalg.det(r) > 0.0)


def _readonly(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def _transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) affine `matrix` to (N, 3) `points` (column-vector convention)."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


# --------------------------------------------------------------------------------------
# Frames


def blender_to_canonical_points(points: np.ndarray) -> np.ndarray:
    """Rotate points from a Blender frame (Z-up, front -Y) to the canonical axes (Y-up, front +Z).

    Args:
        points: (N, 3) float, Blender world or object-local frame.

    Returns:
        (N, 3) float64, same points with canonical axes (no scaling or centring).
    """
    return _transform(BLENDER_TO_CANONICAL, _points(points, "points"))


def canonical_to_blender_points(points: np.ndarray) -> np.ndarray:
    """Inverse of `blender_to_canonical_points`.

    Args:
        points: (N, 3) float, canonical axes (Y-up, front +Z).

    Returns:
        (N, 3) float64, Blender axes (Z-up, front -Y).
    """
    return _transform(CANONICAL_TO_BLENDER, _points(points, "points"))


# --------------------------------------------------------------------------------------
# Normalisation


@dataclass(frozen=True)
class Normalization:
    """Uniform scale about a centre: ``p_normalized = (p - center) * scale``.

    Attributes:
        center: (3,) float64, centre subtracted first, in the frame of the input points.
        scale: positive float, multiplier applied after centring.
    """

    center: np.ndarray
    scale: float

    def __post_init__(self) -> None:
        center = np.asarray(self.center, dtype=np.float64)
        if center.shape != (3,) or not np.isfinite(center).all():
            raise ValueError(f"Normalization.center must be 3 finite numbers; got {self.center!r}.")
        if not (math.isfinite(self.scale) and self.scale > 0.0):
            raise ValueError(f"Normalization.scale must be positive and finite; got {self.scale}.")
        object.__setattr__(self, "center", _readonly(center))
        object.__setattr__(self, "scale", float(self.scale))

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 affine matrix mapping input points to normalised points."""
        m = np.eye(4)
        m[:3, :3] *= self.scale
        m[:3, 3] = -self.scale * self.center
        return m

    def inverse_matrix(self) -> np.ndarray:
        """(4, 4) float64 affine matrix mapping normalised points back to input points."""
        m = np.eye(4)
        m[:3, :3] /= self.scale
        m[:3, 3] = self.center
        return m

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Normalise (N, 3) points of the input frame; returns (N, 3) float64."""
        return (_points(points, "points") - self.center) * self.scale

    def invert(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 3) normalised points back to the input frame; returns (N, 3) float64."""
        return _points(points, "points") / self.scale + self.center


def normalize_to_unit_cube(
    points: np.ndarray,
    mode: Literal["cube", "sphere"] = "cube",
    extent: float = 1.0,
) -> tuple[np.ndarray, Normalization]:
    """Centre points on their bounding-box centre and scale them uniformly.

    Args:
        points: (N, 3) float, any frame (typically canonical axes, see
            `blender_local_to_canonical`).
        mode: "cube": the longest bounding-box side becomes `extent`, so with the default
            the points fill [-0.5, 0.5]^3 along their longest side. "sphere": the point
            farthest from the bounding-box centre lands at distance `extent / 2` (with the
            default, inside the sphere inscribed in the canonical unit cube; pass
            ``extent=2.0`` for a unit-radius sphere).
        extent: positive float, target side length (cube) or diameter (sphere).

    Returns:
        (points_normalized (N, 3) float64, Normalization) with
        ``points_normalized == norm.apply(points)``.
    """
    pts = _points(points, "points")
    if pts.shape[0] == 0:
        raise ValueError("Cannot normalise an empty point set; pass at least one point.")
    if not (math.isfinite(extent) and extent > 0.0):
        raise ValueError(f"extent must be positive and finite; got {extent}.")
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = 0.5 * (lo + hi)
    if mode == "cube":
        size = float((hi - lo).max())
    elif mode == "sphere":
        size = 2.0 * float(np.linalg.norm(pts - center, axis=1).max())
    else:
        raise ValueError(f"mode must be 'cube' or 'sphere'; got {mode!r}.")
    if size <= 0.0:
        raise ValueError(
            "All points coincide, so there is no size to normalise; pass a shape with extent."
        )
    norm = Normalization(center=center, scale=extent / size)
    return norm.apply(pts), norm


def denormalize(points: np.ndarray, norm: Normalization) -> np.ndarray:
    """Map normalised (N, 3) points back to the frame `norm` was computed in (float64)."""
    return norm.invert(points)


@dataclass(frozen=True)
class CanonicalTransform:
    """Blender object-local frame -> canonical unit cube: rotate axes, then normalise.

    ``canonical = norm.apply(blender_to_canonical_points(local))``; the normalisation's
    centre is expressed in canonical axes.

    Attributes:
        norm: the normalisation applied after the axis rotation.
    """

    norm: Normalization

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 affine matrix: Blender-local points -> canonical unit cube."""
        return self.norm.matrix() @ BLENDER_TO_CANONICAL

    def inverse_matrix(self) -> np.ndarray:
        """(4, 4) float64 affine matrix: canonical unit cube -> Blender-local points."""
        return CANONICAL_TO_BLENDER @ self.norm.inverse_matrix()

    def vectors_to_blender(self, vectors: np.ndarray) -> np.ndarray:
        """Map (N, 3) canonical displacement vectors (offsets, not positions) to Blender-local.

        Applies the inverse rotation and scale but no translation, so a per-vertex offset
        predicted in the unit cube becomes an offset in the object's local metres.
        """
        return _points(vectors, "vectors") @ (CANONICAL_TO_BLENDER[:3, :3] / self.norm.scale).T


def blender_local_to_canonical(
    vertices: np.ndarray,
    mode: Literal["cube", "sphere"] = "cube",
    extent: float = 1.0,
) -> tuple[np.ndarray, CanonicalTransform]:
    """Take an object's Blender-local vertices into the canonical unit cube.

    Args:
        vertices: (N, 3) float, Blender object-local frame (Z-up, front -Y, metres).
        mode, extent: see `normalize_to_unit_cube`.

    Returns:
        (points (N, 3) float64 in the canonical frame, CanonicalTransform to undo it with
        `canonical_to_blender_local`).
    """
    rotated = blender_to_canonical_points(vertices)
    points, norm = normalize_to_unit_cube(rotated, mode=mode, extent=extent)
    return points, CanonicalTransform(norm=norm)


def canonical_to_blender_local(points: np.ndarray, transform: CanonicalTransform) -> np.ndarray:
    """Map (N, 3) canonical points back into the Blender-local frame `transform` came from.

    Args:
        points: (N, 3) float, canonical frame (unit cube, Y-up, front +Z).
        transform: returned by `blender_local_to_canonical` for the same object.

    Returns:
        (N, 3) float64, Blender object-local frame.
    """
    return canonical_to_blender_points(transform.norm.invert(points))


def blender_world_to_canonical_matrix(
    object_matrix_world: np.ndarray, transform: CanonicalTransform
) -> np.ndarray:
    """(4, 4) float64 matrix taking Blender *world* points to an object's canonical frame.

    Args:
        object_matrix_world: (4, 4) float, the object's local-to-world matrix
            (``obj.matrix_world``).
        transform: the object's `CanonicalTransform` from `blender_local_to_canonical`.

    Use it with `camera_to_frame` to express a Blender scene camera in the object's
    canonical frame. It is a similarity only when the object's scale is uniform.
    """
    mw = _matrix(object_matrix_world, (4, 4), "object_matrix_world")
    return transform.matrix() @ np.linalg.inv(mw)


# --------------------------------------------------------------------------------------
# Cameras


@dataclass(frozen=True)
class OpenCVCamera:
    """A pinhole camera in OpenCV convention.

    ``x_cam = R @ x_world + t``; camera looks down +Z, +X right, +Y down.
    ``(u, v) = (fx * x / z + cx, fy * y / z + cy)`` with pixel centres at integer + 0.5
    (the image spans [0, W] x [0, H]; see the module docstring).

    Attributes:
        K: (3, 3) float64 intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]], pixels.
        R: (3, 3) float64 rotation, world -> camera.
        t: (3,) float64 translation, world -> camera (same length unit as the world).
        size: (H, W) image size in pixels.
    """

    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    size: tuple[int, int]

    def __post_init__(self) -> None:
        k = _matrix(self.K, (3, 3), "OpenCVCamera.K")
        r = _matrix(self.R, (3, 3), "OpenCVCamera.R")
        t = _matrix(np.reshape(self.t, -1), (3,), "OpenCVCamera.t")
        if not np.allclose(k[2], [0.0, 0.0, 1.0]) or k[1, 0] != 0.0:
            raise ValueError(
                f"OpenCVCamera.K must be upper triangular with K[2] = [0, 0, 1]; got {k}."
            )
        if not (k[0, 0] > 0.0 and k[1, 1] > 0.0):
            raise ValueError(
                f"OpenCVCamera.K needs positive focal lengths; got fx={k[0, 0]}, fy={k[1, 1]}."
            )
        if not _is_rotation(r):
            raise ValueError("OpenCVCamera.R must be a rotation matrix (orthonormal, det +1).")
        height, width = (int(s) for s in self.size)
        if height <= 0 or width <= 0 or (height, width) != tuple(self.size):
            raise ValueError(
                f"OpenCVCamera.size must be two positive integers (H, W); got {self.size}."
            )
        object.__setattr__(self, "K", _readonly(k))
        object.__setattr__(self, "R", _readonly(r))
        object.__setattr__(self, "t", _readonly(t))
        object.__setattr__(self, "size", (height, width))

    @property
    def center(self) -> np.ndarray:
        """(3,) float64 camera centre in world coordinates, ``-R.T @ t``."""
        return -self.R.T @ self.t

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) float64 OpenCV camera coordinates (z = depth)."""
        return _points(points, "points") @ self.R.T + self.t

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) float64 pixel coordinates (u right, v down).

        Points at or behind the camera (z <= 0) give non-finite or mirrored coordinates;
        filter them with `world_to_camera` first.
        """
        cam = self.world_to_camera(points)
        uvw = cam @ self.K.T
        with np.errstate(divide="ignore", invalid="ignore"):
            return uvw[:, :2] / uvw[:, 2:3]


@dataclass(frozen=True)
class BlenderCamera:
    """A Blender perspective camera as plain numbers (the bridge reads them from bpy).

    The camera looks down its local -Z with local +Y up.

    Attributes:
        matrix_world: (4, 4) float, camera-to-world (``obj.matrix_world``). Scale is
            ignored (Blender normalises it away too); shear is rejected.
        lens_mm: focal length in millimetres (``cam.data.lens``).
        sensor_width: sensor width in mm (``cam.data.sensor_width``).
        sensor_height: sensor height in mm (``cam.data.sensor_height``); used only when
            sensor_fit is "VERTICAL".
        sensor_fit: "AUTO" (the sensor width spans the longer image side), "HORIZONTAL"
            or "VERTICAL".
        shift_x, shift_y: lens shift in units of the fitted sensor size
            (``cam.data.shift_x``/``shift_y``).
        resolution_x, resolution_y: the *effective* image size in pixels, i.e.
            ``render.resolution_x * render.resolution_percentage // 100``.
        pixel_aspect: ``render.pixel_aspect_x / render.pixel_aspect_y`` (width of a pixel
            over its height).
    """

    matrix_world: np.ndarray
    lens_mm: float
    sensor_width: float
    sensor_height: float
    sensor_fit: SensorFit
    shift_x: float
    shift_y: float
    resolution_x: int
    resolution_y: int
    pixel_aspect: float = 1.0

    def __post_init__(self) -> None:
        mw = _matrix(self.matrix_world, (4, 4), "BlenderCamera.matrix_world")
        object.__setattr__(self, "matrix_world", _readonly(mw))
        if self.sensor_fit not in _SENSOR_FITS:
            raise ValueError(
                f"BlenderCamera.sensor_fit must be one of {_SENSOR_FITS}; got {self.sensor_fit!r}."
            )
        for name in ("lens_mm", "sensor_width", "sensor_height", "pixel_aspect"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"BlenderCamera.{name} must be positive and finite; got {value}.")
        if not (math.isfinite(self.shift_x) and math.isfinite(self.shift_y)):
            raise ValueError("BlenderCamera.shift_x and shift_y must be finite.")
        for name in ("resolution_x", "resolution_y"):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(f"BlenderCamera.{name} must be a positive integer; got {value}.")
            object.__setattr__(self, name, int(value))

    def rotation_translation(self) -> tuple[np.ndarray, np.ndarray]:
        """Camera-to-world rotation (3, 3) and camera position (3,), float64, scale removed."""
        mw = self.matrix_world
        if not np.allclose(mw[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError("BlenderCamera.matrix_world must be affine (last row 0, 0, 0, 1).")
        col_norms = np.linalg.norm(mw[:3, :3], axis=0)
        if (col_norms <= 0.0).any():
            raise ValueError("BlenderCamera.matrix_world has a zero scale axis.")
        rot = mw[:3, :3] / col_norms
        if not _is_rotation(rot):
            raise ValueError(
                "BlenderCamera.matrix_world has shear or a negative scale; "
                "give the camera a rotation with positive scale only."
            )
        return rot, mw[:3, 3].copy()


def _viewplane_factor(width: int, height: int, fit: str, pixel_aspect: float) -> tuple[float, bool]:
    """Blender's `viewfac` (pixels spanned by the fitted sensor size) and whether it is horizontal.

    Mirrors BKE_camera_params_compute_viewplane: with ycor = 1 / pixel_aspect, AUTO fits
    horizontally when width >= ycor * height.
    """
    ycor = 1.0 / pixel_aspect
    if fit == "AUTO":
        horizontal = width >= ycor * height
    else:
        horizontal = fit == "HORIZONTAL"
    return (float(width) if horizontal else ycor * height), horizontal


def blender_to_opencv(cam: BlenderCamera) -> OpenCVCamera:
    """Convert a Blender camera to an OpenCV camera in the same (Blender world) frame.

    Honours sensor fit, lens shift and pixel aspect as Blender's view plane does:
    ``f = lens * viewfac / sensor``, ``fx = f``, ``fy = f * pixel_aspect``,
    ``cx = W / 2 - shift_x * viewfac``, ``cy = H / 2 + shift_y * viewfac * pixel_aspect``,
    where viewfac is W (horizontal fit) or H / pixel_aspect (vertical fit) and the sensor
    size is sensor_height only for an explicit "VERTICAL" fit.

    Returns:
        OpenCVCamera whose extrinsics map Blender world points to OpenCV camera coordinates;
        use `camera_to_frame` to express it in another frame (e.g. canonical).
    """
    w, h = cam.resolution_x, cam.resolution_y
    viewfac, _ = _viewplane_factor(w, h, cam.sensor_fit, cam.pixel_aspect)
    sensor = cam.sensor_height if cam.sensor_fit == "VERTICAL" else cam.sensor_width
    f = cam.lens_mm * viewfac / sensor
    k = np.array(
        [
            [f, 0.0, 0.5 * w - cam.shift_x * viewfac],
            [0.0, f * cam.pixel_aspect, 0.5 * h + cam.shift_y * viewfac * cam.pixel_aspect],
            [0.0, 0.0, 1.0],
        ]
    )
    rot_c2w, position = cam.rotation_translation()
    r = _FLIP_YZ @ rot_c2w.T
    return OpenCVCamera(K=k, R=r, t=-r @ position, size=(h, w))


def opencv_to_blender(
    cv: OpenCVCamera, sensor_width: float = DEFAULT_SENSOR_WIDTH_MM
) -> BlenderCamera:
    """Convert an OpenCV camera (extrinsics in Blender world) to Blender camera settings.

    The result uses sensor_fit "AUTO" (Blender's default: the sensor width spans the longer
    image side) with the given sensor width, so it reproduces K exactly; fx != fy becomes a
    pixel aspect of fy / fx (set ``pixel_aspect_x = max(a, 1)`` and
    ``pixel_aspect_y = max(1 / a, 1)`` in Blender, whose fields must be >= 1).

    Raises:
        ValueError: when K has skew, which Blender cameras cannot represent.
    """
    k = cv.K
    fx, fy = k[0, 0], k[1, 1]
    if abs(k[0, 1]) > _TOL * fx:
        raise ValueError(
            f"K has skew {k[0, 1]:.6g}; Blender cameras cannot represent skewed pixels. "
            "Undistort/resample the image to a zero-skew K first."
        )
    h, w = cv.size
    pixel_aspect = fy / fx
    viewfac, _ = _viewplane_factor(w, h, "AUTO", pixel_aspect)
    rot_c2w = (_FLIP_YZ @ cv.R).T
    mw = np.eye(4)
    mw[:3, :3] = rot_c2w
    mw[:3, 3] = cv.center
    return BlenderCamera(
        matrix_world=mw,
        lens_mm=fx * sensor_width / viewfac,
        sensor_width=sensor_width,
        sensor_height=DEFAULT_SENSOR_HEIGHT_MM,
        sensor_fit="AUTO",
        shift_x=(0.5 * w - k[0, 2]) / viewfac,
        shift_y=(k[1, 2] - 0.5 * h) / (viewfac * pixel_aspect),
        resolution_x=w,
        resolution_y=h,
        pixel_aspect=pixel_aspect,
    )


class PyTorch3DCamera(NamedTuple):
    """PyTorch3D ``PerspectiveCameras`` parameters (NDC, ``in_ndc=True``) as numpy.

    Attributes:
        R: (3, 3) float64, row-vector rotation: ``X_cam = X_world @ R + T``.
        T: (3,) float64 translation.
        focal_length: (2,) float64 (fx, fy) in NDC units (pixels / (min(H, W) / 2)).
        principal_point: (2,) float64 (px, py) in NDC, +X left, +Y up.
        image_size: (H, W) in pixels.
    """

    R: np.ndarray
    T: np.ndarray
    focal_length: np.ndarray
    principal_point: np.ndarray
    image_size: tuple[int, int]


def opencv_to_pytorch3d(cv: OpenCVCamera) -> PyTorch3DCamera:
    """Convert an OpenCV camera to PyTorch3D PerspectiveCameras parameters (same world frame).

    Matches ``pytorch3d.utils.cameras_from_opencv_projection``: PyTorch3D's +X/+Y are
    OpenCV's -X/-Y, R is transposed for row vectors, and pixels map to NDC by
    ``ndc = -(pixel - size / 2) / (min(H, W) / 2)``.

    Raises:
        ValueError: when K has skew (PyTorch3D's PerspectiveCameras has none).
    """
    k = cv.K
    if abs(k[0, 1]) > _TOL * k[0, 0]:
        raise ValueError(
            f"K has skew {k[0, 1]:.6g}; PyTorch3D PerspectiveCameras cannot represent it."
        )
    h, w = cv.size
    half = 0.5 * min(h, w)
    r = cv.R.T @ _FLIP_XY
    t = _FLIP_XY @ cv.t
    focal = np.array([k[0, 0], k[1, 1]]) / half
    principal = -(np.array([k[0, 2], k[1, 2]]) - 0.5 * np.array([w, h])) / half
    return PyTorch3DCamera(
        R=r, T=t, focal_length=focal, principal_point=principal, image_size=(h, w)
    )


def pytorch3d_to_opencv(cam: PyTorch3DCamera) -> OpenCVCamera:
    """Inverse of `opencv_to_pytorch3d` (NDC PerspectiveCameras parameters -> OpenCV)."""
    h, w = (int(s) for s in cam.image_size)
    half = 0.5 * min(h, w)
    r = _matrix(cam.R, (3, 3), "R")
    t = _matrix(np.reshape(cam.T, -1), (3,), "T")
    focal = _matrix(np.reshape(cam.focal_length, -1), (2,), "focal_length") * half
    pp = -_matrix(np.reshape(cam.principal_point, -1), (2,), "principal_point") * half
    pp += 0.5 * np.array([w, h])
    k = np.array([[focal[0], 0.0, pp[0]], [0.0, focal[1], pp[1]], [0.0, 0.0, 1.0]])
    return OpenCVCamera(K=k, R=(r @ _FLIP_XY).T, t=_FLIP_XY @ t, size=(h, w))


def look_at_opencv(
    eye: np.ndarray, target: np.ndarray, up: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV extrinsics of a camera at `eye` looking at `target` with `up` pointing image-up.

    Args:
        eye: (3,) float, camera position, world frame.
        target: (3,) float, point imaged at the principal point, world frame.
        up: (3,) float, world direction that appears upwards in the image (need not be
            orthogonal to the viewing direction, but must not be parallel to it).

    Returns:
        (R (3, 3) float64, t (3,) float64) with ``x_cam = R @ x_world + t``.
    """
    eye_ = _matrix(np.reshape(eye, -1), (3,), "eye")
    target_ = _matrix(np.reshape(target, -1), (3,), "target")
    up_ = _matrix(np.reshape(up, -1), (3,), "up")
    forward = target_ - eye_
    dist = np.linalg.norm(forward)
    if dist == 0.0:
        raise ValueError("look_at_opencv: eye and target coincide; move the camera away.")
    forward /= dist
    right = np.cross(forward, up_)
    norm_right = np.linalg.norm(right)
    if norm_right <= _TOL * max(np.linalg.norm(up_), 1e-300):
        raise ValueError(
            "look_at_opencv: `up` is parallel to the viewing direction (or zero); "
            "pick an up vector that is not along target - eye."
        )
    right /= norm_right
    down = np.cross(forward, right)
    r = np.stack([right, down, forward])
    return r, -r @ eye_


def azimuth_elevation_camera(
    azimuth_deg: float,
    elevation_deg: float,
    distance: float,
    fov_deg: float,
    size: tuple[int, int],
) -> OpenCVCamera:
    """A camera on a sphere around the origin of the canonical frame, looking at the origin.

    Azimuth 0 puts the camera on +Z looking at the object's front; azimuth increases
    counter-clockwise seen from above (+Y), so azimuth 90 is on +X. Positive elevation is
    above the XZ plane; +/-90 looks straight down/up, with image-up pointing away from the
    azimuth direction (the limit of the general case, so no singularity).

    Args:
        azimuth_deg, elevation_deg: degrees.
        distance: positive, camera to origin, canonical units.
        fov_deg: full field of view across the *longer* image side, degrees (Blender's
            AUTO sensor fit: lens = 18 mm / tan(fov / 2) with a 36 mm sensor).
        size: (H, W) image size in pixels; the principal point is the image centre.

    Returns:
        OpenCVCamera with extrinsics in the canonical frame.
    """
    if not (math.isfinite(distance) and distance > 0.0):
        raise ValueError(f"distance must be positive and finite; got {distance}.")
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180); got {fov_deg}.")
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    # d(direction)/d(elevation): image-up, orthogonal to the view direction at every elevation.
    up = np.array([-math.sin(el) * math.sin(az), math.cos(el), -math.sin(el) * math.cos(az)])
    r, t = look_at_opencv(distance * direction, np.zeros(3), up)
    h, w = (int(s) for s in size)
    f = 0.5 * max(h, w) / math.tan(0.5 * math.radians(fov_deg))
    k = np.array([[f, 0.0, 0.5 * w], [0.0, f, 0.5 * h], [0.0, 0.0, 1.0]])
    return OpenCVCamera(K=k, R=r, t=t, size=(h, w))


def camera_to_frame(cv: OpenCVCamera, matrix: np.ndarray) -> OpenCVCamera:
    """Re-express a camera's extrinsics in another world frame.

    Args:
        cv: camera whose extrinsics map frame-A points to camera coordinates.
        matrix: (4, 4) float, similarity taking frame-A points to frame-B points,
            ``x_B = s * Q @ x_A + m`` (rotation Q, uniform scale s > 0), e.g.
            `blender_world_to_canonical_matrix(...)` or ``BLENDER_TO_CANONICAL``.

    Returns:
        The same camera with extrinsics in frame B: the same pixels for corresponding
        points. Camera-space lengths are scaled by s (depths are in frame-B units).

    Raises:
        ValueError: when `matrix` is not a similarity (non-uniform scale, shear,
            reflection); apply the object's scale in Blender or pass world-space points.
    """
    m = _matrix(matrix, (4, 4), "matrix")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
        raise ValueError("matrix must be affine (last row 0, 0, 0, 1).")
    a = m[:3, :3]
    det = np.linalg.det(a)
    if det <= 0.0:
        raise ValueError("matrix mirrors or collapses space (det <= 0); a camera cannot follow it.")
    s = det ** (1.0 / 3.0)
    q = a / s
    if not _is_rotation(q):
        raise ValueError(
            "matrix is not a similarity (it has non-uniform scale or shear); apply the "
            "object's scale in Blender (Ctrl+A > Scale) or pass world-space vertices."
        )
    r = cv.R @ q.T
    return OpenCVCamera(K=cv.K, R=r, t=s * cv.t - r @ m[:3, 3], size=cv.size)
