"""PyTorch3D renders of a procedural shape: RGB, silhouette, depth, normals and cameras.

Camera conventions (the stored OpenCV camera is the single truth):

- Orbit: the camera sits on a sphere of radius ``distance`` around the origin of the
  canonical frame (Y-up, right-handed, front facing +Z) and looks at the origin with the
  world +Y axis up in the image. Its centre is
  ``distance * (cos(el) sin(az), sin(el), cos(el) cos(az))``: azimuth 0 looks at the
  front (camera on +Z), azimuth 90 deg puts the camera on +X, azimuth grows
  counter-clockwise seen from above (+Y); elevation is positive above the horizon.
- OpenCV: ``x_cam = R @ x_world + t``; camera x right, y down, z forward (into the scene).
  Pixel ``(u, v) = (K @ x_cam)[:2] / z``, with ``u`` along image columns and ``v`` along
  rows. Pixel ``(row i, col j)`` covers ``u in [j, j + 1)``, so its centre is at
  ``(j + 0.5, i + 0.5)`` and the principal point of a centred camera is ``(W / 2, H / 2)``.
  This is the convention of ``pytorch3d.utils.cameras_from_opencv_projection``, which
  turns the stored ``K, R, t`` into the PyTorch3D ``PerspectiveCameras`` used to render.
- Depth: camera-frame z (distance along the optical axis, not along the ray) of the
  nearest surface; 0 where the pixel sees background.
- Normals: unit surface normals in the world (canonical) frame, oriented toward the
  camera; 0 where the pixel sees background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

# A fixed palette, indexed by part label id (cycled if there are more labels).
PALETTE = np.array(
    [
        [0.80, 0.33, 0.25],
        [0.25, 0.52, 0.80],
        [0.93, 0.70, 0.22],
        [0.35, 0.70, 0.40],
        [0.62, 0.40, 0.75],
        [0.30, 0.75, 0.75],
        [0.85, 0.50, 0.65],
        [0.55, 0.45, 0.32],
        [0.60, 0.62, 0.65],
        [0.78, 0.80, 0.35],
    ],
    dtype=np.float32,
)

BackgroundKind = Literal["solid", "gradient", "noise"]


@dataclass(frozen=True)
class RenderConfig:
    """How the views of one shape are chosen, lit and rasterised."""

    resolution: int = 128
    """Image width and height in pixels."""
    views: int = 8
    """Views rendered per shape (all in one rasteriser call)."""
    fov_deg: float = 40.0
    """Full field of view, in degrees (square images, so horizontal = vertical)."""
    distance: float = 2.6
    """Camera distance from the origin (the unit cube fits the view from 2.6 at 40 deg)."""
    azimuth_mode: Literal["even", "uniform"] = "even"
    """'even': evenly spaced from a random start, each jittered; 'uniform': i.i.d. uniform."""
    azimuth_jitter_deg: float = 10.0
    """Uniform jitter (+-) added to evenly spaced azimuths."""
    elevation_range_deg: tuple[float, float] = (-10.0, 40.0)
    """Elevation drawn uniformly in this range (degrees above the horizon)."""
    light_azimuth_range_deg: float = 60.0
    """Light direction azimuth, relative to the camera's, drawn in +-this range."""
    light_elevation_range_deg: tuple[float, float] = (15.0, 65.0)
    """Light direction elevation above the horizon, drawn uniformly in this range."""
    colour_jitter: float = 0.06
    """Std of the Gaussian jitter added to each part's palette colour (RGB in [0, 1])."""
    backgrounds: tuple[BackgroundKind, ...] = ("solid", "gradient", "noise")
    """Background kinds, drawn uniformly per view."""
    ambient: float = 0.35
    diffuse: float = 0.65
    specular: float = 0.2
    shininess: float = 16.0
    tile_size: int | None = 16
    """CPU only: rasterise in square tiles of this many pixels, each with only the faces
    that overlap it (PyTorch3D has no coarse-to-fine kernel on CPU; its naive kernel tests
    every face at every pixel). None: one naive call over the whole image."""
    bin_size: int | None = None
    """CUDA only: PyTorch3D coarse-to-fine bin size (None: its heuristic)."""


