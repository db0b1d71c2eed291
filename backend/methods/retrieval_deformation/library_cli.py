"""``shapebridge library index DIR --out LIB``: turn a folder of meshes into a stored
source library (parts from named groups, else connected components)."""

from __future__ import annotations

import argparse

from backend.methods.retrieval_deformation.library import folder_library


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="folder of OBJ, GLB/GLTF, PLY, STL or OFF files")
    parser.add_argument("--out", required=True, help="library folder to write")
    parser.add_argument("--up", choices=("y", "z"), default="y", help="the files' up axis")
    parser.add_argument("--front", default=None, help="the files' front axis (default +z / -y)")
    parser.add_argument("--n-points", type=int, default=2048)


def run(args: argparse.Namespace) -> int:
    lib = folder_library(args.directory, args.up, args.front, args.n_points)
    lib.save(args.out)
    parts = sum(lib.num_parts(s) for s in range(len(lib)))
    print(f"indexed {len(lib)} sources ({parts} parts) into {args.out}")
    return 0
