"""Headless demo: build a scene, run every method the backend offers, save and render it.

Runs with the bpy module or inside Blender::

    python blender_addon/examples/demo_scene.py --address tcp://127.0.0.1:5557 --out out
    blender --background --python blender_addon/examples/demo_scene.py -- --address ... --out out

Builds a UV sphere, a Suzanne and a Suzanne with a level-4 Subdivision modifier (~126k
evaluated vertices; the add-on sends the evaluated mesh), a box chair (~3k evaluated
vertices; the input of the methods listed in `DEMO_PLANS`, with fast parameters), plus a
camera and a light; registers the add-on, connects, runs every registered method through
``bpy.ops.shapebridge.run_method`` (once per built mesh for single-mesh methods), saves
``OUT/demo.blend``, renders Workbench PNG previews (``OUT/scene.png`` and one per run,
results coloured by their colour attribute), prints a summary table and exits 1 if any run
failed. Inputs of a kind the demo cannot build are skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: Methods that need a particular target: method -> (input name -> built object, parameters
#: overriding the defaults so the demo stays fast on a CPU).
DEMO_PLANS = {
    "retrieval_deformation": ({"mesh": "Chair"}, {
        "library": "builtin:chair", "top_k": 3, "ido_max_iters": 50, "n_points": 1024,
        "untrained_sources": 20}),
    # The box chair matched to a built-in armchair (the shipped chair network, the paper's
    # 50 steps; a few seconds on a CPU).
    "feature_matching": ({"source": "Chair"}, {
        "category": "chair", "target_shape": "chair:12", "shape_keys": 6}),
}


def _parse(argv: list[str]) -> argparse.Namespace:
    if "--" in argv:  # blender --background --python demo_scene.py -- ARGS
        argv = argv[argv.index("--") + 1:]
    elif argv and argv[0].endswith(".py"):
        argv = argv[1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", help="backend address; omit to start a local backend")
    p.add_argument("--out", default="out", help="folder for demo.blend and the PNG previews")
    p.add_argument("--python", default="", help="Python of the local backend (default: this one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per run")
    p.add_argument("--no-render", action="store_true", help="skip the PNG previews")
    return p.parse_args(argv)


def build_scene(bpy) -> list:
    """Three built-in meshes spaced along X, a camera and a sun; returns the mesh objects."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.mesh.primitive_uv_sphere_add(segments=64, ring_count=32, radius=0.8, location=(-3, 0, 0))
    sphere = bpy.context.active_object
    sphere.name = "Sphere"
    bpy.ops.mesh.primitive_monkey_add(size=1.6, location=(0, 0, 0))
    monkey = bpy.context.active_object
    monkey.name = "Suzanne"
    bpy.ops.mesh.primitive_monkey_add(size=1.6, location=(3, 0, 0))
    dense = bpy.context.active_object
    dense.name = "Suzanne_100k"
    mod = dense.modifiers.new("Subdivision", "SUBSURF")
    mod.levels = mod.render_levels = 4
    build_chair(bpy, location=(6, 0, 0))
    bpy.ops.object.camera_add(location=(0, -10, 3))
    cam = bpy.context.active_object
    cam.rotation_euler = (math.radians(78), 0, 0)
    bpy.context.scene.camera = cam
    bpy.ops.object.light_add(type="SUN", location=(2, -3, 5))
    return [sphere, monkey, dense]


def build_chair(bpy, location) -> None:
    """A Z-up box chair "Chair" (seat, back, four legs joined into one mesh)."""
    boxes = [((0, 0, 0.45), (0.5, 0.5, 0.06)), ((0, 0.22, 0.78), (0.5, 0.06, 0.6))]
    boxes += [((x, y, 0.21), (0.06, 0.06, 0.42)) for x in (-0.22, 0.22) for y in (-0.22, 0.22)]
    parts = []
    for center, size in boxes:
        bpy.ops.mesh.primitive_cube_add(size=1.0, location=center)
        cube = bpy.context.active_object
        cube.scale = size
        parts.append(cube)
    for obj in parts:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = parts[0]
    bpy.ops.object.transform_apply(location=True, rotation=False, scale=True)
    bpy.ops.object.join()
    chair = bpy.context.active_object
    chair.name = "Chair"
    chair.location = location
    # Simple subdivision (shape unchanged, ~3k evaluated vertices), so that Match Shape has
    # vertices inside the boxes' faces to move.
    mod = chair.modifiers.new("Subdivision", "SUBSURF")
    mod.subdivision_type = "SIMPLE"
    mod.levels = mod.render_levels = 3


def evaluated_vertex_count(bpy, obj) -> int:
    ev = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = ev.to_mesh()
    try:
        return len(mesh.vertices)
    finally:
        ev.to_mesh_clear()


