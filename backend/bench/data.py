"""`shapebridge bench data`: how fast the built-in dataset is generated.

Per category, on ``--shapes`` shapes (one process, one torch thread, as a worker runs):
shapes/s of shape + mesh + samples, renders/s of the tiled PyTorch3D rasteriser (and of
one naive PyTorch3D call over the whole image, on a few shapes, as the ratio
naive/tiled), shard writing, an end-to-end ``generate_dataset`` run with all cores, and
the projected minutes for the default training set (``--default-count`` shapes x
``--views`` views) with all cores:
``count * (seconds per shape / workers + write seconds per shape) / 60``, and the same
from the end-to-end rate (an upper bound: its process start-up is paid over only
``--shapes`` shapes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``shapebridge bench data``."""
    parser.add_argument("--categories", default="all",
                        help="comma-separated categories, or 'all' (default)")
    parser.add_argument("--shapes", type=int, default=16, help="shapes measured per category")
    parser.add_argument("--naive-shapes", type=int, default=4,
                        help="shapes also rendered with one naive PyTorch3D call")
    parser.add_argument("--views", type=int, default=8, help="views per shape (default 8)")
    parser.add_argument("--resolution", type=int, default=128, help="render size (default 128)")
    parser.add_argument("--default-count", type=int, default=1000,
                        help="shapes per category of the projected default training set")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes for the end-to-end run and the projection")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed")
    parser.add_argument("--json", default=None, help="write the results files here")


def _time(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_category(category: str, args: argparse.Namespace) -> list[dict]:
    """Result rows of one category (see the module docstring)."""
    import torch

    from backend.data.generate import GenerateConfig, build_index, generate_dataset, make_record
    from backend.data.render import RenderConfig, render_mesh
    from backend.data.samples import sample_shape
    from backend.data.shapes import generate_shape
    from backend.data.store import field_specs, write_shard

    render = RenderConfig(resolution=args.resolution, views=args.views)
    naive = RenderConfig(resolution=args.resolution, views=args.views, tile_size=None)
    config = GenerateConfig(category, args.shapes, args.seed, args.shapes, render)
    seeds = [int(s) for s in build_index(config)["seed"]]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    t_shape = t_render = t_naive = 0.0
    faces = 0
    records = []
    try:
        for k, seed in enumerate(seeds):
            def build(seed=seed):
                shape = generate_shape(category, seed)
                return shape, shape.mesh(), sample_shape(shape, seed)

            (shape, mesh, samples), dt = _time(build)
            t_shape += dt
            faces += len(mesh.faces)
            mesh_args = (mesh.vertices, mesh.faces, mesh.face_parts, shape.part_label_ids())
            renders, dt = _time(lambda a=mesh_args, s=seed: render_mesh(*a, render, s))
            t_render += dt
            if k < args.naive_shapes:
                _, dt = _time(lambda a=mesh_args, s=seed: render_mesh(*a, naive, s))
                t_naive += dt
            records.append(make_record(shape, samples, renders))
    finally:
        torch.set_num_threads(threads)
    n = len(seeds)
    n_naive = min(n, args.naive_shapes)
    with tempfile.TemporaryDirectory() as tmp:
        _, t_write = _time(lambda: write_shard(tmp, 0, records, field_specs(records[0])))
        out = Path(tmp) / "e2e"
        _, t_e2e = _time(lambda: generate_dataset(out, config, args.workers, progress=False))
    tiled_rate = n * args.views / t_render
    per_shape = (t_shape + t_render) / n
    minutes = args.default_count * (per_shape / args.workers + t_write / n) / 60.0
    cond = f"{args.views} views at {args.resolution} px"
    rows = [
        {"variant": "shape+mesh+samples", "metric": "shapes_per_s", "value": n / t_shape},
        {"variant": "render_tiled", "metric": "renders_per_s", "value": tiled_rate,
         "condition": cond},
        {"variant": "render_naive_pytorch3d", "metric": "renders_per_s",
         "value": n_naive * args.views / t_naive, "condition": cond, "n": n_naive},
        {"variant": "naive/tiled", "metric": "ratio",
         "value": (t_naive / n_naive) / (t_render / n), "condition": cond, "n": n_naive},
        {"variant": "mean_faces", "metric": "faces", "value": faces / n},
        {"variant": "write_shard", "metric": "ms_per_shape", "value": 1e3 * t_write / n},
        {"variant": "generate_end_to_end", "metric": "shapes_per_s", "value": n / t_e2e,
         "condition": f"{args.workers} workers, incl. process start-up"},
        {"variant": "projected_default_set", "metric": "minutes", "value": minutes,
         "condition": f"{args.default_count} shapes x {cond}, {args.workers} workers"},
        {"variant": "projected_default_set_e2e_upper_bound", "metric": "minutes",
         "value": args.default_count / (n / t_e2e) / 60.0,
         "condition": "from the end-to-end rate, start-up not amortised"},
    ]
    for row in rows:
        row["category"] = category
        row.setdefault("n", n)
    return rows


def run(args: argparse.Namespace) -> int:
    """Measure every requested category and print/write the table."""
    from backend.bench.results import write_results
    from backend.data.shapes import CATEGORIES

    categories = list(CATEGORIES) if args.categories == "all" else args.categories.split(",")
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        print(f"bench data: unknown categories {unknown}; use {list(CATEGORIES)} or 'all'")
        return 2
    rows = [row for c in categories for row in bench_category(c, args)]
    write_results("data", "bench", rows, args.json,
                  f"Dataset generation speed ({os.cpu_count()} CPU cores)")
    return 0
