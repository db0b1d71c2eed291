"""The add-on in the real Blender application (Debian's 3.4.1) under a virtual display.

Blender runs with its own Python (system python3 with python3-zmq, python3-msgpack and
python3-numpy), registers the add-on from this checkout, connects to a real backend
started by the test, runs `mesh_stats` on the default cube through the panel's operator
(asynchronously: the result arrives through the `bpy.app.timers` drain), opens the 3D
View sidebar on the ShapeBridge tab, takes a screenshot and writes the sidebar's pixel
rectangle to JSON. A second run without the add-on gives the baseline sidebar.

Blender 3.4 has no API for a region's active tab (``Region.active_panel_category`` came
in 4.x), so the script starts Blender with ``--enable-event-simulate`` and clicks down the
sidebar's tab strip with `Window.event_simulate` until the ShapeBridge panel draws (a
wrapper around the panel's ``draw`` counts draws). Newer Blenders set the property.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ARTIFACTS, ROOT

pytestmark = [pytest.mark.gui, pytest.mark.slow]

BLENDER = shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")

SCRIPT = r'''
import json, sys, time
import bpy

argv = sys.argv[sys.argv.index("--") + 1:]
opts = dict(zip(argv[0::2], argv[1::2]))
OUT, ADDRESS, WITH_ADDON = opts["--out"], opts.get("--address", ""), opts["--addon"] == "1"
state = {"drawn": 0, "step": 0, "clicks": [], "t0": time.monotonic(), "errors": []}
report = {}

if WITH_ADDON:
    sys.path.insert(0, opts["--repo"])
    import blender_addon
    from blender_addon.ui.state import SESSION
    blender_addon.register()
    panel = bpy.types.SHAPEBRIDGE_PT_backend
    original_draw = panel.draw

    def counting_draw(self, context):
        state["drawn"] += 1
        original_draw(self, context)

    panel.draw = counting_draw
    report["connect"] = sorted(bpy.ops.shapebridge.connect(address=ADDRESS))
    cube = bpy.data.objects["Cube"]
    bpy.context.view_layer.objects.active = cube
    cube.select_set(True)
    report["run"] = sorted(bpy.ops.shapebridge.run_method(
        method="mesh_stats", wait="ASYNC", params_json='{"delay_s": 1.0}'))


def view3d():
    win = bpy.context.window_manager.windows[0]
    for area in win.screen.areas:
        if area.type == "VIEW_3D":
            return win, area, next(r for r in area.regions if r.type == "UI")
    raise RuntimeError("no 3D View in the startup screen")


def job_settled():
    return not WITH_ADDON or all(not r.active and (r.applied or r.error)
                                 for r in SESSION.jobs.values())


def tick():
    try:
        return step()
    except Exception as exc:
        state["errors"].append(repr(exc))
        finish()
        return None


def step():
    win, area, region = view3d()
    state["step"] += 1
    n = state["step"]
    if n == 1:
        win.event_simulate(type="ESC", value="PRESS")  # close the splash screen
        win.event_simulate(type="ESC", value="RELEASE")
        area.spaces.active.show_region_ui = True
        if hasattr(region, "active_panel_category") and WITH_ADDON:
            region.active_panel_category = "ShapeBridge"
        area.tag_redraw()
        return 0.5
    if WITH_ADDON and state["drawn"] == 0 and n < 45:
        x = region.x + region.width - 12
        y = region.y + region.height - 10 - 15 * (n - 2)
        win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
        win.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
        win.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
        state["clicks"].append([x, y])
        return 0.25
    # move the pointer away (no tooltips), let the job finish and the panel redraw
    win.event_simulate(type="MOUSEMOVE", value="NOTHING", x=win.width // 3, y=win.height // 2)
    state.setdefault("settle", n)
    if (not job_settled() and time.monotonic() - state["t0"] < 60) or n < state["settle"] + 4:
        area.tag_redraw()
        return 0.25
    with bpy.context.temp_override(window=win, screen=win.screen, area=area):
        bpy.ops.screen.screenshot(filepath=OUT + ".png", check_existing=False)
    finish(win, region)
    return None


def finish(win=None, region=None):
    if win is not None:
        report["window"] = [win.width, win.height]
        report["region"] = [region.x, region.y, region.width, region.height]
    report.update(drawn=state["drawn"], clicks=state["clicks"], errors=state["errors"],
                  blender=list(bpy.app.version))
    if WITH_ADDON:
        report["connected"] = SESSION.connected
        report["last_error"] = SESSION.last_error
        report["jobs"] = [{"state": r.state, "objects": r.objects, "error": r.error}
                          for r in SESSION.jobs.values()]
        coll = bpy.data.collections.get("ShapeBridge")
        report["collection"] = [o.name for o in coll.objects] if coll else []
        if win is not None:  # one undo step takes the whole result away again
            with bpy.context.temp_override(window=win, screen=win.screen):
                report["undo"] = sorted(bpy.ops.ed.undo())
            coll = bpy.data.collections.get("ShapeBridge")
            report["after_undo"] = [o.name for o in coll.objects] if coll else []
            report["cube_after_undo"] = "Cube" in bpy.data.objects
        blender_addon.unregister()
    with open(OUT + ".json", "w") as f:
        json.dump(report, f)
    bpy.ops.wm.quit_blender()


bpy.app.timers.register(tick, first_interval=1.0)
'''


def _run_blender(tmp_path: Path, name: str, addon: bool, address: str = "") -> tuple[dict, np.ndarray]:
    script = tmp_path / "gui_script.py"
    script.write_text(SCRIPT)
    out = tmp_path / name
    cmd = [XVFB_RUN, "-a", "-s", "-screen 0 1600x1000x24", BLENDER, "--factory-startup",
           "--enable-event-simulate", "--python", str(script), "--",
           "--repo", str(ROOT), "--out", str(out), "--addon", "1" if addon else "0",
           "--address", address]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.with_suffix(".json").exists(), f"Blender wrote no report:\n{log}"
    report = json.loads(out.with_suffix(".json").read_text())
    assert not report["errors"], f"{report['errors']}\n{log}"
    png = out.with_suffix(".png")
    assert png.exists(), f"no screenshot:\n{log}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, ARTIFACTS / f"gui_{name}.png")
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    return report, pixels


def _sidebar(report: dict, pixels: np.ndarray) -> np.ndarray:
    """The sidebar region's pixels (region rect is bottom-left based, the PNG top-first)."""
    x, y, w, h = report["region"]
    height = pixels.shape[0]
    return pixels[height - (y + h): height - y, x: x + w]


