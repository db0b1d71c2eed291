"""Torch side of the camera conventions: PyTorch3D cameras from the numpy conventions and back.

The conventions themselves (frames, Blender/OpenCV/PyTorch3D camera models) live in
`blender_addon.conventions`; this module only moves them into (batched)
``pytorch3d.renderer.PerspectiveCameras`` through PyTorch3D's own OpenCV converters,
``pytorch3d.utils.cameras_from_opencv_projection`` and ``opencv_from_cameras_projection``.
Pixel convention: centres at integer + 0.5 (PyTorch3D's and the conventions module's).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pytorch3d.renderer import PerspectiveCameras
from pytorch3d.utils import cameras_from_opencv_projection, opencv_from_cameras_projection

from blender_addon.conventions import (
    BlenderCamera,
    OpenCVCamera,
    blender_to_opencv,
    camera_to_frame,
)

__all__ = [
    "opencv_from_pytorch3d_cameras",
    "pytorch3d_cameras_from_blender",
    "pytorch3d_cameras_from_opencv",
]


def _as_list(cams: object, kind: type) -> list:
    items = [cams] if isinstance(cams, kind) else list(cams)  # type: ignore[call-overload]
    if not items:
        raise ValueError(f"Pass at least one {kind.__name__}; got an empty sequence.")
    for i, cam in enumerate(items):
        if not isinstance(cam, kind):
            raise ValueError(f"Item {i} is a {type(cam).__name__}, expected a {kind.__name__}.")
    return items


def pytorch3d_cameras_from_opencv(
    cams: OpenCVCamera | Sequence[OpenCVCamera],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PerspectiveCameras:
    """Batch OpenCV cameras into one NDC ``PerspectiveCameras`` (B = number of cameras).

    Args:
        cams: one camera or a sequence of B cameras; extrinsics in the world frame the
            renderer will use (e.g. canonical, see `conventions.camera_to_frame`).
        device: torch device of the returned cameras.
        dtype: floating dtype of the camera parameters. float64 keeps parameters exact for
            round trips, but PyTorch3D's projection (``transform_points_screen``, the
            rasterizer) runs in float32 only: its NDC transforms are hard-coded float32.

    Returns:
        PerspectiveCameras with R (B, 3, 3), T (B, 3), focal_length (B, 2),
        principal_point (B, 2) in NDC and image_size (B, 2) as (H, W).
    """
    items: list[OpenCVCamera] = _as_list(cams, OpenCVCamera)
    r = torch.tensor(np.stack([c.R for c in items]), dtype=dtype, device=device)
    t = torch.tensor(np.stack([c.t for c in items]), dtype=dtype, device=device)
    k = torch.tensor(np.stack([c.K for c in items]), dtype=dtype, device=device)
    size = torch.tensor([c.size for c in items], dtype=dtype, device=device)
    return cameras_from_opencv_projection(R=r, tvec=t, camera_matrix=k, image_size=size)


def pytorch3d_cameras_from_blender(
    cams: BlenderCamera | Sequence[BlenderCamera],
    frame_matrix: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> PerspectiveCameras:
    """Batch Blender cameras into one ``PerspectiveCameras``.

    Args:
        cams: one camera or a sequence of B cameras (extrinsics in Blender world).
        frame_matrix: optional (4, 4) float similarity from Blender world to the render
            frame, e.g. ``conventions.blender_world_to_canonical_matrix(obj_mw, transform)``
            to render an object in its canonical unit cube. None keeps Blender world.
        device, dtype: as in `pytorch3d_cameras_from_opencv`.
    """
    items: list[BlenderCamera] = _as_list(cams, BlenderCamera)
    cvs = [blender_to_opencv(c) for c in items]
    if frame_matrix is not None:
        cvs = [camera_to_frame(c, frame_matrix) for c in cvs]
    return pytorch3d_cameras_from_opencv(cvs, device=device, dtype=dtype)


def opencv_from_pytorch3d_cameras(
    cameras: PerspectiveCameras,
    image_size: torch.Tensor | Sequence[int] | None = None,
) -> list[OpenCVCamera]:
    """Convert a batch of ``PerspectiveCameras`` back to B numpy OpenCV cameras.

    Args:
        cameras: PerspectiveCameras (NDC or screen space) with batch size B.
        image_size: (B, 2) or (2,) as (H, W) pixels; defaults to ``cameras.image_size``.

    Returns:
        B OpenCVCamera, float64. R is re-orthonormalised (nearest rotation by SVD) to
        remove float32 rounding.
    """
    if image_size is None:
        image_size = getattr(cameras, "image_size", None)
        if image_size is None:
            raise ValueError("These cameras carry no image_size; pass image_size=(H, W).")
    size = torch.as_tensor(image_size, dtype=cameras.R.dtype, device=cameras.device)
    size = size.reshape(-1, 2).expand(len(cameras), 2)
    r, t, k = opencv_from_cameras_projection(cameras, size)
    out = []
    for i in range(len(cameras)):
        u, _, vt = np.linalg.svd(r[i].detach().cpu().double().numpy())
        rot = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
        kk = k[i].detach().cpu().double().numpy()
        kk[1, 0], kk[2] = 0.0, (0.0, 0.0, 1.0)
        h, w = (int(round(float(s))) for s in size[i])
        out.append(OpenCVCamera(K=kk, R=rot, t=t[i].detach().cpu().double().numpy(), size=(h, w)))
    return out
