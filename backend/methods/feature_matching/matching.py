"""Implicit feature matching (paper 001, Sec. 2.2-2.3, Eq. 3-8) and surface correspondences.

Each point x_0 on the source follows the latent interpolation z_t = (1 - t) z_A + t z_B
(Eq. 4): per time step dt the displacement delta minimises
||Phi(x_t + delta; z_{t+dt}) - Phi(x_t; z_t)|| (Eq. 3), solved by N Gauss-Newton
iterations (Eq. 5-6) with the displacement penalty lambda ||delta|| appended to the
system (Eq. 7-8). All points are solved at once: one batched 3x3 solve per iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch

from backend.methods.feature_matching.model import ImplicitDecoder

__all__ = [
    "FeatureField",
    "MatchConfig",
    "MatchResult",
    "closest_point_on_triangles",
    "decoder_field",
    "gauss_newton_step",
    "match_points",
    "nearest_surface_points",
]


class FeatureField(Protocol):
    """Features of points under a code, with their Jacobian w.r.t. the points.

    points: (N, 3) float, canonical frame; code: (k,) float.
    Returns features (N, C) and, when ``with_jacobian``, the Jacobian (N, C, 3) (else None).
    """

    def __call__(
        self, points: torch.Tensor, code: torch.Tensor, with_jacobian: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]: ...


def decoder_field(
    decoder: ImplicitDecoder, layers: Sequence[int] = (3, 6), weights: Sequence[float] = (1.0, 0.1)
) -> FeatureField:
    """The matched features of a decoder: layers concatenated with per-layer weights.

    The paper's default is layer 3 plus eta = 0.1 times layer 6 (Sec. 4.2).
    """
    if len(layers) != len(weights):
        raise ValueError(f"{len(weights)} layer weights given for {len(layers)} layers")

    def field(points: torch.Tensor, code: torch.Tensor, with_jacobian: bool):
        return decoder.features_and_jacobian(points, code, layers, weights, with_jacobian)

    return field


@dataclass
class MatchConfig:
    """Feature matching settings; defaults are the paper's (Sec. 4)."""

    steps: int = 50
    """Interpolation steps from z_A to z_B (dt = 1 / steps = 0.02)."""
    gn_iterations: int = 3
    """Gauss-Newton iterations N per step (Eq. 5)."""
    reg_lambda: float = 0.01
    """Weight lambda of the displacement penalty (Eq. 7-8)."""
    jacobian_at: str = "start"
    """"start": J = grad_x Phi(x_t; z_t), once per step (the paper's approximation below
    Eq. 5); "current": J re-evaluated at (x_t + delta_n; z_{t+dt}) every iteration."""
    chunk_size: int = 16384
    """Points solved together (bounds the (chunk, C, 3) Jacobian's memory)."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.gn_iterations < 1 or self.chunk_size < 1:
            raise ValueError("steps, gn_iterations and chunk_size must be positive integers")
        if not self.reg_lambda >= 0.0:
            raise ValueError(f"reg_lambda must be >= 0, got {self.reg_lambda}")
        if self.jacobian_at not in ("start", "current"):
            raise ValueError(f"jacobian_at must be 'start' or 'current', got {self.jacobian_at!r}")


class MatchResult(NamedTuple):
    """points: (N, 3) matched points at t = 1. trajectory: (K, N, 3) points at ``times``.
    times: (K,) float64 in [0, 1], the recorded times (rounded to the step grid)."""

    points: torch.Tensor
    trajectory: torch.Tensor
    times: np.ndarray


def gauss_newton_step(
    jacobian: torch.Tensor, residual: torch.Tensor, delta: torch.Tensor, reg_lambda: float
) -> torch.Tensor:
    """One regularised Gauss-Newton update of the displacements, all points at once.

    jacobian: (N, C, 3) d Phi / d x per point. residual: (N, C) [dPhi]_n of Eq. 6.
    delta: (N, 3) current displacements [delta_t]_n. reg_lambda: lambda of Eq. 7-8.
    Returns (N, 3) [delta_t]_{n+1}.

    Eq. 7-8 append the rows lambda * I to J and the penalty's residual to dPhi, and the
    generalised Newton step (Eq. 5) solves the augmented least squares
    min_s ||J s + dPhi||^2 + ||lambda s + lambda delta_n||^2 for s = delta_{n+1} - delta_n,
    i.e. it drives lambda ||delta_{n+1}|| to 0 (the paper's stated target; we read the
    sign of Eq. 8 so that the penalty shrinks the displacement). Closed form:
    s = -(J^T J + lambda^2 I)^-1 (J^T dPhi + lambda^2 delta_n).
    """
    n = jacobian.shape[0]
    if jacobian.ndim != 3 or jacobian.shape[2] != 3 or residual.shape != jacobian.shape[:2]:
        raise ValueError(
            f"jacobian must be (N, C, 3) and residual (N, C), got {tuple(jacobian.shape)} "
            f"and {tuple(residual.shape)}"
        )
    if delta.shape != (n, 3):
        raise ValueError(f"delta must be ({n}, 3), got {tuple(delta.shape)}")
    jt = jacobian.transpose(1, 2)
    lam2 = reg_lambda * reg_lambda
    eye = torch.eye(3, dtype=jacobian.dtype, device=jacobian.device)
    normal = jt @ jacobian + lam2 * eye  # (N, 3, 3)
    rhs = (jt @ residual.unsqueeze(-1)).squeeze(-1) + lam2 * delta  # (N, 3)
    if lam2 == 0.0:
        step = -torch.linalg.lstsq(jacobian, residual.unsqueeze(-1)).solution.squeeze(-1)
    else:
        step = -torch.linalg.solve(normal, rhs)
    return delta + step


def _record_steps(times: Sequence[float] | None, steps: int) -> list[int]:
    if times is None:
        return [steps]
    arr = np.asarray(list(times), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or np.any(~np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"record times must be a non-empty list of numbers in [0, 1], got {times}")
    return [int(round(t * steps)) for t in arr]


def match_points(
    field: FeatureField,
    points: torch.Tensor,
    code_source: torch.Tensor,
    code_target: torch.Tensor,
    config: MatchConfig | None = None,
    record_times: Sequence[float] | None = None,
    progress: Callable[[float], None] | None = None,
) -> MatchResult:
    """Track points from the source code to the target code by feature matching (Eq. 3-8).

    field: features and Jacobians, e.g. `decoder_field(decoder)`.
    points: (N, 3) float, canonical frame, x_0 (source mesh vertices or surface samples).
    code_source, code_target: (k,) float codes z_A, z_B.
    record_times: times t in [0, 1] at which to keep the points (default: only t = 1).
    progress: called with the fraction done (also a place to raise on cancellation).
    Returns `MatchResult` (final points, trajectory at the recorded times, the times).
    """
    config = config or MatchConfig()
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if code_source.shape != code_target.shape or code_source.ndim != 1:
        raise ValueError(
            f"codes must both be (k,), got {tuple(code_source.shape)} and {tuple(code_target.shape)}"
        )
    record = _record_steps(record_times, config.steps)
    n = points.shape[0]
    trajectory = points.new_empty((len(record), n, 3))
    final = points.new_empty((n, 3))
    chunks = range(0, n, config.chunk_size)
    with torch.no_grad():
        for ci, start in enumerate(chunks):
            x = points[start : start + config.chunk_size].clone()
            for k, s in enumerate(record):
                if s == 0:
                    trajectory[k, start : start + len(x)] = x
            for s in range(config.steps):
                t0, t1 = s / config.steps, (s + 1) / config.steps
                z0 = torch.lerp(code_source, code_target, t0)
                z1 = torch.lerp(code_source, code_target, t1)
                phi0, jac = field(x, z0, True)
                delta = torch.zeros_like(x)
                for _ in range(config.gn_iterations):
                    current = config.jacobian_at == "current"
                    phi, jac_now = field(x + delta, z1, current)
                    delta = gauss_newton_step(jac_now if current else jac, phi - phi0, delta,
                                              config.reg_lambda)
                x = x + delta
                for k, rs in enumerate(record):
                    if rs == s + 1:
                        trajectory[k, start : start + len(x)] = x
                if progress is not None:
                    progress((ci * config.steps + s + 1) / (len(chunks) * config.steps))
            final[start : start + len(x)] = x
    times = np.asarray(record, dtype=np.float64) / config.steps
    return MatchResult(final, trajectory, times)


def closest_point_on_triangles(
    p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> np.ndarray:
    """Closest point to p on triangle (a, b, c), row by row (Voronoi regions of the triangle).

    p, a, b, c: (M, 3) float64. Returns (M, 3) float64.
    """
    ab, ac, ap = b - a, c - a, p - a
    bp, cp = p - b, p - c
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    tiny = 1e-300
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        denom = np.where(np.abs(denom) > tiny, denom, tiny)
        out = a + ab * (vb / denom)[:, None] + ac * (vc / denom)[:, None]  # face interior

        def blend(mask, base, direction, num, den):
            w = num / np.where(np.abs(den) > tiny, den, tiny)
            return np.where(mask[:, None], base + direction * w[:, None], out)

        out = blend((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), b, c - b, d4 - d3,
                    (d4 - d3) + (d5 - d6))  # edge BC
        out = blend((vb <= 0) & (d2 >= 0) & (d6 <= 0), a, ac, d2, d2 - d6)  # edge AC
        out = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, out)  # vertex C
        out = blend((vc <= 0) & (d1 >= 0) & (d3 <= 0), a, ab, d1, d1 - d3)  # edge AB
        out = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, out)  # vertex B
        out = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, out)  # vertex A
    return out


def nearest_surface_points(
    points: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    candidates: int = 16,
    samples_per_unit_area: float = 2e5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest point of a triangle mesh's surface to each query point.

    points: (N, 3) float, same frame as vertices. vertices: (V, 3) float; faces: (F, 3) int.
    candidates: faces tested exactly per query, taken from the nearest of dense surface
        samples (a k-d tree over the samples and the face centroids); the result is
        exact whenever the true nearest face is among them (always in practice on
        meshes scaled to the unit cube).
    Returns (closest (N, 3) float64, face index (N,) int64).
    """
    from scipy.spatial import cKDTree

    p = np.asarray(points, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if p.ndim != 2 or p.shape[1] != 3 or v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError("points and vertices must be (N, 3) and faces (F, 3)")
    if len(f) == 0:
        raise ValueError("the target mesh has no faces; pass a mesh with triangles")
    tri = v[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.default_rng(seed)
    n_samples = int(min(max(area.sum() * samples_per_unit_area, 1000), 2_000_000))
    face_of = rng.choice(len(f), n_samples, p=area / area.sum()) if area.sum() > 0 else np.zeros(0, int)
    r1, r2 = rng.random(len(face_of)), rng.random(len(face_of))
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    samples = np.einsum("mk,mkd->md", bary, tri[face_of])
    sample_points = np.concatenate([samples, tri.mean(axis=1)])
    sample_faces = np.concatenate([face_of, np.arange(len(f))])
    k = min(candidates, len(sample_points))
    _, idx = cKDTree(sample_points).query(p, k=k)
    cand = sample_faces[idx.reshape(len(p), k)]  # (N, k)
    q = np.repeat(p, k, axis=0)
    ct = tri[cand.reshape(-1)]
    closest = closest_point_on_triangles(q, ct[:, 0], ct[:, 1], ct[:, 2]).reshape(len(p), k, 3)
    d = np.linalg.norm(closest - p[:, None], axis=2)
    best = d.argmin(axis=1)
    rows = np.arange(len(p))
    return closest[rows, best], cand[rows, best]