def plan_runs(schema: dict, meshes: list, scene) -> tuple[list[dict], str]:
    """Input assignments (input name -> datablock name) for a method, or a skip reason."""
    if schema["name"] in DEMO_PLANS:
        return [dict(DEMO_PLANS[schema["name"]][0])], ""
    inputs = schema.get("inputs", [])
    mesh_inputs = [i for i in inputs if i["kind"] in ("mesh", "points")]
    if mesh_inputs and all(i.get("optional") for i in inputs):  # one of several target kinds
        mesh_inputs = mesh_inputs[:1]
    fixed: dict[str, str] = {}
    for spec in inputs:
        if spec["kind"] == "camera":
            fixed[spec["name"]] = scene.camera.name
        elif spec["kind"] not in ("mesh", "points") and not spec.get("optional"):
            return [], f"the demo cannot build a '{spec['kind']}' input ('{spec['name']}') yet"
    if len(mesh_inputs) > len(meshes):
        return [], f"needs {len(mesh_inputs)} meshes, the demo has {len(meshes)}"
    if len(mesh_inputs) == 1:
        return [dict(fixed, **{mesh_inputs[0]["name"]: m.name}) for m in meshes], ""
    return [dict(fixed, **{s["name"]: m.name for s, m in zip(mesh_inputs, meshes)})], ""


def frame_camera(bpy, cam, objects) -> None:
    """Point the camera at the objects' world bounding box from the front-right, above."""
    from mathutils import Vector

    corners = [o.matrix_world @ Vector(c) for o in objects for c in o.bound_box]
    lo = Vector([min(c[i] for c in corners) for i in range(3)])
    hi = Vector([max(c[i] for c in corners) for i in range(3)])
    center, radius = (lo + hi) / 2, max((hi - lo).length / 2, 1e-3)
    distance = radius / math.tan(cam.data.angle / 2) * 1.1
    direction = Vector((0.45, -1.0, 0.45)).normalized()
    cam.location = center + direction * distance
    cam.rotation_euler = (-direction).to_track_quat("-Z", "Y").to_euler()
    cam.data.clip_end = distance * 4


def render(bpy, path: Path, visible: list) -> str:
    """Render the visible objects with Workbench (colour attributes shown) to a PNG.

    Objects already hidden from render stay hidden: a Retrieve & Deform result shows the
    candidate the panel shows, not all k on top of each other."""
    scene = bpy.context.scene
    before = {obj.name: obj.hide_render for obj in scene.objects}
    for obj in scene.objects:
        obj.hide_render = before[obj.name] or (obj.type in ("MESH", "EMPTY") and obj not in visible)
    shown = [o for o in visible if not o.hide_render]
    frame_camera(bpy, scene.camera, [o for o in shown if o.type == "MESH"] or shown or visible)
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.color_type = "VERTEX"
    scene.render.resolution_x, scene.render.resolution_y = 480, 360
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    for obj in scene.objects:  # restore: hidden candidates stay out of later renders
        obj.hide_render = before.get(obj.name, False)
    return path.name


def main(argv: list[str]) -> int:
    args = _parse(argv)
    try:
        import blender_addon  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(ROOT))
    import bpy

    import blender_addon
    from blender_addon.ui.prefs import get_prefs
    from blender_addon.ui.state import SESSION

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    meshes = build_scene(bpy)
    blender_addon.register()
    rows: list[tuple[str, str, str, str, str]] = []
    failures = 0
    try:
        prefs = get_prefs()
        prefs.job_timeout = args.timeout
        try:
            if args.address:
                bpy.ops.shapebridge.connect(address=args.address)
            else:
                prefs.python, prefs.workdir = args.python or sys.executable, str(ROOT)
                bpy.ops.shapebridge.start_local_backend()
        except RuntimeError as exc:
            reason = str(exc).strip().removeprefix("Error: ")
            print(f"demo: could not reach a backend: {reason}", file=sys.stderr)
            return 2
        info = SESSION.server_info
        print(f"backend {SESSION.client.address}: version {info.get('version')}, "
              f"device {info.get('gpu_name') or info.get('device')}")
        for m in meshes:
            print(f"  input {m.name}: {evaluated_vertex_count(bpy, m)} vertices (evaluated)")
        for name, schema in sorted(SESSION.methods.items()):
            runs, reason = plan_runs(schema, meshes, bpy.context.scene)
            if not runs:
                print(f"skip {name}: {reason}")
                rows.append((name, "-", "-", "skipped", reason))
                continue
            for inputs in runs:
                label = ", ".join(f"{k}={v}" for k, v in inputs.items())
                t0 = time.perf_counter()
                try:
                    params = DEMO_PLANS.get(name, ({}, {}))[1]
                    bpy.ops.shapebridge.run_method(
                        method=name, wait="BLOCK", inputs_json=json.dumps(inputs),
                        params_json=json.dumps(params))
                except RuntimeError as exc:
                    failures += 1
                    rows.append((name, label, f"{time.perf_counter() - t0:.2f}", "FAILED",
                                 str(exc).strip()))
                    continue
                seconds = time.perf_counter() - t0
                record = list(SESSION.jobs.values())[-1]
                objs = [bpy.data.objects[n] for n in record.objects]
                preview = ""
                if not args.no_render:
                    stem = f"{name}_{'_'.join(inputs.values())}.png"
                    preview = render(bpy, out / stem, objs)
                rows.append((name, label, f"{seconds:.2f}", ", ".join(record.objects), preview))
        if not args.no_render:
            render(bpy, out / "scene.png", [o for o in bpy.context.scene.objects
                                            if o.type == "MESH"])
        bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))
    finally:
        blender_addon.unregister()
    _print_table(rows)
    print(f"saved {out / 'demo.blend'}; {failures} failed run(s)")
    return 1 if failures or not rows else 0


def _print_table(rows: list[tuple[str, ...]]) -> None:
    head = ("method", "inputs", "seconds", "outputs", "preview / note")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main(sys.argv))
