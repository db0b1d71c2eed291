"""Per-shape training samples: labelled surface points, uniform and near-surface SDF
samples and occupancy voxels, all exact (computed from the analytic part primitives).

Independent random streams (``SeedSequence(seed).spawn``) drive the surface, uniform and
near-surface draws, so changing one count leaves the other arrays unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.data.shapes import Mesh, Shape

#: Half side of the cube that uniform samples fill.
UNIFORM_HALF_EXTENT = 0.55
#: Standard deviations of the isotropic gaussian added to near-surface samples; each
#: point draws one of them with equal probability.
NEAR_SIGMAS: tuple[float, ...] = (0.003, 0.01)


@dataclass
class ShapeSamples:
    """Samples of one shape, canonical frame.

    surface_points: (Ns, 3) float32 on the outer surface of the union (no inner faces).
    surface_normals: (Ns, 3) float32 unit outward normals (of the mesh face sampled).
    surface_labels: (Ns,) int32 semantic label id (index into PART_LABELS[category]).
    surface_instances: (Ns,) int32 part instance id.
    uniform_points: (Nu, 3) float32 uniform in [-0.55, 0.55]^3.
    uniform_sdf: (Nu,) float32 signed distance (occupancy = sdf < 0).
    near_points: (Nn, 3) float32 surface points + gaussian noise, sigma in NEAR_SIGMAS.
    near_sdf: (Nn,) float32 signed distance.
    voxels32: (32, 32, 32) bool occupancy at the cell centres of [-0.5, 0.5]^3, [x, y, z].
    voxels64: (64, 64, 64) bool, same at 64^3.
    """

    surface_points: np.ndarray
    surface_normals: np.ndarray
    surface_labels: np.ndarray
    surface_instances: np.ndarray
    uniform_points: np.ndarray
    uniform_sdf: np.ndarray
    near_points: np.ndarray
    near_sdf: np.ndarray
    voxels32: np.ndarray
    voxels64: np.ndarray


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-uniform points on a mesh.

    mesh: the shape's watertight mesh (canonical frame). n: number of points.
    Returns points (n, 3) float64, unit face normals (n, 3) float64 and the index (n,)
    int64 of the face each point lies on.
    """
    tri = mesh.vertices.astype(np.float64)[mesh.faces]  # (F, 3, 3)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    cdf = np.cumsum(double_area)
    face = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    face = np.minimum(face, len(cdf) - 1)
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    a, b, c = (1.0 - s), s * (1.0 - r2), s * r2  # uniform barycentrics
    t = tri[face]
    points = a[:, None] * t[:, 0] + b[:, None] * t[:, 1] + c[:, None] * t[:, 2]
    normals = cross[face] / np.maximum(double_area[face], 1e-30)[:, None]
    return points, normals, face


def sample_shape(shape: Shape, seed: int, n_surface: int = 16384, n_uniform: int = 16384,
                 n_near: int = 16384) -> ShapeSamples:
    """Draw the samples of ``shape`` (deterministic by ``seed``; see :class:`ShapeSamples`)."""
    for name, n in (("n_surface", n_surface), ("n_uniform", n_uniform), ("n_near", n_near)):
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
    surface_rng, uniform_rng, near_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3)
    )
    mesh = shape.mesh()
    points, normals, face = sample_surface(mesh, n_surface, surface_rng)
    part = mesh.face_parts[face]
    instances = np.array([p.instance for p in shape.parts], dtype=np.int32)

    uniform = uniform_rng.uniform(-UNIFORM_HALF_EXTENT, UNIFORM_HALF_EXTENT, (n_uniform, 3))
    uniform = uniform.astype(np.float32)

    base, _, _ = sample_surface(mesh, n_near, near_rng)
    sigma = np.asarray(NEAR_SIGMAS)[near_rng.integers(0, len(NEAR_SIGMAS), n_near)]
    near = (base + near_rng.standard_normal((n_near, 3)) * sigma[:, None]).astype(np.float32)

    return ShapeSamples(
        surface_points=points.astype(np.float32),
        surface_normals=normals.astype(np.float32),
        surface_labels=shape.part_label_ids()[part],
        surface_instances=instances[part],
        uniform_points=uniform,
        uniform_sdf=shape.sdf(uniform),
        near_points=near,
        near_sdf=shape.sdf(near),
        voxels32=shape.occupancy_grid(32),
        voxels64=shape.occupancy_grid(64),
    )
