"""Tests for blender_addon.conventions (frames, normalisation, cameras) and backend.core.cameras.

The strongest checks use the real things: Blender's own projection
(``bpy_extras.object_utils.world_to_camera_view`` on a bpy camera) and PyTorch3D's own
OpenCV converters and ``transform_points_screen``.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from blender_addon import conventions as C

ROOT = Path(__file__).resolve().parents[1]


def assert_close(actual: np.ndarray, expected: np.ndarray, atol: float, what: str = "") -> None:
    """Assert |actual - expected| <= atol everywhere, reporting where the largest gap is."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    diff = np.abs(actual - expected)
    if diff.size and diff.max() > atol:
        idx = np.unravel_index(int(diff.argmax()), diff.shape)
        pytest.fail(
            f"{what}: max |diff| {diff.max():.3g} > {atol:.3g} at index {idx}: "
            f"actual {actual[idx]!r}, expected {expected[idx]!r}"
        )


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_similarity(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rng.uniform(0.3, 3.0) * random_rotation(rng)
    m[:3, 3] = rng.normal(size=3) * 2.0
    return m


def random_opencv(
    rng: np.random.Generator, square_pixels: bool = False, max_size: int = 1500
) -> C.OpenCVCamera:
    h, w = (int(x) for x in rng.integers(40, max_size, size=2))
    fx = rng.uniform(0.3, 3.0) * max(h, w)
    fy = fx if square_pixels else fx * rng.uniform(0.4, 2.5)
    k = np.array(
        [[fx, 0.0, w * rng.uniform(0.2, 0.8)], [0.0, fy, h * rng.uniform(0.2, 0.8)], [0, 0, 1]]
    )
    r = random_rotation(rng)
    return C.OpenCVCamera(K=k, R=r, t=rng.normal(size=3) * 3.0, size=(h, w))


def points_in_front(cv: C.OpenCVCamera, rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """(n, 3) world points in front of `cv` (depth 0.5..10), inside a wide frustum."""
    cam = np.c_[rng.uniform(-1, 1, (n, 2)), np.ones(n)] * rng.uniform(0.5, 10.0, (n, 1))
    return (cam - cv.t) @ cv.R  # inverse of R @ x + t


def object_view_camera(rng: np.random.Generator, square_pixels: bool = False) -> C.OpenCVCamera:
    """A random-K camera 1.5..3 units from the origin looking at it (the canonical setting).

    PyTorch3D projects in float32 only (its NDC transforms are hard-coded float32), so the
    1e-4 px checks use this well-conditioned setting (images <= 256 px, unit-cube points).
    """
    intr = random_opencv(rng, square_pixels=square_pixels, max_size=256)
    ext = C.azimuth_elevation_camera(
        rng.uniform(-180, 180), rng.uniform(-80, 80), rng.uniform(1.5, 3.0), 50.0, intr.size
    )
    return C.OpenCVCamera(K=intr.K, R=ext.R, t=ext.t, size=intr.size)


def unit_cube_points(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    return rng.uniform(-0.5, 0.5, size=(n, 3))


# --------------------------------------------------------------------------------------
# Frames


def test_blender_to_canonical_axes() -> None:
    b2c = C.BLENDER_TO_CANONICAL
    assert_close(b2c @ C.CANONICAL_TO_BLENDER, np.eye(4), 0.0, "inverse")
    assert np.linalg.det(b2c[:3, :3]) == pytest.approx(1.0)  # right-handed stays right-handed
    axes = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # Blender right, up, front (-Y)
    expected = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]])  # canonical right, up, front (+Z)
    assert_close(C.blender_to_canonical_points(axes), expected, 0.0, "axes")
    assert_close(C.canonical_to_blender_points(expected), axes, 0.0, "axes back")


