"""`mesh_stats`: a diagnostic method that returns its input mesh with statistics.

It exercises every path of the system (inputs, params, progress, cancellation, mesh
output with a colour attribute, scores) without a learned model, and is cheap enough
to run on 1M-vertex meshes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from backend.methods import register
from backend.methods.base import InputSpec, JobContext, Method, MethodResult, Output, param


@dataclass
class MeshStatsConfig:
    color_by: str = param("height", "Colour attribute written on the result", choices=("height", "none"))
    scale: float = param(1.0, "Uniform scale applied to the returned copy", min=1e-3, max=1e3)
    delay_s: float = param(0.0, "Seconds to wait in steps before answering (to test progress and cancel)", min=0.0, max=600.0)


def mesh_statistics(vertices: np.ndarray, faces: np.ndarray) -> dict[str, float]:
    """Area, signed volume, bounding box and topology of a triangle mesh.

    vertices: (V, 3) float; faces: (F, 3) int with indices in [0, V).
    """
    v = vertices.astype(np.float64, copy=False)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    cross = np.cross(b - a, c - a)
    area = 0.5 * np.linalg.norm(cross, axis=1).sum()
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    key = edges[:, 0].astype(np.int64) * (int(v.shape[0]) + 1) + edges[:, 1]
    _, counts = np.unique(key, return_counts=True)
    lo, hi = v.min(axis=0), v.max(axis=0)
    return {
        "vertices": float(v.shape[0]),
        "faces": float(faces.shape[0]),
        "edges": float(counts.size),
        "area": float(area),
        "volume": float(volume),
        "euler_characteristic": float(v.shape[0] - counts.size + faces.shape[0]),
        "watertight": float(bool(np.all(counts == 2))),
        "bbox_x": float(hi[0] - lo[0]),
        "bbox_y": float(hi[1] - lo[1]),
        "bbox_z": float(hi[2] - lo[2]),
    }


@register
class MeshStats(Method):
    name = "mesh_stats"
    title = "Mesh statistics"
    description = "Diagnostic: returns a copy of the mesh with its statistics and a height colour"
    Config = MeshStatsConfig
    inputs = (InputSpec("mesh", "mesh", "the mesh to measure (active object)"),)
    output_kinds = ("mesh",)

    def infer(self, inputs, config: MeshStatsConfig, ctx: JobContext) -> MethodResult:
        v = inputs["mesh.vertices"]
        f = inputs["mesh.faces"]
        steps = max(1, int(np.ceil(config.delay_s / 0.05)))
        for i in range(steps):
            if config.delay_s > 0:
                time.sleep(config.delay_s / steps)
            ctx.progress((i + 1) / (steps + 1), "waiting" if config.delay_s else "measuring")
        stats = mesh_statistics(v, f)
        out = (v * np.float32(config.scale)).astype(np.float32, copy=False)
        arrays = {"vertices": out, "faces": np.ascontiguousarray(f, dtype=np.int32)}
        meta = {"object_name": "MeshStats", "placement": "mesh"}
        if config.color_by == "height":
            z = out[:, 2]
            t = (z - z.min()) / max(float(z.max() - z.min()), 1e-12)
            colors = np.empty((out.shape[0], 4), np.float32)
            colors[:, 0], colors[:, 1], colors[:, 2], colors[:, 3] = t, 0.2, 1.0 - t, 1.0
            arrays["colors"] = colors
            meta["color_name"] = "height"
        return MethodResult(outputs=[Output("result", "mesh", arrays, meta)], scores=stats)


@dataclass
class EchoConfig:
    pass


@register
class Echo(Method):
    name = "echo"
    title = "Echo"
    description = "Diagnostic: returns the mesh unchanged (connection check and transport benchmark)"
    Config = EchoConfig
    inputs = (InputSpec("mesh", "mesh", "the mesh to send back"),)
    output_kinds = ("mesh",)

    def infer(self, inputs, config: EchoConfig, ctx: JobContext) -> MethodResult:
        arrays = {"vertices": inputs["mesh.vertices"], "faces": inputs["mesh.faces"]}
        return MethodResult(outputs=[Output("result", "mesh", arrays, {"object_name": "Echo", "placement": "mesh"})])