@pytest.mark.skipif(BLENDER is None or XVFB_RUN is None,
                    reason="needs the Blender application and Xvfb (make apt)")
def test_sidebar_panel_in_blender_gui(start_backend, tmp_path):
    backend = start_backend()
    report, pixels = _run_blender(tmp_path, "sidebar_addon", addon=True, address=backend.address)
    assert report["connect"] == ["FINISHED"] and report["run"] == ["FINISHED"]
    assert report["drawn"] > 0, "the ShapeBridge panel never drew (tab not activated)"
    assert report["connected"], report["last_error"]
    # the job ran asynchronously and the timer drain added the result as one undo step
    assert report["jobs"] == [{"state": "done", "objects": ["MeshStats"], "error": ""}]
    assert report["collection"] == ["MeshStats"]
    assert report["undo"] == ["FINISHED"] and report["after_undo"] == []
    assert report["cube_after_undo"]
    baseline, base_pixels = _run_blender(tmp_path, "sidebar_baseline", addon=False)
    assert baseline["region"] == report["region"]
    ours, theirs = _sidebar(report, pixels), _sidebar(baseline, base_pixels)
    changed = (np.abs(ours - theirs).max(axis=2) > 40).mean()
    assert changed > 0.05, f"only {changed:.1%} of the sidebar differs from the baseline"
    # the panel draws text and widgets: many light (text) pixels in the sidebar
    text = (ours.min(axis=2) > 170).mean()
    assert text > 0.01, f"the sidebar looks empty ({text:.2%} light pixels)"


@pytest.mark.skipif(BLENDER is None, reason="needs the Blender application (make apt)")
def test_docs_example_in_blender_app(start_backend, tmp_path):
    """docs/addon.md's scripting example, run by `blender --background` as the docs say."""
    text = (ROOT / "docs" / "addon.md").read_text()
    start = text.index("```python\n# shapebridge_batch.py") + len("```python\n")
    script = tmp_path / "shapebridge_batch.py"
    script.write_text(text[start: text.index("```", start)])
    backend = start_backend()
    proc = subprocess.run(
        [BLENDER, "--background", "--factory-startup", "--python-exit-code", "1",
         "--python", str(script), "--", backend.address, str(ROOT)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "MeshStats area" in proc.stdout
    assert (tmp_path / "shapebridge_batch.blend").exists()