def test_frame_round_trip_random() -> None:
    p = np.random.default_rng(1).normal(size=(100, 3))
    assert_close(C.canonical_to_blender_points(C.blender_to_canonical_points(p)), p, 1e-15)
    assert_close(C.blender_to_canonical_points(C.canonical_to_blender_points(p)), p, 1e-15)


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.zeros(3), np.array([[0.0, np.nan, 0.0]])])
def test_points_validation(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="points"):
        C.blender_to_canonical_points(bad)


# --------------------------------------------------------------------------------------
# Normalisation


def test_normalize_cube_fills_unit_cube() -> None:
    rng = np.random.default_rng(2)
    p = rng.normal(size=(500, 3)) * [3.0, 0.5, 1.0] + [10.0, -4.0, 2.0]
    pn, norm = C.normalize_to_unit_cube(p)
    size = pn.max(0) - pn.min(0)
    assert size.max() == pytest.approx(1.0)
    assert_close(0.5 * (pn.max(0) + pn.min(0)), np.zeros(3), 1e-12, "bbox centre")
    assert (np.abs(pn) <= 0.5 + 1e-12).all()
    assert_close(C.denormalize(pn, norm), p, 1e-12, "denormalize")
    homog = np.c_[p, np.ones(len(p))]
    assert_close((homog @ norm.matrix().T)[:, :3], pn, 1e-12, "matrix")
    assert_close(norm.inverse_matrix() @ norm.matrix(), np.eye(4), 1e-12, "inverse matrix")


@pytest.mark.parametrize("extent", [1.0, 2.0])
def test_normalize_sphere(extent: float) -> None:
    p = np.random.default_rng(3).uniform(-7, 3, size=(300, 3))
    pn, norm = C.normalize_to_unit_cube(p, mode="sphere", extent=extent)
    assert np.linalg.norm(pn, axis=1).max() == pytest.approx(extent / 2)
    assert_close(C.denormalize(pn, norm), p, 1e-12)


def test_normalize_errors() -> None:
    with pytest.raises(ValueError, match="coincide"):
        C.normalize_to_unit_cube(np.ones((5, 3)))
    with pytest.raises(ValueError, match="empty"):
        C.normalize_to_unit_cube(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="mode"):
        C.normalize_to_unit_cube(np.eye(3), mode="ball")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        C.Normalization(center=np.zeros(3), scale=0.0)


def test_blender_local_canonical_round_trip() -> None:
    rng = np.random.default_rng(4)
    # A "chair" in Blender local: tall along Z, front towards -Y.
    v = rng.uniform([-0.3, -0.25, 0.0], [0.3, 0.25, 1.1], size=(400, 3))
    front_point = np.array([[0.0, -0.25, 0.5]])
    pts, tf = C.blender_local_to_canonical(np.r_[v, front_point])
    assert pts[:, 1].ptp() == pytest.approx(1.0)  # Blender Z (height) became canonical Y
    assert pts[-1, 2] == pytest.approx(pts[:, 2].max())  # Blender -Y front became +Z
    assert_close(C.canonical_to_blender_local(pts, tf), np.r_[v, front_point], 1e-12, "round")
    homog = np.c_[v, np.ones(len(v))]
    assert_close((homog @ tf.matrix().T)[:, :3], pts[:-1], 1e-12, "matrix")
    assert_close(tf.inverse_matrix() @ tf.matrix(), np.eye(4), 1e-12, "inverse matrix")
    # An offset predicted in the unit cube maps to the same offset of the Blender positions.
    offsets = rng.normal(size=(400, 3)) * 0.05
    moved = C.canonical_to_blender_local(pts[:-1] + offsets, tf)
    assert_close(moved - v, tf.vectors_to_blender(offsets), 1e-12, "vectors")


# --------------------------------------------------------------------------------------
# Blender camera <-> OpenCV, against the real Blender projection


