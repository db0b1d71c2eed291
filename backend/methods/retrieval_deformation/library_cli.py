"""``shapebridge library index DIR --out LIB``: turn a folder of meshes into a stored
source library (parts from named groups, else connected components).

With ``--checkpoint CKPT`` the new sources also join that trained model: their codes are
fitted by auto-decoding with its networks frozen (see `autodecode`), stored in
``LIB/checkpoint_<target>`` and used whenever LIB is chosen as the library.
"""

from __future__ import annotations

import argparse

import torch

from backend.methods.retrieval_deformation.autodecode import FitConfig, fit_library_checkpoint
from backend.methods.retrieval_deformation.library import folder_library


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = FitConfig()
    parser.add_argument("directory", help="folder of OBJ, GLB/GLTF, PLY, STL or OFF files")
    parser.add_argument("--out", required=True, help="library folder to write")
    parser.add_argument("--up", choices=("y", "z"), default="y", help="the files' up axis")
    parser.add_argument("--front", default=None, help="the files' front axis (default +z / -y)")
    parser.add_argument("--n-points", type=int, default=2048)
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="trained checkpoint to fit the new sources' codes for (repeatable: "
                        "one per target kind)")
    parser.add_argument("--fit-steps", type=int, default=d.steps, help="auto-decoding steps")
    parser.add_argument("--fit-targets", type=int, default=200,
                        help="training targets of the checkpoint's category used for the fit")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace) -> int:
    lib = folder_library(args.directory, args.up, args.front, args.n_points)
    lib.save(args.out)
    parts = sum(lib.num_parts(s) for s in range(len(lib)))
    print(f"indexed {len(lib)} sources ({parts} parts) into {args.out}")
    for checkpoint in args.checkpoint:
        out = fit_library_checkpoint(checkpoint, args.out, FitConfig(steps=args.fit_steps),
                                     args.fit_targets, args.device)
        print(f"fitted the codes of {len(lib)} sources for {checkpoint} into {out}")
    return 0