@dataclass(frozen=True)
class Renders:
    """V views of one shape. Cameras in OpenCV convention (see the module docstring)."""

    rgb: np.ndarray
    """(V, H, W, 3) uint8, shaded parts over the background."""
    mask: np.ndarray
    """(V, H, W) bool, True where the shape covers the pixel centre."""
    depth: np.ndarray
    """(V, H, W) float32, camera-frame z of the surface; 0 on background."""
    normals: np.ndarray
    """(V, H, W, 3) float16, unit world-frame normals facing the camera; 0 on background."""
    part_labels: np.ndarray
    """(V, H, W) uint8, part label id of the visible surface; 255 on background."""
    K: np.ndarray
    """(V, 3, 3) float32 intrinsics (pixels)."""
    R: np.ndarray
    """(V, 3, 3) float32 world-to-camera rotation, OpenCV."""
    t: np.ndarray
    """(V, 3) float32 world-to-camera translation, OpenCV."""
    azimuth: np.ndarray
    """(V,) float32 degrees (see the module docstring)."""
    elevation: np.ndarray
    """(V,) float32 degrees."""
    distance: np.ndarray
    """(V,) float32 camera distance from the origin."""
    light_dir: np.ndarray
    """(V, 3) float32 unit world-frame direction toward the light."""
    p3d_R: np.ndarray
    """(V, 3, 3) float32 PyTorch3D PerspectiveCameras R (row-vector convention)."""
    p3d_T: np.ndarray
    """(V, 3) float32 PyTorch3D PerspectiveCameras T."""
    p3d_focal_length: np.ndarray
    """(V, 2) float32 PyTorch3D focal length in NDC units."""
    p3d_principal_point: np.ndarray
    """(V, 2) float32 PyTorch3D principal point in NDC units."""

    def as_dict(self) -> dict[str, np.ndarray]:
        """All fields by name (the store writes them under these names)."""
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


def intrinsics(resolution: int, fov_deg: float) -> np.ndarray:
    """Pinhole intrinsics of a square image with a centred principal point.

    Returns K: (3, 3) float32, ``fx = fy = (W / 2) / tan(fov / 2)``, ``cx = cy = W / 2``.
    """
    if resolution <= 0 or not 0.0 < fov_deg < 180.0:
        raise ValueError(
            f"resolution must be > 0 and fov_deg in (0, 180); got {resolution} and {fov_deg}"
        )
    f = (resolution / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    c = resolution / 2.0
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]], dtype=np.float32)


def orbit_direction(azimuth_deg: np.ndarray, elevation_deg: np.ndarray) -> np.ndarray:
    """Unit vectors ``(cos(el) sin(az), sin(el), cos(el) cos(az))``, canonical frame.

    azimuth_deg, elevation_deg: (V,) degrees. Returns (V, 3) float64.
    """
    az = np.radians(np.asarray(azimuth_deg, dtype=np.float64))
    el = np.radians(np.asarray(elevation_deg, dtype=np.float64))
    return np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], axis=-1)