@pytest.fixture(scope="module")
def blender_scene():
    bpy = pytest.importorskip("bpy")
    scene = bpy.context.scene
    data = bpy.data.cameras.new("sb_test_camera")
    obj = bpy.data.objects.new("sb_test_camera", data)
    scene.collection.objects.link(obj)
    yield bpy, scene, obj
    bpy.data.objects.remove(obj)
    bpy.data.cameras.remove(data)


def configure_bpy_camera(scene, obj, rng: np.random.Generator, fit: str, pixel_aspect: float):
    """Randomise a real bpy camera and render settings; return the matching BlenderCamera."""
    from mathutils import Matrix, Vector

    data = obj.data
    data.type = "PERSP"
    data.sensor_fit = fit
    data.lens = rng.uniform(10.0, 120.0)
    data.sensor_width = rng.uniform(10.0, 50.0)
    data.sensor_height = rng.uniform(10.0, 50.0)
    data.shift_x, data.shift_y = rng.uniform(-0.6, 0.6, size=2)
    render = scene.render
    render.resolution_x, render.resolution_y = (int(x) for x in rng.integers(32, 2000, size=2))
    render.resolution_percentage = 100
    render.pixel_aspect_x = max(pixel_aspect, 1.0)
    render.pixel_aspect_y = max(1.0 / pixel_aspect, 1.0)
    obj.matrix_world = (
        Matrix.Translation(Vector(rng.normal(size=3) * 3.0))
        @ Matrix.Rotation(rng.uniform(0.0, 2 * math.pi), 4, Vector(rng.normal(size=3)))
        @ Matrix.Scale(rng.uniform(0.5, 2.0), 4)  # Blender ignores camera scale; so must we
    )
    return C.BlenderCamera(
        matrix_world=np.array(obj.matrix_world),
        lens_mm=data.lens,
        sensor_width=data.sensor_width,
        sensor_height=data.sensor_height,
        sensor_fit=data.sensor_fit,
        shift_x=data.shift_x,
        shift_y=data.shift_y,
        resolution_x=render.resolution_x,
        resolution_y=render.resolution_y,
        pixel_aspect=render.pixel_aspect_x / render.pixel_aspect_y,
    )


