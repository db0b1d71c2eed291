"""`shapebridge data generate|preview|info`: build, look at and describe datasets."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate``, ``preview`` and ``info`` sub-commands to ``parser``."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    g = sub.add_parser("generate", help="generate a seeded procedural dataset (resumable)")
    g.add_argument("--category", required=True,
                   help="chair, table, cabinet, airplane, or 'all' (one sub-directory each)")
    g.add_argument("--count", type=int, required=True, help="shapes per category")
    g.add_argument("--views", type=int, default=8, help="renders per shape (default 8)")
    g.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--resolution", type=int, default=128, help="render size in pixels")
    g.add_argument("--workers", type=int, default=None,
                   help=f"processes (default: one per core, {os.cpu_count()} here)")
    g.add_argument("--shard-size", type=int, default=256, help="shapes per shard")
    g.add_argument("--device", default="cpu", help="render device (cpu or cuda)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("preview", help="write a PNG contact sheet of a dataset")
    p.add_argument("dir", help="dataset directory (or the parent of several)")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--count", type=int, default=16, help="shapes on the sheet (default 16)")
    p.add_argument("--columns", type=int, default=2, help="tiles per row (default 2)")

    i = sub.add_parser("info", help="print a dataset's manifest summary")
    i.add_argument("dir", help="dataset directory (or the parent of several)")
    i.add_argument("--fields", action="store_true", help="also list every field")


def run(args: argparse.Namespace) -> int:
    """Run the chosen action; returns the process exit status."""
    try:
        if args.data_command == "generate":
            return _generate(args)
        if args.data_command == "preview":
            from backend.data.preview import write_preview

            print(write_preview(args.dir, args.out, args.count, args.columns))
            return 0
        return _info(args)
    except ValueError as exc:
        print(f"shapebridge data: {exc}", file=sys.stderr)
        return 2


def _generate(args: argparse.Namespace) -> int:
    from backend.data.generate import GenerateConfig, generate_dataset
    from backend.data.render import RenderConfig
    from backend.data.shapes import CATEGORIES

    categories = list(CATEGORIES) if args.category == "all" else [args.category]
    render = RenderConfig(resolution=args.resolution, views=args.views)
    for category in categories:
        out = Path(args.out) / category if args.category == "all" else Path(args.out)
        config = GenerateConfig(category, args.count, args.seed, args.shard_size, render)
        report = generate_dataset(
            out, config, workers=args.workers, progress=not args.no_progress, device=args.device
        )
        print(f"{category}: {out} ({len(report['written'])} shards written, "
              f"{len(report['skipped'])} already complete)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from backend.data.preview import dataset_dirs
    from backend.data.store import read_manifest

    for root in dataset_dirs(args.dir):
        m = read_manifest(root)
        cfg = m["config"]["render"]
        print(f"{root}: {m['category']}, {m['count']} shapes in {m['num_shards']} shards, "
              f"{'complete' if m['complete'] else 'INCOMPLETE'}; seed {m['config']['seed']}; "
              f"{cfg['views']} views at {cfg['resolution']} px; splits "
              + json.dumps(m["splits"]["counts"]))
        if args.fields and m["fields"]:
            for name, spec in m["fields"].items():
                shape = spec.get("shape", ["*", *spec.get("inner_shape", [])])
                print(f"  {name:32s} {spec['kind']:6s} {spec['dtype']:5s} {shape}")
    return 0
