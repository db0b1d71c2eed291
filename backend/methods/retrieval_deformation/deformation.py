"""Part-aware deformation of a source (paper 000, Sec. 2.2): per-part translation and
axis-aligned scale, connectivity joints kept by a null-space projection, symmetry loss.

Parameters of one part are ``x = (t_x, t_y, t_z, d_x, d_y, d_z)``: a point ``p`` of part
``i`` with box centre ``c_i`` moves to ``p + t_i + d_i * (p - c_i)`` (elementwise), i.e.
the part's bounding box is translated by ``t_i`` and scaled by ``1 + d_i`` about its
centre. ``x = 0`` is the identity. All coordinates are in the canonical object frame.

Connectivity. Two parts are adjacent when their closest points are within a tolerance
(0.05, as the authors' preprocessing); the midpoint ``q`` of that closest pair is their
joint. The joint must land on the same place when moved by either part:
``t_i + (q - c_i) d_i = t_j + (q - c_j) d_j`` (three rows per joint, linear and
homogeneous in the parameters). Predicted parameters are projected onto the null space
of this constraint matrix, so the identity stays feasible and connected parts stay
connected.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from backend.core.metrics import chamfer_distance

#: Parameters per part: translation (3) and axis-aligned scale offset (3).
PARAMS_PER_PART = 6
#: Closest-point distance under which two parts get a joint (authors' preprocessing).
JOINT_TOLERANCE = 0.05


def part_centers(points: np.ndarray, point_parts: np.ndarray, num_parts: int) -> np.ndarray:
    """Axis-aligned bounding-box centre of each part.

    points: (N, 3) float, canonical frame; point_parts: (N,) int in [0, num_parts).
    Returns (num_parts, 3) float64. Raises ValueError if a part has no point.
    """
    out = np.empty((num_parts, 3))
    for i in range(num_parts):
        p = points[point_parts == i]
        if len(p) == 0:
            raise ValueError(f"part {i} has no point; give every part at least one point")
        out[i] = 0.5 * (p.min(axis=0) + p.max(axis=0))
    return out


def find_joints(
    points: np.ndarray, point_parts: np.ndarray, num_parts: int, tolerance: float = JOINT_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Joints between parts whose closest points are within ``tolerance``.

    points: (N, 3) float, canonical frame (dense samples and/or vertices of the parts).
    point_parts: (N,) int part index of each point.
    Returns pairs (J, 2) int64 with i < j and joint points (J, 3) float64, the midpoint of
    the closest pair of points of parts i and j.
    """
    groups = [np.asarray(points[point_parts == i], dtype=np.float64) for i in range(num_parts)]
    trees = [cKDTree(g) if len(g) else None for g in groups]
    pairs, joints = [], []
    for i in range(num_parts):
        for j in range(i + 1, num_parts):
            if trees[i] is None or trees[j] is None:
                continue
            dist, idx = trees[j].query(groups[i], k=1, distance_upper_bound=tolerance)
            if not np.isfinite(dist).any():
                continue
            a = int(np.argmin(dist))
            pairs.append((i, j))
            joints.append(0.5 * (groups[i][a] + groups[j][idx[a]]))
    if not pairs:
        return np.zeros((0, 2), np.int64), np.zeros((0, 3))
    return np.asarray(pairs, np.int64), np.asarray(joints)


def constraint_matrix(centers: np.ndarray, pairs: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Linear joint constraints ``A x = 0`` on the flattened (P * 6,) part parameters.

    centers: (P, 3) float part box centres; pairs: (J, 2) int; joints: (J, 3) float joint
    points, canonical frame. Returns A, (3 J, 6 P) float64.
    """
    num_parts = len(centers)
    a = np.zeros((3 * len(pairs), PARAMS_PER_PART * num_parts))
    for row, ((i, j), q) in enumerate(zip(pairs, joints)):
        for axis in range(3):
            r = 3 * row + axis
            a[r, 6 * i + axis] = 1.0
            a[r, 6 * i + 3 + axis] = q[axis] - centers[i, axis]
            a[r, 6 * j + axis] = -1.0
            a[r, 6 * j + 3 + axis] = -(q[axis] - centers[j, axis])
    return a


def nullspace_projector(a: np.ndarray, num_params: int, rtol: float = 1e-9) -> np.ndarray:
    """Orthogonal projector onto the null space of ``a``: ``I - A^+ A``.

    a: (R, num_params) float constraint matrix (R may be 0). Returns (num_params,
    num_params) float64, symmetric and idempotent; x -> projector @ x satisfies A x = 0.
    """
    if a.shape[0] == 0:
        return np.eye(num_params)
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    rank = int((s > rtol * max(s[0], 1e-300)).sum())
    row_space = vt[:rank]  # orthonormal basis of A's row space
    return np.eye(num_params) - row_space.T @ row_space


def project_parameters(params: torch.Tensor, projector: torch.Tensor) -> torch.Tensor:
    """Project part parameters onto the connectivity null space.

    params: (B, P, 6) float, raw per-part parameters (padded parts: any value).
    projector: (B, 6P, 6P) float, per-source projector, zero rows/cols on padded parts.
    Returns (B, P, 6): feasible parameters, zero on padded parts.
    """
    b, p, _ = params.shape
    flat = params.reshape(b, p * PARAMS_PER_PART, 1)
    return torch.bmm(projector, flat).reshape(b, p, PARAMS_PER_PART)


def deform_points(
    points: torch.Tensor, point_parts: torch.Tensor, centers: torch.Tensor, params: torch.Tensor
) -> torch.Tensor:
    """Apply per-part translation + axis-aligned scale (see module docstring).

    points: (B, N, 3) float source points, canonical frame.
    point_parts: (B, N) int64 part index of each point, in [0, P).
    centers: (B, P, 3) float part box centres; params: (B, P, 6) float part parameters.
    Returns (B, N, 3) deformed points. Differentiable in points, centers and params.
    """
    index = point_parts.unsqueeze(-1).expand(-1, -1, 3)
    t = torch.gather(params[..., :3], 1, index)
    d = torch.gather(params[..., 3:], 1, index)
    c = torch.gather(centers, 1, index)
    return points + t + d * (points - c)


def reflect_x(points: torch.Tensor) -> torch.Tensor:
    """Mirror (..., 3) canonical points through the bilateral plane x = 0."""
    return points * points.new_tensor([-1.0, 1.0, 1.0])


def symmetry_loss(points: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Bilateral symmetry regulariser: squared chamfer between a shape and its mirror.

    points: (B, N, 3) float deformed points, canonical frame (symmetry plane x = 0).
    lengths: optional (B,) int64 valid points per cloud. Returns (B,) float.
    """
    mirrored = reflect_x(points)
    return chamfer_distance(points, mirrored, x_lengths=lengths, y_lengths=lengths).chamfer