def blender_pixels(scene, obj, points: np.ndarray) -> np.ndarray:
    """Project world points with Blender's own world_to_camera_view; (N, 2) pixels, y down."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    ndc = np.array([tuple(world_to_camera_view(scene, obj, Vector(p))) for p in points])
    w, h = scene.render.resolution_x, scene.render.resolution_y
    return np.c_[ndc[:, 0] * w, (1.0 - ndc[:, 1]) * h]


@pytest.mark.parametrize("fit", ["AUTO", "HORIZONTAL", "VERTICAL"])
@pytest.mark.parametrize("pixel_aspect", [1.0, 1.7, 1 / 2.3])
def test_blender_to_opencv_matches_bpy(blender_scene, fit: str, pixel_aspect: float) -> None:
    _, scene, obj = blender_scene
    rng = np.random.default_rng(
        [["AUTO", "HORIZONTAL", "VERTICAL"].index(fit), int(pixel_aspect * 100)]
    )
    for _ in range(6):
        cam = configure_bpy_camera(scene, obj, rng, fit, pixel_aspect)
        cv = C.blender_to_opencv(cam)
        pts = points_in_front(cv, rng)
        expected = blender_pixels(scene, obj, pts)
        # bpy's mathutils is float32: allow ~2e-6 of the image size.
        tol = 2e-6 * max(cv.size) * 10
        assert_close(cv.project(pts), expected, tol, f"{fit} aspect {pixel_aspect}")
        assert_close(cv.center, np.array(obj.matrix_world.translation), 1e-5, "centre")


def test_opencv_to_blender_reproduces_K_in_bpy(blender_scene) -> None:
    """An OpenCV camera written into a real bpy camera projects the same pixels."""
    _, scene, obj = blender_scene
    from mathutils import Matrix

    rng = np.random.default_rng(7)
    for i in range(12):
        cv = random_opencv(rng, square_pixels=i % 2 == 0)
        cam = C.opencv_to_blender(cv)
        obj.data.sensor_fit, obj.data.lens = cam.sensor_fit, cam.lens_mm
        obj.data.sensor_width, obj.data.sensor_height = cam.sensor_width, cam.sensor_height
        obj.data.shift_x, obj.data.shift_y = cam.shift_x, cam.shift_y
        scene.render.resolution_x, scene.render.resolution_y = cam.resolution_x, cam.resolution_y
        scene.render.pixel_aspect_x = max(cam.pixel_aspect, 1.0)
        scene.render.pixel_aspect_y = max(1.0 / cam.pixel_aspect, 1.0)
        obj.matrix_world = Matrix(cam.matrix_world.tolist())
        pts = points_in_front(cv, rng)
        assert_close(blender_pixels(scene, obj, pts), cv.project(pts), 2e-5 * max(cv.size), "K")


def test_blender_opencv_round_trips() -> None:
    rng = np.random.default_rng(8)
    for i in range(50):
        cv = random_opencv(rng, square_pixels=i % 3 == 0)
        back = C.blender_to_opencv(C.opencv_to_blender(cv))
        assert back.size == cv.size
        assert_close(back.K, cv.K, 1e-9 * max(cv.size), "K")
        assert_close(back.R, cv.R, 1e-12, "R")
        assert_close(back.t, cv.t, 1e-12, "t")
    # Blender -> OpenCV -> Blender keeps the projection (the settings may be re-expressed
    # with sensor_fit AUTO and a 36 mm sensor, so compare the cameras through OpenCV).
    for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
        mw = np.eye(4)
        mw[:3, :3], mw[:3, 3] = random_rotation(rng), rng.normal(size=3)
        cam = C.BlenderCamera(mw, 50.0, 32.0, 18.0, fit, 0.1, -0.2, 640, 480, 1.3)
        cv = C.blender_to_opencv(cam)
        again = C.opencv_to_blender(cv)
        assert_close(again.matrix_world, mw, 1e-12, "matrix_world")
        assert again.pixel_aspect == pytest.approx(1.3)
        cv2 = C.blender_to_opencv(again)
        assert_close(cv2.K, cv.K, 1e-9, f"K via Blender ({fit})")


def test_default_blender_camera_intrinsics() -> None:
    """Blender's default camera: 50 mm lens on a 36 mm sensor, 1920 x 1080."""
    cam = C.BlenderCamera(np.eye(4), 50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 1920, 1080)
    cv = C.blender_to_opencv(cam)
    assert_close(cv.K, [[1920 * 50 / 36, 0, 960], [0, 1920 * 50 / 36, 540], [0, 0, 1]], 1e-9)
    # Camera at the origin looking down -Z: a point on -Z lands on the principal point.
    assert_close(cv.project(np.array([[0.0, 0.0, -5.0]])), [[960.0, 540.0]], 1e-9)
    # Blender +Y (camera up) is image up, i.e. smaller v.
    assert cv.project(np.array([[0.0, 1.0, -5.0]]))[0, 1] < 540.0


def test_float32_cameras_from_the_wire_are_accepted() -> None:
    """The bridge sends K, R, t as float32; the rounded rotation must still be accepted."""
    rng = np.random.default_rng(16)
    for _ in range(200):
        cv = random_opencv(rng)
        f32 = C.OpenCVCamera(
            K=cv.K.astype(np.float32),
            R=cv.R.astype(np.float32),
            t=cv.t.astype(np.float32),
            size=cv.size,
        )
        assert_close(C.blender_to_opencv(C.opencv_to_blender(f32)).K, f32.K, 1e-6, "K")


