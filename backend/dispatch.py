"""Second-level sub-commands (`shapebridge bench NAME`, `eval METHOD`, `train METHOD`).

Each table maps a name to a module with ``add_arguments(parser)`` and ``run(args)``;
only the module of the name being run is imported.
"""

from __future__ import annotations

import argparse
import importlib
import sys


def add_table(parser: argparse.ArgumentParser, table: dict[str, str], metavar: str) -> None:
    sub = parser.add_subparsers(dest="target", metavar=metavar, required=True)
    argv = sys.argv[2:3]
    for name, module in table.items():
        p = sub.add_parser(name, help=f"{name} ({module})")
        if argv and argv[0] != name and argv[0] not in ("-h", "--help"):
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise
            p.set_defaults(_run=lambda args, m=module: _missing(m))
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)


def _missing(module: str) -> int:
    print(f"shapebridge: {module} is not available in this version", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Run the sub-command chosen by `add_table`."""
    return args._run(args)