def orbit_cameras(
    azimuth_deg: np.ndarray, elevation_deg: np.ndarray, distance: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV extrinsics of cameras on a sphere looking at the origin, world +Y up.

    azimuth_deg, elevation_deg, distance: (V,) float arrays (degrees, degrees, units).
    Returns R: (V, 3, 3) float32 and t: (V, 3) float32 with ``x_cam = R @ x_world + t``.
    """
    d = np.asarray(distance, dtype=np.float64)
    if np.any(np.abs(np.asarray(elevation_deg)) >= 89.0):
        raise ValueError("elevation must stay within (-89, 89) degrees; the up vector degenerates")
    if np.any(d <= 0):
        raise ValueError("camera distance must be positive")
    centre = d[:, None] * orbit_direction(azimuth_deg, elevation_deg)
    forward = -centre / np.linalg.norm(centre, axis=-1, keepdims=True)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right, axis=-1, keepdims=True)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward], axis=1)  # rows: camera x, y, z in world coordinates
    t = -np.einsum("vij,vj->vi", R, centre)
    return R.astype(np.float32), t.astype(np.float32)


def project_points(
    points: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Project world points through OpenCV cameras.

    points: (N, 3) float, world (canonical) frame. K: (V, 3, 3), R: (V, 3, 3), t: (V, 3).
    Returns uv: (V, N, 2) float64 pixel coordinates (u = column, v = row, pixel centres at
    +0.5) and z: (V, N) float64 camera-frame depth.
    """
    x = np.einsum("vij,nj->vni", R.astype(np.float64), points.astype(np.float64))
    x = x + t[:, None, :].astype(np.float64)
    p = np.einsum("vij,vnj->vni", K.astype(np.float64), x)
    return p[..., :2] / p[..., 2:3], x[..., 2]


def sample_views(config: RenderConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw per-view azimuth, elevation, distance and light direction (all (V,) / (V, 3)).

    Light direction: azimuth within +-light_azimuth_range_deg of the camera's, elevation in
    light_elevation_range_deg, so the side facing the camera is lit; unit, world frame.
    """
    v = config.views
    if v <= 0:
        raise ValueError(f"views must be >= 1; got {v}")
    if config.azimuth_mode == "even":
        start = rng.uniform(0.0, 360.0)
        jitter = rng.uniform(-config.azimuth_jitter_deg, config.azimuth_jitter_deg, v)
        azimuth = (start + 360.0 * np.arange(v) / v + jitter) % 360.0
    elif config.azimuth_mode == "uniform":
        azimuth = rng.uniform(0.0, 360.0, v)
    else:
        raise ValueError(f"azimuth_mode must be 'even' or 'uniform'; got {config.azimuth_mode!r}")
    lo, hi = config.elevation_range_deg
    elevation = rng.uniform(lo, hi, v)
    distance = np.full(v, config.distance)
    spread = config.light_azimuth_range_deg
    light_az = azimuth + rng.uniform(-spread, spread, v)
    light_dir = orbit_direction(light_az, rng.uniform(*config.light_elevation_range_deg, v))
    return {
        "azimuth": azimuth.astype(np.float32),
        "elevation": elevation.astype(np.float32),
        "distance": distance.astype(np.float32),
        "light_dir": light_dir.astype(np.float32),
    }


def backgrounds(
    kinds: tuple[BackgroundKind, ...], views: int, resolution: int, rng: np.random.Generator
) -> np.ndarray:
    """Seeded random backgrounds: solid colour, linear gradient or smooth value noise.

    Returns (V, H, W, 3) float32 RGB in [0, 1].
    """
    h = w = resolution
    out = np.empty((views, h, w, 3), dtype=np.float32)
    ys, xs = np.meshgrid(np.linspace(-1.0, 1.0, h), np.linspace(-1.0, 1.0, w), indexing="ij")
    for i in range(views):
        kind = kinds[rng.integers(len(kinds))]
        c0, c1 = rng.uniform(0.05, 0.95, (2, 3)).astype(np.float32)
        if kind == "solid":
            out[i] = c0
        elif kind == "gradient":
            angle = rng.uniform(0.0, 2.0 * np.pi)
            s = (np.cos(angle) * xs + np.sin(angle) * ys) * 0.5 + 0.5
            out[i] = c0 + (c1 - c0) * s[..., None]
        elif kind == "noise":
            cells = int(rng.integers(3, 9))
            grid = rng.uniform(0.0, 1.0, (cells, cells)).astype(np.float32)
            s = _bilinear_upsample(grid, h, w)
            out[i] = c0 + (c1 - c0) * s[..., None]
        else:
            raise ValueError(f"unknown background kind {kind!r}; use solid, gradient or noise")
    return out


def _bilinear_upsample(grid: np.ndarray, h: int, w: int) -> np.ndarray:
    """(g, g) float32 -> (h, w) float32 by bilinear interpolation over the whole image."""
    g = grid.shape[0]
    y = np.linspace(0.0, g - 1.0, h)
    x = np.linspace(0.0, g - 1.0, w)
    y0 = np.minimum(np.floor(y).astype(int), g - 2)
    x0 = np.minimum(np.floor(x).astype(int), g - 2)
    fy = (y - y0)[:, None]
    fx = (x - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy).astype(np.float32)


def part_colours(
    part_label_ids: np.ndarray, jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Palette colour of each part's label, jittered per part instance.

    part_label_ids: (P,) int label id per part. Returns (P, 3) float32 RGB in [0, 1].
    """
    base = PALETTE[np.asarray(part_label_ids, dtype=np.int64) % len(PALETTE)]
    noise = rng.normal(0.0, jitter, base.shape).astype(np.float32)
    return np.clip(base + noise, 0.0, 1.0)


def opencv_to_pytorch3d(K: np.ndarray, R: np.ndarray, t: np.ndarray, resolution: int) -> dict:
    """PyTorch3D PerspectiveCameras parameters of OpenCV cameras (square images).

    K: (V, 3, 3), R: (V, 3, 3), t: (V, 3) float32. Returns a dict of float32 arrays:
    p3d_R (V, 3, 3), p3d_T (V, 3), p3d_focal_length (V, 2), p3d_principal_point (V, 2),
    the NDC-space parameters ``pytorch3d.utils.cameras_from_opencv_projection`` builds.
    """
    cams = _pytorch3d_cameras(K, R, t, resolution, torch.device("cpu"))
    return {
        "p3d_R": cams.R.numpy().astype(np.float32),
        "p3d_T": cams.T.numpy().astype(np.float32),
        "p3d_focal_length": cams.focal_length.numpy().astype(np.float32),
        "p3d_principal_point": cams.principal_point.numpy().astype(np.float32),
    }


def _pytorch3d_cameras(
    K: np.ndarray, R: np.ndarray, t: np.ndarray, resolution: int, device: torch.device
):
    from pytorch3d.utils import cameras_from_opencv_projection

    v = K.shape[0]
    return cameras_from_opencv_projection(
        R=torch.as_tensor(R, dtype=torch.float32, device=device),
        tvec=torch.as_tensor(t, dtype=torch.float32, device=device),
        camera_matrix=torch.as_tensor(K, dtype=torch.float32, device=device),
        image_size=torch.tensor([[resolution, resolution]] * v, device=device),
    )


def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    resolution: int,
    tile_size: int | None = 16,
    bin_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rasterise one mesh into V OpenCV cameras with PyTorch3D (nearest face per pixel).

    vertices: (Vn, 3) float32 world frame; faces: (F, 3) int64; K, R, t: (V, 3, 3),
    (V, 3, 3), (V, 3) OpenCV cameras of square ``resolution`` images.
    On CPU with ``tile_size`` set (and dividing ``resolution``), each view is cut into
    tiles and every tile is rasterised, in one batched call, with only the faces whose
    projected bounding box overlaps it: the same kernel and results as one naive call, at
    a fraction of the cost. On CUDA, one call with PyTorch3D's coarse-to-fine binning.
    Returns face: (V, H, W) int64 face index or -1 on background, zbuf: (V, H, W) float32
    camera z, bary: (V, H, W, 3) float32 perspective-correct barycentric coordinates.
    """
    from pytorch3d.renderer import MeshRasterizer, RasterizationSettings
    from pytorch3d.structures import Meshes

    dev = vertices.device
    v = K.shape[0]
    n_faces = faces.shape[0]
    tiled = dev.type == "cpu" and tile_size is not None and resolution % tile_size == 0
    if not tiled:
        cameras = _pytorch3d_cameras(K, R, t, resolution, dev)
        settings = RasterizationSettings(
            image_size=resolution,
            blur_radius=0.0,
            faces_per_pixel=1,
            bin_size=bin_size if dev.type == "cuda" else 0,
        )
        meshes = Meshes(verts=[vertices], faces=[faces]).extend(v)
        frags = MeshRasterizer(cameras=cameras, raster_settings=settings)(meshes)
        p2f = frags.pix_to_face[..., 0]
        face = torch.where(p2f >= 0, p2f % n_faces, p2f)
        return face, frags.zbuf[..., 0], frags.bary_coords[..., 0, :]

    s = tile_size
    n_tiles = resolution // s
    uv, _ = project_points(vertices.cpu().numpy(), K, R, t)  # (V, Vn, 2)
    tri_uv = uv[:, faces.cpu().numpy()]  # (V, F, 3, 2)
    # Tile range of each face's bounding box; one pixel of margin keeps it conservative.
    lo = np.clip(np.floor((tri_uv.min(axis=2) - 1.0) / s), 0, n_tiles - 1).astype(np.int64)
    hi = np.clip(np.floor((tri_uv.max(axis=2) + 1.0) / s), 0, n_tiles - 1).astype(np.int64)
    inside = (tri_uv.max(axis=2) >= -1.0).all(-1) & (tri_uv.min(axis=2) <= resolution + 1).all(-1)
    span_x = np.where(inside, hi[..., 0] - lo[..., 0] + 1, 0)
    span_y = np.where(inside, hi[..., 1] - lo[..., 1] + 1, 0)
    count = (span_x * span_y).ravel()  # tiles per (view, face)
    pair_vf = np.repeat(np.arange(v * n_faces), count)
    k = np.arange(len(pair_vf)) - np.repeat(np.cumsum(count) - count, count)
    pair_view, pair_face = pair_vf // n_faces, pair_vf % n_faces
    sx = span_x.ravel()[pair_vf]
    tx = lo[..., 0].ravel()[pair_vf] + k % sx
    ty = lo[..., 1].ravel()[pair_vf] + k // sx
    key = (pair_view * n_tiles + ty) * n_tiles + tx  # global tile id
    order = np.argsort(key, kind="stable")
    key, pair_face = key[order], pair_face[order]
    tiles, counts = np.unique(key, return_counts=True)
    face = torch.full((v, n_tiles, s, n_tiles, s), -1, dtype=torch.int64, device=dev)
    zbuf = torch.full((v, n_tiles, s, n_tiles, s), -1.0, device=dev)
    bary = torch.zeros((v, n_tiles, s, n_tiles, s, 3), device=dev)
    shape = (v, resolution, resolution)
    if len(tiles) == 0:  # nothing in view
        return face.reshape(shape), zbuf.reshape(shape), bary.reshape(*shape, 3)

    tile_view = tiles // (n_tiles * n_tiles)
    tile_y0 = (tiles // n_tiles) % n_tiles * s
    tile_x0 = tiles % n_tiles * s
    K_tile = K[tile_view].copy()
    K_tile[:, 0, 2] -= tile_x0
    K_tile[:, 1, 2] -= tile_y0
    cameras = _pytorch3d_cameras(K_tile, R[tile_view], t[tile_view], s, dev)
    tri = vertices[faces]  # (F, 3, 3); each tile mesh owns unshared copies of its faces
    face_sel = torch.as_tensor(pair_face, device=dev)
    tri_sel = tri[face_sel].reshape(-1, 3)
    local = torch.arange(3 * len(pair_face), device=dev).reshape(-1, 3)
    verts_list = list(torch.split(tri_sel, (3 * counts).tolist()))
    faces_list = [f - f[0, 0] for f in torch.split(local, counts.tolist())]
    meshes = Meshes(verts=verts_list, faces=faces_list)
    settings = RasterizationSettings(image_size=s, blur_radius=0.0, faces_per_pixel=1, bin_size=0)
    frags = MeshRasterizer(cameras=cameras, raster_settings=settings)(meshes)
    # The packed faces of the tile batch are the rows of pair_face, in order.
    p2f = frags.pix_to_face[..., 0]
    tile_face = torch.where(p2f >= 0, face_sel[p2f.clamp_min(0)], p2f)
    tv = torch.as_tensor(tile_view, device=dev)
    tyi = torch.as_tensor(tile_y0 // s, device=dev)
    txi = torch.as_tensor(tile_x0 // s, device=dev)
    face[tv, tyi, :, txi, :] = tile_face
    zbuf[tv, tyi, :, txi, :] = frags.zbuf[..., 0]
    bary[tv, tyi, :, txi, :] = frags.bary_coords[..., 0, :]
    return face.reshape(shape), zbuf.reshape(shape), bary.reshape(*shape, 3)


def render_mesh(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_parts: np.ndarray,
    part_label_ids: np.ndarray,
    config: RenderConfig,
    seed: int,
    device: str | torch.device = "cpu",
) -> Renders:
    """Render ``config.views`` seeded random views of a part-labelled mesh in one batch.

    vertices: (Vn, 3) float32, canonical frame (Y-up, unit cube, front +Z).
    faces: (F, 3) int32 vertex indices, CCW seen from outside.
    face_parts: (F,) int32 index into the parts. part_label_ids: (P,) int32 label per part.
    seed: drives cameras, lights, part colour jitter and backgrounds.
    """
    vertices = np.array(vertices, dtype=np.float32)  # a writable copy (inputs may be memmaps)
    faces = np.array(faces, dtype=np.int64)
    face_parts = np.asarray(face_parts, dtype=np.int64)
    part_label_ids = np.asarray(part_label_ids, dtype=np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(
            f"expected vertices (V, 3) and faces (F, 3); got {vertices.shape} and {faces.shape}"
        )
    if len(faces) == 0:
        raise ValueError("the mesh has no faces; nothing to render")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise ValueError("face indices must lie in [0, number of vertices)")
    if face_parts.shape != (len(faces),) or face_parts.min() < 0:
        raise ValueError("face_parts must hold one non-negative part index per face")
    if face_parts.max() >= len(part_label_ids):
        raise ValueError("face_parts refers to a part beyond part_label_ids")
    dev = torch.device(device)
    rng = np.random.default_rng(seed)
    views = sample_views(config, rng)
    colours = part_colours(part_label_ids, config.colour_jitter, rng)
    bg = backgrounds(config.backgrounds, config.views, config.resolution, rng)
    K = np.repeat(intrinsics(config.resolution, config.fov_deg)[None], config.views, axis=0)
    R, t = orbit_cameras(views["azimuth"], views["elevation"], views["distance"])
    p3d = opencv_to_pytorch3d(K, R, t, config.resolution)

    verts_t = torch.as_tensor(vertices, device=dev)
    faces_t = torch.as_tensor(faces, device=dev)
    face, zbuf, bary = rasterize(
        verts_t, faces_t, K, R, t, config.resolution, config.tile_size, config.bin_size
    )
    mask = face >= 0
    face = face.clamp_min(0)

    tri = verts_t[faces_t]  # (F, 3, 3)
    face_n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    face_n = face_n / face_n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    point = (bary[..., None] * tri[face]).sum(dim=-2)  # (V, H, W, 3) world
    centre = torch.as_tensor(
        -np.einsum("vji,vj->vi", R, t), dtype=torch.float32, device=dev
    )  # camera centres, world
    to_cam = centre[:, None, None, :] - point
    to_cam = to_cam / to_cam.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    normal = face_n[face]
    normal = torch.where((normal * to_cam).sum(-1, keepdim=True) < 0, -normal, normal)

    # Phong: ambient + diffuse + specular with one directional light per view.
    light = torch.as_tensor(views["light_dir"], device=dev)[:, None, None, :]
    n_dot_l = (normal * light).sum(-1, keepdim=True)
    reflect = 2.0 * n_dot_l * normal - light
    spec = (reflect * to_cam).sum(-1, keepdim=True).clamp_min(0.0) ** config.shininess
    spec = torch.where(n_dot_l > 0, spec, torch.zeros_like(spec))
    face_colour = torch.as_tensor(colours, device=dev)[
        torch.as_tensor(face_parts, device=dev)
    ]  # (F, 3)
    albedo = face_colour[face]
    shaded = albedo * (config.ambient + config.diffuse * n_dot_l.clamp_min(0.0))
    shaded = shaded + config.specular * spec
    m = mask[..., None]
    rgb = torch.where(m, shaded.clamp(0.0, 1.0), torch.as_tensor(bg, device=dev))
    rgb_u8 = (rgb * 255.0 + 0.5).to(torch.uint8)
    depth = torch.where(mask, zbuf, torch.zeros_like(zbuf))
    normal = torch.where(m, normal, torch.zeros_like(normal))
    label_of_face = torch.as_tensor(part_label_ids[face_parts], device=dev)
    labels = torch.where(mask, label_of_face[face], torch.full_like(face, 255))

    return Renders(
        rgb=rgb_u8.cpu().numpy(),
        mask=mask.cpu().numpy(),
        depth=depth.cpu().numpy().astype(np.float32),
        normals=normal.cpu().numpy().astype(np.float16),
        part_labels=labels.cpu().numpy().astype(np.uint8),
        K=K,
        R=R,
        t=t,
        azimuth=views["azimuth"],
        elevation=views["elevation"],
        distance=views["distance"],
        light_dir=views["light_dir"],
        **p3d,
    )


def render_part_colours(
    vertices: np.ndarray,
    faces: np.ndarray,
    face_parts: np.ndarray,
    part_label_ids: np.ndarray,
    K: np.ndarray,
    R: np.ndarray,
    t: np.ndarray,
    resolution: int,
    tile_size: int | None = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Plain palette colours per part label, head-light shaded, on white (for previews).

    vertices: (Vn, 3) float32 canonical; faces: (F, 3) int; face_parts: (F,) int part index;
    part_label_ids: (P,) int; K, R, t: (V, 3, 3), (V, 3, 3), (V, 3) OpenCV cameras of
    ``resolution`` images. Returns rgb: (V, H, W, 3) uint8 and depth: (V, H, W) float32
    camera z (0 on background).
    """
    verts = torch.from_numpy(np.array(vertices, dtype=np.float32))  # copy: may be a memmap
    faces_t = torch.from_numpy(np.array(faces, dtype=np.int64))
    face, zbuf, _ = rasterize(verts, faces_t, K, R, t, resolution, tile_size)
    mask = face >= 0
    face = face.clamp_min(0)
    tri = verts[faces_t]
    n = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    forward = torch.as_tensor(np.asarray(R, dtype=np.float32)[:, 2])  # camera +z, world
    shade = 0.45 + 0.55 * (n[face] * forward[:, None, None, :]).sum(-1).abs()
    labels = np.asarray(part_label_ids, dtype=np.int64)[np.asarray(face_parts, dtype=np.int64)]
    albedo = torch.as_tensor(PALETTE[labels % len(PALETTE)])[face]
    rgb = torch.where(mask[..., None], albedo * shade[..., None], torch.ones_like(albedo))
    depth = torch.where(mask, zbuf, torch.zeros_like(zbuf))
    return (rgb * 255.0 + 0.5).to(torch.uint8).numpy(), depth.numpy()


def render_shape(
    shape, config: RenderConfig | None = None, seed: int | None = None, device: str = "cpu"
) -> Renders:
    """Render a ``backend.data.shapes.Shape`` (its mesh, coloured by part label).

    seed: defaults to the shape's own seed, so a shape always gets the same views.
    """
    mesh = shape.mesh()
    return render_mesh(
        mesh.vertices,
        mesh.faces,
        mesh.face_parts,
        shape.part_label_ids(),
        config or RenderConfig(),
        shape.seed if seed is None else seed,
        device,
    )