def test_camera_errors() -> None:
    cv = random_opencv(np.random.default_rng(9))
    k = cv.K.copy()
    k[0, 1] = 3.0
    skewed = C.OpenCVCamera(K=k, R=cv.R, t=cv.t, size=cv.size)
    with pytest.raises(ValueError, match="skew"):
        C.opencv_to_blender(skewed)
    with pytest.raises(ValueError, match="skew"):
        C.opencv_to_pytorch3d(skewed)
    with pytest.raises(ValueError, match="rotation"):
        C.OpenCVCamera(K=cv.K, R=2 * cv.R, t=cv.t, size=cv.size)
    with pytest.raises(ValueError, match="size"):
        C.OpenCVCamera(K=cv.K, R=cv.R, t=cv.t, size=(0, 10))
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    cam = C.BlenderCamera(sheared, 50.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 64, 64)
    with pytest.raises(ValueError, match="shear"):
        C.blender_to_opencv(cam)
    with pytest.raises(ValueError, match="sensor_fit"):
        fit: str = "WIDE"
        C.BlenderCamera(np.eye(4), 50.0, 36.0, 24.0, fit, 0.0, 0.0, 64, 64)  # type: ignore
    with pytest.raises(ValueError, match="lens_mm"):
        C.BlenderCamera(np.eye(4), -1.0, 36.0, 24.0, "AUTO", 0.0, 0.0, 64, 64)


# --------------------------------------------------------------------------------------
# OpenCV <-> PyTorch3D, against PyTorch3D itself


def test_opencv_to_pytorch3d_matches_pytorch3d() -> None:
    torch = pytest.importorskip("torch")
    from pytorch3d.utils import cameras_from_opencv_projection

    rng = np.random.default_rng(10)
    for i in range(20):
        # Parameters are compared in float64, the projection in PyTorch3D's float32.
        cv = random_opencv(rng, square_pixels=i % 2 == 0) if i % 2 else object_view_camera(rng)
        p3 = C.opencv_to_pytorch3d(cv)
        ref = cameras_from_opencv_projection(
            R=torch.tensor(cv.R[None]),
            tvec=torch.tensor(cv.t[None]),
            camera_matrix=torch.tensor(cv.K[None]),
            image_size=torch.tensor([cv.size], dtype=torch.float64),
        )
        assert_close(p3.R, ref.R[0].numpy(), 1e-12, "R")
        assert_close(p3.T, ref.T[0].numpy(), 1e-12, "T")
        assert_close(p3.focal_length, ref.focal_length[0].numpy(), 1e-12, "focal")
        assert_close(p3.principal_point, ref.principal_point[0].numpy(), 1e-12, "principal")
        # PyTorch3D projection of our parameters equals the OpenCV projection.
        from pytorch3d.renderer import PerspectiveCameras

        f32 = torch.float32
        ours = PerspectiveCameras(
            R=torch.tensor(p3.R[None], dtype=f32),
            T=torch.tensor(p3.T[None], dtype=f32),
            focal_length=torch.tensor(p3.focal_length[None], dtype=f32),
            principal_point=torch.tensor(p3.principal_point[None], dtype=f32),
            image_size=torch.tensor([p3.image_size]),
            in_ndc=True,
        )
        if i % 2 == 0:
            pts = unit_cube_points(rng)
            screen = ours.transform_points_screen(torch.tensor(pts[None], dtype=f32))[0, :, :2]
            assert_close(screen.numpy(), cv.project(pts), 1e-4, "PyTorch3D vs OpenCV pixels")
        back = C.pytorch3d_to_opencv(p3)
        assert_close(back.K, cv.K, 1e-9, "K round trip")
        assert_close(back.R, cv.R, 1e-12, "R round trip")
        assert_close(back.t, cv.t, 1e-12, "t round trip")
        assert back.size == cv.size


def test_pytorch3d_row_vector_convention() -> None:
    """X_cam = X_world @ R + T with +X left, +Y up: the OpenCV camera point with x, y negated."""
    cv = random_opencv(np.random.default_rng(11))
    p3 = C.opencv_to_pytorch3d(cv)
    pts = points_in_front(cv, np.random.default_rng(12))
    assert_close(pts @ p3.R + p3.T, cv.world_to_camera(pts) * [-1, -1, 1], 1e-12)


