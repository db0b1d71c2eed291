"""`shapebridge demo`: start a backend, run every method through the add-on in headless
Blender (the bpy module), save ``OUT/demo.blend`` and PNG previews, stop the backend.

The backend never imports bpy: the Blender side runs as its own process
(``blender_addon/examples/demo_scene.py``), as it would for a user.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from backend.server.process import ROOT, BackendProcess


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="out", help="folder for demo.blend, previews and logs")
    p.add_argument("--address", default="tcp://127.0.0.1:*", help="where the demo backend listens")
    p.add_argument("--blender", default=sys.executable,
                   help="Python with the bpy module, or a `blender` executable (run with --background)")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with BackendProcess(out, args.address, name="demo-backend") as backend:
        print(f"backend listening on {backend.address} (log: {backend.log_path})")
        script = ROOT / "blender_addon" / "examples" / "demo_scene.py"
        if Path(args.blender).name.startswith("blender"):
            cmd = [args.blender, "--background", "--factory-startup", "--python", str(script), "--"]
        else:
            cmd = [args.blender, str(script)]
        cmd += ["--address", backend.address, "--out", str(out)]
        code = subprocess.call(cmd, cwd=ROOT)
    print(f"demo finished in {time.monotonic() - t0:.1f} s with exit code {code}; outputs in {out}")
    return code
