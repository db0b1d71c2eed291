"""`make demo` (= `shapebridge demo`): a real backend process, the demo scene script in its
own bpy-module process, every method run through the add-on; the saved file read back."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

#: Read back in a fresh bpy-module process (the test process keeps its own scene).
CHECK = r"""
import json, sys
import bpy
import numpy as np
bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
match = bpy.data.objects["MatchShape"]
keys = match.data.shape_keys.key_blocks
co = lambda kb: np.array([v.co[:] for v in kb.data])
candidates = sorted((o for o in bpy.data.objects if o.name.startswith("Retrieved_")),
                    key=lambda o: o.name)
print(json.dumps({
    "keys": [k.name for k in keys],
    "moved": float(np.linalg.norm(co(keys[-1]) - co(keys[0]), axis=1).mean()),
    "colours": [a.name for a in match.data.color_attributes],
    "t": float(match["shapebridge_t"]),
    "target_shape": json.loads(match["shapebridge_params"])["target_shape"],
    "shown": [o.name for o in candidates if not o.hide_render],
    "candidates": len(candidates),
    "chair_vertices": len(bpy.data.objects["Chair"].evaluated_get(
        bpy.context.evaluated_depsgraph_get()).data.vertices),
}))
"""


def test_make_demo_runs_every_method_and_saves_a_scene_a_user_can_scrub(tmp_path):
    """The demo exits 0 with no failed run, writes the .blend and one preview per run, and
    the file holds what the README promises: the box chair matched to a built-in armchair
    as a scrubbable copy (shape keys t = 0 .. 1, moved, coloured by the target's parts) and
    three Retrieve & Deform candidates of which only the first is shown."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "backend", "demo", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "0 failed run(s)" in proc.stdout
    for name in ("demo.blend", "scene.png", "feature_matching_Chair.png",
                 "retrieval_deformation_Chair.png", "echo_Suzanne.png"):
        assert (out / name).stat().st_size > 1000, name

    check = subprocess.run([sys.executable, "-c", CHECK, str(out / "demo.blend")], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-3000:]
    got = json.loads(check.stdout.strip().splitlines()[-1])
    assert got["keys"][0] == "Basis" and got["keys"][1:] == [
        f"t={t:.2f}" for t in np.linspace(0, 1, 6)]
    assert got["target_shape"] == "chair:12" and got["t"] == 1.0
    assert got["moved"] > 0.01  # the chair network moved the vertices towards the armchair
    assert got["colours"], "the target's part colours were not transferred"
    assert got["chair_vertices"] > 2000  # the subdivided box chair, as the plan says
    assert got["candidates"] == 3 and got["shown"] == ["Retrieved_1"]