# --------------------------------------------------------------------------------------
# look-at, azimuth/elevation, frame changes


def test_look_at_opencv() -> None:
    rng = np.random.default_rng(13)
    for _ in range(20):
        eye, target = rng.normal(size=3) * 4, rng.normal(size=3)
        up = rng.normal(size=3)
        r, t = C.look_at_opencv(eye, target, up)
        cv = C.OpenCVCamera(
            K=np.diag([100.0, 100.0, 1.0]) + [[0, 0, 50], [0, 0, 50], [0, 0, 0]],
            R=r,
            t=t,
            size=(100, 100),
        )
        assert_close(cv.center, eye, 1e-12, "centre")
        assert_close(cv.project(target[None]), [[50.0, 50.0]], 1e-9, "target at centre")
        above = cv.world_to_camera((target + 0.1 * up)[None])[0]
        assert above[1] < 0  # `up` points to smaller v (OpenCV y is down)
    with pytest.raises(ValueError, match="parallel"):
        C.look_at_opencv(np.array([0, 0, 1.0]), np.zeros(3), np.array([0, 0, 2.0]))
    with pytest.raises(ValueError, match="coincide"):
        C.look_at_opencv(np.zeros(3), np.zeros(3), np.array([0, 1.0, 0]))


def test_azimuth_elevation_camera() -> None:
    cam0 = C.azimuth_elevation_camera(0.0, 0.0, 2.0, 40.0, (64, 96))
    assert_close(cam0.center, [0.0, 0.0, 2.0], 1e-12, "azimuth 0 is on +Z")
    # Front point (+Z) is nearer than the back point; +Y is image up; +X is image right.
    depth = cam0.world_to_camera(np.array([[0, 0, 0.5], [0, 0, -0.5]]))[:, 2]
    assert depth[0] < depth[1]
    uv = cam0.project(np.array([[0.0, 0.3, 0.0], [0.3, 0.0, 0.0]]))
    assert uv[0, 1] < 32.0 and uv[1, 0] > 48.0
    # Counter-clockwise seen from above: azimuth 90 sits on +X.
    assert_close(C.azimuth_elevation_camera(90.0, 0, 2.0, 40.0, (64, 64)).center, [2, 0, 0], 1e-12)
    cam = C.azimuth_elevation_camera(30.0, 25.0, 3.0, 40.0, (64, 64))
    el = math.degrees(math.asin(cam.center[1] / 3.0))
    az = math.degrees(math.atan2(cam.center[0], cam.center[2]))
    assert (az, el) == (pytest.approx(30.0), pytest.approx(25.0))
    # Field of view across the longer side: a point on the fov edge projects to the border.
    edge = np.array([[2.0 * math.tan(math.radians(20.0)), 0.0, 0.0]])
    assert_close(cam0.project(edge)[:, 0], [96.0], 1e-9, "fov")
    # Straight down is the smooth limit of nearly straight down.
    top = C.azimuth_elevation_camera(45.0, 90.0, 2.0, 40.0, (64, 64))
    near = C.azimuth_elevation_camera(45.0, 90.0 - 1e-7, 2.0, 40.0, (64, 64))
    assert_close(top.R, near.R, 1e-6, "elevation 90 continuity")
    # The fov matches Blender's lens with a 36 mm sensor on the longer side.
    assert C.opencv_to_blender(cam0).lens_mm == pytest.approx(18.0 / math.tan(math.radians(20)))


