"""Time the bridge's mesh write-back and read-back in the bpy module; prints JSON lines.

    python blender_addon/examples/bench_bridge.py [--repeats 3] 10000 100000 1000000

Used by `shapebridge bench transport` (the backend never imports bpy, so it runs this
as a subprocess). Each size is a grid mesh of about that many vertices.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bpy  # noqa: E402

from blender_addon.bridge.mesh import new_mesh, read_mesh  # noqa: E402


def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32), indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), np.zeros(n * n, np.float32)], axis=1)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    f = np.concatenate([np.stack([a, a + n, a + 1], 1), np.stack([a + 1, a + n, a + n + 1], 1)])
    return v, f.astype(np.int32)


def main(sizes: list[int], repeats: int = 3) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    for size in sizes:
        v, f = grid(int(round(size**0.5)))
        write, read = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            mesh = new_mesh("bench", v, f)
            obj = bpy.data.objects.new("bench", mesh)
            bpy.context.scene.collection.objects.link(obj)
            t1 = time.perf_counter()
            back = read_mesh(obj)
            t2 = time.perf_counter()
            assert back.vertices.shape == v.shape and back.faces.shape == f.shape
            write.append(t1 - t0)
            read.append(t2 - t1)
            bpy.data.objects.remove(obj)
            bpy.data.meshes.remove(mesh)
        print(json.dumps({"vertices": int(v.shape[0]), "faces": int(f.shape[0]),
                          "write_s": statistics.median(write), "read_s": statistics.median(read)}))


if __name__ == "__main__":
    args = sys.argv[1:]
    repeats = 3
    if args[:1] == ["--repeats"]:
        repeats, args = int(args[1]), args[2:]
    main([int(a) for a in args] or [10_000, 100_000, 1_000_000], repeats)
