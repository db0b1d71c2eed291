"""`shapebridge` command line: serve, keys, data, train, eval, bench, demo, library.

Each sub-command lives in its own module and is imported only when used, so
`shapebridge serve --help` does not pay for torch when it is not needed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, help). The module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("backend.server.cli", "run the backend server"),
    "keys": ("backend.server.keys", "create CURVE key pairs for a remote backend"),
    "data": ("backend.data.cli", "generate, inspect and preview the built-in shape data"),
    "bench": ("backend.bench.cli", "run a benchmark and print its table"),
    "eval": ("backend.evaluation", "evaluate a method and print its paper's tables"),
    "train": ("backend.training", "train a method"),
    "library": ("backend.library", "index a folder of your meshes as a retrieval library"),
    "demo": ("backend.demo", "run every registered method through Blender, headless"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shapebridge", description=__doc__.splitlines()[0])
    from backend import __version__

    parser.add_argument("--version", action="version", version=f"shapebridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:]
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # Import only the module of the command being run (or all of them for --help).
        if name in argv[:1] or not argv or argv[0] in ("-h", "--help"):
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if not exc.name or not exc.name.startswith("backend"):
                    raise
                p.set_defaults(_run=lambda args, m=module: _missing(m))
                continue
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def _missing(module: str) -> int:
    print(f"shapebridge: this command is not available yet ({module} is missing)", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args()
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