def test_camera_to_frame_blender_world_to_canonical() -> None:
    """A Blender scene camera re-expressed in an object's canonical frame sees the same pixels."""
    rng = np.random.default_rng(14)
    for _ in range(10):
        local = rng.uniform(-1, 1, size=(200, 3)) * [0.4, 0.3, 1.0]
        obj_mw = random_similarity(rng)
        world = local @ obj_mw[:3, :3].T + obj_mw[:3, 3]
        canonical, tf = C.blender_local_to_canonical(local)
        cv_world = C.look_at_opencv(
            obj_mw[:3, 3] + rng.normal(size=3) * 8, obj_mw[:3, 3], np.array([0, 0, 1.0])
        )
        k = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
        cam = C.OpenCVCamera(K=k, R=cv_world[0], t=cv_world[1], size=(240, 320))
        m = C.blender_world_to_canonical_matrix(obj_mw, tf)
        cam_c = C.camera_to_frame(cam, m)
        assert_close(cam_c.project(canonical), cam.project(world), 1e-8, "pixels")
        back = C.camera_to_frame(cam_c, np.linalg.inv(m))
        assert_close(back.R, cam.R, 1e-12, "R")
        assert_close(back.t, cam.t, 1e-10, "t")
    stretched = np.diag([1.0, 2.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="similarity"):
        C.camera_to_frame(cam, stretched)
    with pytest.raises(ValueError, match="mirror"):
        C.camera_to_frame(cam, np.diag([-1.0, 1.0, 1.0, 1.0]))


# --------------------------------------------------------------------------------------
# backend.core.cameras (torch side)


def test_backend_cameras_from_blender_and_back() -> None:
    torch = pytest.importorskip("torch")
    from backend.core import cameras as BC

    rng = np.random.default_rng(15)
    cams, cvs = [], []
    for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
        # Blender cameras looking at an object at the origin from 1.5..3 m.
        mw = C.opencv_to_blender(object_view_camera(rng)).matrix_world
        cam = C.BlenderCamera(mw, rng.uniform(20, 80), 36.0, 24.0, fit, 0.05, -0.1, 320, 240)
        cams.append(cam)
        cvs.append(C.blender_to_opencv(cam))
    # Projection (PyTorch3D projects in float32 only).
    batch = BC.pytorch3d_cameras_from_blender(cams)
    assert len(batch) == 3 and batch.R.dtype == torch.float32
    for i, cv in enumerate(cvs):
        pts = unit_cube_points(rng)
        screen = batch[i].transform_points_screen(torch.tensor(pts[None], dtype=torch.float32))
        assert_close(screen[0, :, :2].numpy(), cv.project(pts), 1e-4, "PyTorch3D vs OpenCV")
    # Exact parameter round trip in float64.
    batch64 = BC.pytorch3d_cameras_from_blender(cams, dtype=torch.float64)
    for cv, back in zip(cvs, BC.opencv_from_pytorch3d_cameras(batch64), strict=True):
        assert back.size == cv.size
        assert_close(back.K, cv.K, 1e-8, "K")
        assert_close(back.R, cv.R, 1e-10, "R")
        assert_close(back.t, cv.t, 1e-10, "t")
    # In the canonical frame of an object 2 m across standing at the world origin.
    _, tf = C.blender_local_to_canonical(rng.uniform(-1.0, 1.0, size=(100, 3)))
    m = C.blender_world_to_canonical_matrix(np.eye(4), tf)
    canon = BC.pytorch3d_cameras_from_blender(cams[0], frame_matrix=m)
    cv_c = C.camera_to_frame(cvs[0], m)
    pts = unit_cube_points(rng)
    screen = canon.transform_points_screen(torch.tensor(pts[None], dtype=torch.float32))
    assert_close(screen[0, :, :2].numpy(), cv_c.project(pts), 1e-4, "canonical frame")
    with pytest.raises(ValueError, match="at least one"):
        BC.pytorch3d_cameras_from_opencv([])


# --------------------------------------------------------------------------------------
# Structure


def test_conventions_imports_only_numpy() -> None:
    tree = ast.parse((ROOT / "blender_addon" / "conventions.py").read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots <= {"__future__", "math", "dataclasses", "typing", "numpy"}, roots
