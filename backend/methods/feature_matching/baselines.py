"""Cross-fitting baselines of Table 1: deform the source mesh to fit the target surface.

The paper compares feature matching ("self-fitting") against methods trained by
*cross-fitting* (ShapeFlow, MeshODE, NeuralCage), whose deformation is optimised to fit the
target shape, with rigidity constraints (as-rigid-as-possible, Sorkine & Alexa 2007) in
MeshODE and cages in NeuralCage. Their trained models are not available here, so the
baselines optimise the deformation of each pair directly (no learning): free per-vertex
offsets of the source mesh, fitted by Adam to the squared chamfer distance between surface
samples of the deformed mesh (fixed barycentric coordinates) and the target's samples,

    min_X  CD(S(X), Y) + w * R(X; X0),

with R = 0 ("none"), the uniform Laplacian-coordinate energy ("laplacian") or the ARAP
energy with per-vertex rotations re-fitted by SVD every iteration ("arap").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.core.metrics import chamfer_distance

__all__ = [
    "REGULARIZERS",
    "CrossFitConfig",
    "arap_energy",
    "arap_rotations",
    "barycentric_points",
    "cross_fit",
    "laplacian_energy",
    "mesh_edges",
]

REGULARIZERS = ("none", "laplacian", "arap")


def mesh_edges(faces: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Unique undirected edges of a triangle mesh: faces (F, 3) int -> (E, 2) int64, i < j."""
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(f.shape)}")
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = torch.sort(e, dim=1).values
    e = e[e[:, 0] != e[:, 1]]
    return torch.unique(e, dim=0)


def barycentric_points(
    vertices: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor, bary: torch.Tensor
) -> torch.Tensor:
    """Surface points at fixed barycentric coordinates: (N, 3) = sum_k bary[:, k] X[f[face, k]].

    vertices: (V, 3) float; faces: (F, 3) int64; face_index: (N,) int64; bary: (N, 3) float.
    """
    corners = vertices[faces[face_index]]  # (N, 3, 3)
    return (bary.unsqueeze(-1) * corners).sum(1)


def _neighbour_mean(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    i, j = edges[:, 0], edges[:, 1]
    total = torch.zeros_like(x).index_add_(0, i, x[j]).index_add_(0, j, x[i])
    count = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    count.index_add_(0, i, torch.ones_like(i, dtype=x.dtype)).index_add_(
        0, j, torch.ones_like(j, dtype=x.dtype))
    return total / count.clamp_min(1).unsqueeze(1)


def laplacian_energy(x: torch.Tensor, x0: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Mean squared change of the uniform Laplacian coordinates, (1/V) sum_i |L x_i - L x0_i|^2.

    x, x0: (V, 3) float deformed and rest vertices; edges: (E, 2) int64 undirected edges.
    L x_i = x_i - mean of x over i's neighbours (isolated vertices: L x_i = 0).
    Zero for any translation of x0; differentiable in x.
    """
    d = (x - _neighbour_mean(x, edges)) - (x0 - _neighbour_mean(x0, edges))
    connected = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    connected[edges.reshape(-1)] = True
    return (d[connected] ** 2).sum(1).mean()


def _directed(edges: torch.Tensor) -> torch.Tensor:
    return torch.cat([edges, edges.flip(1)])


def arap_rotations(x: torch.Tensor, x0: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Per-vertex rotations of the ARAP local step (Sorkine & Alexa 2007), uniform weights.

    x, x0: (V, 3) float deformed and rest vertices; edges: (E, 2) int64 undirected.
    R_i maximises sum_j (x_i - x_j) . R_i (x0_i - x0_j) over i's neighbours j:
    R_i = V U^T of the SVD U S V^T of S_i = sum_j (x0_i - x0_j)(x_i - x_j)^T, with the
    sign of the last column of V flipped where det < 0. Returns (V, 3, 3), no gradient.
    """
    with torch.no_grad():
        d = _directed(edges)
        e0 = x0[d[:, 0]] - x0[d[:, 1]]
        e1 = x[d[:, 0]] - x[d[:, 1]]
        cov = torch.zeros(len(x), 3, 3, dtype=x.dtype, device=x.device)
        cov.index_add_(0, d[:, 0], e0.unsqueeze(2) * e1.unsqueeze(1))
        u, _, vh = torch.linalg.svd(cov)
        v = vh.transpose(1, 2)
        r = v @ u.transpose(1, 2)
        flip = torch.linalg.det(r) < 0
        if flip.any():
            v = v.clone()
            v[flip, :, 2] *= -1
            r = v @ u.transpose(1, 2)
    return r


def arap_energy(
    x: torch.Tensor, x0: torch.Tensor, edges: torch.Tensor, rotations: torch.Tensor
) -> torch.Tensor:
    """Mean ARAP edge energy (1/2E) sum_i sum_{j in N(i)} |(x_i - x_j) - R_i (x0_i - x0_j)|^2.

    x, x0: (V, 3) float; edges: (E, 2) int64 undirected; rotations: (V, 3, 3) per vertex.
    Zero for a rigid motion of x0 (with its rotation); differentiable in x.
    """
    d = _directed(edges)
    e0 = x0[d[:, 0]] - x0[d[:, 1]]
    e1 = x[d[:, 0]] - x[d[:, 1]]
    rotated = (rotations[d[:, 0]] @ e0.unsqueeze(-1)).squeeze(-1)
    return ((e1 - rotated) ** 2).sum(1).mean()


@dataclass
class CrossFitConfig:
    """Settings of the optimisation-based cross-fitting baselines (our choices)."""

    regularizer: str = "none"
    """"none", "laplacian" or "arap" (see module docstring)."""
    weight: float = 1.0
    """w: weight of the regulariser relative to the squared chamfer distance."""
    iterations: int = 300
    """Adam steps."""
    lr: float = 2e-3
    """Adam learning rate on the vertex positions (unit-cube units)."""

    def __post_init__(self) -> None:
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")
        if self.iterations < 0 or not self.lr > 0 or not self.weight >= 0:
            raise ValueError("iterations must be >= 0, lr > 0 and weight >= 0")


def cross_fit(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    face_index: torch.Tensor,
    bary: torch.Tensor,
    target: torch.Tensor,
    config: CrossFitConfig | None = None,
) -> torch.Tensor:
    """Fit the source mesh to the target points; returns the deformed vertices (V, 3).

    vertices: (V, 3) float source vertices, canonical frame; faces: (F, 3) int64.
    face_index: (N,) int64 and bary: (N, 3) float: surface samples of the source whose
        positions follow the vertices. target: (M, 3) float target surface samples.
    """
    config = config or CrossFitConfig()
    if vertices.ndim != 2 or vertices.shape[1] != 3 or target.ndim != 2 or target.shape[1] != 3:
        raise ValueError("vertices and target must be (V, 3) and (M, 3) point arrays")
    x0 = vertices.detach()
    x = x0.clone().requires_grad_(True)
    edges = mesh_edges(faces.cpu()).to(vertices.device)
    opt = torch.optim.Adam([x], lr=config.lr)
    for _ in range(config.iterations):
        pts = barycentric_points(x, faces, face_index, bary)
        loss = chamfer_distance(pts[None], target[None]).chamfer_mean[0]
        if config.regularizer == "laplacian":
            loss = loss + config.weight * laplacian_energy(x, x0, edges)
        elif config.regularizer == "arap":
            loss = loss + config.weight * arap_energy(x, x0, edges, arap_rotations(x, x0, edges))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return x.detach()
