"""The add-on in the real `bpy` module (5.0.1) against a real backend process.

Each test starts from factory settings with the add-on registered (fixture `addon`), so
the bpy module's global state does not leak between tests. `bpy.app.timers` never fire in
the bpy module: the non-blocking path is exercised by calling the drain directly.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon import bridge  # noqa: E402
from blender_addon.ui import methods  # noqa: E402
from blender_addon.ui.prefs import get_prefs  # noqa: E402
from blender_addon.ui.state import SESSION, timer  # noqa: E402
from tests.conftest import assert_close  # noqa: E402


@pytest.fixture
def connected(addon, backend_server):
    assert bpy.ops.shapebridge.connect(address=backend_server.address) == {"FINISHED"}
    return backend_server


def positions(mesh) -> np.ndarray:
    """(V, 3) float32 vertex positions, read the slow obvious way (per vertex)."""
    return np.array([tuple(v.co) for v in mesh.vertices], dtype=np.float32)


def make_sphere(location=(0.0, 0.0, 0.0), segments: int = 32, rings: int = 16):
    """A built-in UV sphere (quads and pole triangles), selected and active.

    segments=400, rings=250 gives 99,602 vertices (the operator takes seconds there)."""
    bpy.ops.mesh.primitive_uv_sphere_add(segments=segments, ring_count=rings, radius=1.0,
                                         location=location)
    return bpy.context.active_object


def result_objects() -> list:
    coll = bpy.data.collections.get(bridge.COLLECTION_NAME)
    return list(coll.objects) if coll is not None else []


def test_register_unregister_roundtrip():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    try:
        for op in ("connect", "disconnect", "start_local_backend", "stop_local_backend",
                   "run_method", "cancel_job"):
            assert hasattr(bpy.ops.shapebridge, op)
        assert hasattr(bpy.types, "SHAPEBRIDGE_PT_backend")
        assert bpy.app.timers.is_registered(timer)
        assert get_prefs().address.startswith("tcp://")
    finally:
        blender_addon.unregister()
    assert not hasattr(bpy.types, "SHAPEBRIDGE_PT_backend")
    assert not bpy.app.timers.is_registered(timer)
    # a second cycle works (no stale classes)
    blender_addon.register()
    blender_addon.unregister()


def test_connect_reports_server_info(connected):
    info = SESSION.server_info
    assert info["methods"]["mesh_stats"]["name"] == "mesh_stats"
    assert "device" in info and "version" in info
    assert SESSION.connected


def test_mesh_stats_100k_result_written_back_and_undoable(connected):
    source = make_sphere(location=(1.0, 2.0, 3.0), segments=400, rings=250)
    source.rotation_euler = (0.3, 0.0, 0.7)
    bpy.context.view_layer.update()
    before = positions(source.data)
    matrix_before = np.array(source.matrix_world)
    n_attrs = len(source.data.attributes)
    assert len(before) > 99_000
    bpy.ops.ed.undo_push(message="scene built")

    t0 = time.perf_counter()
    ret = bpy.ops.shapebridge.run_method(method="mesh_stats", params_json='{"scale": 2.0}')
    seconds = time.perf_counter() - t0
    assert ret == {"FINISHED"}
    print(f"mesh_stats round trip, {len(before)} vertices: {seconds:.2f} s")

    objs = result_objects()
    assert len(objs) == 1
    result = objs[0]
    assert result is not source and result.type == "MESH"
    assert_close(positions(result.data), 2.0 * before, name="result vertices")
    assert_close(np.array(result.matrix_world), matrix_before, atol=1e-5, name="placement")
    # faces: one triangle per loop triangle of the source
    source.data.calc_loop_triangles()
    assert len(result.data.polygons) == len(source.data.loop_triangles)
    color = result.data.color_attributes["height"]
    assert color.domain == "POINT" and len(color.data) == len(before)
    rgba = np.array([tuple(c.color) for c in color.data], dtype=np.float32)
    z = 2.0 * before[:, 2]
    t = (z - z.min()) / (z.max() - z.min())
    assert_close(rgba[:, 0], t, atol=1e-5, name="height colour")
    # provenance
    assert result["shapebridge_method"] == "mesh_stats"
    assert json.loads(result["shapebridge_params"])["scale"] == 2.0
    assert result["shapebridge_scores"]["vertices"] == float(len(before))
    assert len(result["shapebridge_job"]) >= 8
    # the input is untouched
    assert_close(positions(source.data), before, name="input vertices")
    assert_close(np.array(source.matrix_world), matrix_before, name="input matrix")
    assert len(source.data.attributes) == n_attrs
    assert source.name in bpy.context.scene.collection.objects

    # one undo step removes the whole result and keeps the input (undo reloads the data:
    # Python references to objects are invalid afterwards, look them up by name)
    source_name = source.name
    assert bpy.ops.ed.undo() == {"FINISHED"}
    assert result_objects() == []
    assert not [o for o in bpy.data.objects if o.name.startswith("MeshStats")]
    restored = bpy.data.objects[source_name]
    assert_close(positions(restored.data), before, name="input vertices after undo")


def test_async_run_applied_by_drain(connected):
    make_sphere()
    ret = bpy.ops.shapebridge.run_method(method="mesh_stats", wait="ASYNC",
                                         params_json='{"delay_s": 0.3}')
    assert ret == {"FINISHED"}
    (record,) = SESSION.jobs.values()
    assert result_objects() == [], "the result must wait for the drain on the main thread"
    end = time.monotonic() + 30
    while not record.applied and not record.error and time.monotonic() < end:
        SESSION.drain()
        time.sleep(0.01)
    assert record.error == ""
    assert record.applied and record.state == "done"
    assert [o.name for o in result_objects()] == record.objects
    # draining again never applies a result twice
    SESSION.drain()
    assert SESSION.finish(record) == []
    assert len(result_objects()) == 1


def test_drain_respects_time_budget(addon):
    ran = []
    for i in range(50):
        SESSION.queue.put(lambda i=i: (ran.append(i), time.sleep(0.002)))
    first = SESSION.drain(budget_s=0.005)
    assert 1 <= first < 50 and ran == list(range(first))
    while SESSION.drain(budget_s=0.005):
        pass
    assert ran == list(range(50))
    # a failing callback becomes the last error instead of escaping into the timer
    SESSION.queue.put(lambda: 1 / 0)
    assert SESSION.drain() == 1
    assert "ZeroDivisionError" in SESSION.last_error
    # the timer function drains too, and asks to be called again (never None: that stops it)
    SESSION.queue.put(lambda: ran.append("timer"))
    assert timer() > 0 and ran[-1] == "timer"


def test_dynamic_parameter_classes_map_to_params(connected):
    scene = bpy.context.scene
    for name, schema in SESSION.methods.items():
        cls = methods.settings_class(name)
        assert cls is not None, name
        settings = getattr(scene, methods.settings_attr(name))
        props = settings.bl_rna.properties
        ui_params = [p for p in schema["params"] if p.get("ui", True)]
        for p in ui_params:
            prop = props[p["name"]]
            assert prop.description == p["doc"]
            if p["type"] in ("int", "float"):
                if p["min"] is not None:
                    assert prop.hard_min == pytest.approx(p["min"])
                if p["max"] is not None:
                    assert prop.hard_max == pytest.approx(p["max"])
            if p["type"] == "enum":
                assert [i.identifier for i in prop.enum_items] == p["choices"]
        for spec in schema["inputs"]:
            assert methods.INPUT_PREFIX + spec["name"] in props
        defaults = methods.params_from_settings(settings, schema)
        assert defaults == {p["name"]: p["default"] for p in ui_params}
    settings = scene.shapebridge_mesh_stats
    settings.scale = 3.5
    settings.color_by = "none"
    params = methods.params_from_settings(settings, SESSION.methods["mesh_stats"])
    assert params["scale"] == 3.5 and params["color_by"] == "none"
    # the panel values reach the backend
    make_sphere()
    assert bpy.ops.shapebridge.run_method(method="mesh_stats") == {"FINISHED"}
    (result,) = result_objects()
    assert json.loads(result["shapebridge_params"])["scale"] == 3.5
    assert "height" not in result.data.color_attributes


def test_mesh_without_faces_is_refused_with_a_clear_error(connected):
    mesh = bpy.data.meshes.new("Loose")
    mesh.vertices.add(3)
    obj = bpy.data.objects.new("Loose", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    # an operator that reports an ERROR raises RuntimeError when called from Python
    with pytest.raises(RuntimeError, match="'Loose' has 3 vertices and 0 faces"):
        bpy.ops.shapebridge.run_method(method="mesh_stats")
    assert "0 faces" in SESSION.last_error
    assert SESSION.jobs == {}
    assert result_objects() == []
    # nothing selected at all
    bpy.ops.object.select_all(action="DESELECT")
    bpy.context.view_layer.objects.active = None
    with pytest.raises(RuntimeError, match="select a mesh object"):
        bpy.ops.shapebridge.run_method(method="mesh_stats")
    with pytest.raises(RuntimeError, match="offers no method 'nope'"):
        bpy.ops.shapebridge.run_method(method="nope")


def test_not_connected_run_is_refused(addon):
    assert not bpy.ops.shapebridge.run_method.poll()
    get_prefs().connect_timeout = 1.0
    with pytest.raises(RuntimeError, match="no ShapeBridge backend answered"):
        bpy.ops.shapebridge.connect(address="tcp://127.0.0.1:9")


def _objects_snapshot() -> set[str]:
    return {o.name for o in bpy.data.objects} | {m.name for m in bpy.data.meshes}


def test_backend_killed_mid_job_blocking(connected):
    get_prefs().inactivity_timeout = 2.0
    assert bpy.ops.shapebridge.connect(address=connected.address) == {"FINISHED"}
    make_sphere()
    before = _objects_snapshot()
    killer = threading.Timer(1.0, connected.kill)  # a process kill, no bpy in the thread
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(RuntimeError, match="backend"):
            bpy.ops.shapebridge.run_method(method="mesh_stats", params_json='{"delay_s": 30}')
    finally:
        killer.join()
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0 + 2.0 + 3.0, f"the error took {elapsed:.1f} s"
    assert SESSION.last_error
    assert _objects_snapshot() == before
    assert result_objects() == []


def test_backend_killed_mid_job_async(connected):
    get_prefs().inactivity_timeout = 2.0
    assert bpy.ops.shapebridge.connect(address=connected.address) == {"FINISHED"}
    make_sphere()
    before = _objects_snapshot()
    bpy.ops.shapebridge.run_method(method="mesh_stats", wait="ASYNC",
                                   params_json='{"delay_s": 30}')
    (record,) = SESSION.jobs.values()
    end = time.monotonic() + 10
    while record.future.state != "running" and time.monotonic() < end:
        SESSION.drain()
        time.sleep(0.02)
    assert record.future.state == "running"
    connected.kill()
    t0 = time.monotonic()
    while not record.error and time.monotonic() < t0 + 10:
        SESSION.drain()
        time.sleep(0.02)
    elapsed = time.monotonic() - t0
    assert record.error, "the job never failed after the backend died"
    assert elapsed < 2.0 + 3.0, f"the error took {elapsed:.1f} s"
    assert record.state == "error" and record.error in SESSION.last_error
    assert _objects_snapshot() == before


def test_failed_build_leaves_no_partial_objects(addon):
    """A result whose second output is broken adds nothing (the first is removed again)."""
    from blender_addon import protocol

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    f = np.array([[0, 1, 2]], np.int32)
    msg = protocol.Message(
        protocol.MsgType.RESULT,
        method="mesh_stats",
        arrays={"a.vertices": v, "a.faces": f, "b.vertices": v, "b.faces": f + 5},
        body={"outputs": [{"name": "a", "kind": "mesh", "meta": {}},
                          {"name": "b", "kind": "mesh", "meta": {}}],
              "provenance": {"method": "mesh_stats"}},
    )
    before = _objects_snapshot()
    with pytest.raises(bridge.BridgeError, match="face index is outside"):
        bridge.apply_result(msg)
    assert _objects_snapshot() == before
    assert bpy.data.collections.get(bridge.COLLECTION_NAME) is None


def test_result_kinds_parts_shape_keys_empties(addon):
    """Every output kind the backend may send is built with native Blender data."""
    from blender_addon import protocol

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [1, 3, 2]], np.int32)
    keys = np.stack([v + [0, 0, 0.5], v * 2])
    msg = protocol.Message(
        protocol.MsgType.RESULT,
        method="demo",
        arrays={"m.vertices": v, "m.faces": f, "m.face_parts": np.array([0, 1], np.int32),
                "m.shape_keys": keys,
                "k.positions": np.array([[0, 0, 1], [1, 0, 1]], np.float32)},
        body={"outputs": [
            {"name": "m", "kind": "mesh", "meta": {"object_name": "Deformed",
                                                   "part_labels": ["seat", "back"],
                                                   "shape_key_names": ["t0", "t1"],
                                                   "fit": 0.25}},
            {"name": "k", "kind": "empties", "meta": {"names": ["tip", "tail"]}}],
            "scores": {"chamfer": 0.5}, "provenance": {"method": "demo", "models": ["m1"]}},
    )
    objs = bridge.apply_result(msg)
    by_name = {o.name: o for o in objs}
    mesh_obj = by_name["Deformed"]
    assert [g.name for g in mesh_obj.vertex_groups] == ["seat", "back"]
    seat = {v.index for v in mesh_obj.data.vertices if any(g.group == 0 for g in v.groups)}
    assert seat == {0, 1, 2}
    sk = mesh_obj.data.shape_keys.key_blocks
    assert [k.name for k in sk] == ["Basis", "t0", "t1"]
    assert_close([tuple(p.co) for p in sk["t1"].data], keys[1], name="shape key")
    assert mesh_obj["shapebridge_fit"] == 0.25 and mesh_obj["shapebridge_models"] == "m1"
    parts = np.array([p.value for p in mesh_obj.data.attributes["part"].data])
    assert parts.tolist() == [0, 1]
    assert_close(by_name["tail"].matrix_world.translation, [1, 0, 1], name="empty")
    assert by_name["tail"].parent is by_name["k"]


def test_remote_host_refused_without_online_access(addon):
    if getattr(bpy.app, "online_access", True):
        pytest.skip("online access is allowed in this Blender")
    with pytest.raises(RuntimeError, match="online access is off"):
        bpy.ops.shapebridge.connect(address="tcp://192.0.2.1:5557")
    assert not SESSION.connected


def test_is_loopback():
    from blender_addon.ui.state import is_loopback

    for address in ("tcp://127.0.0.1:5557", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x"):
        assert is_loopback(address), address
    for address in ("tcp://10.0.0.2:5557", "tcp://gpu-server:5557", "tcp://0.0.0.0:1"):
        assert not is_loopback(address), address


def test_start_and_stop_local_backend(addon, tmp_path):
    import sys

    from tests.conftest import ROOT

    prefs = get_prefs()
    prefs.python, prefs.workdir = sys.executable, str(ROOT)
    prefs.local_address = "tcp://127.0.0.1:*"
    try:
        assert bpy.ops.shapebridge.start_local_backend() == {"FINISHED"}
        proc = SESSION.local_backend
        assert SESSION.connected and SESSION.local_running
        assert prefs.address == SESSION.client.address != "tcp://127.0.0.1:*"
        assert not bpy.ops.shapebridge.start_local_backend.poll()
        assert bpy.ops.shapebridge.stop_local_backend() == {"FINISHED"}
        assert proc.poll() is not None and not SESSION.connected
        log = SESSION.local_log
        assert os.path.isfile(log), "the stopped backend's log stays readable"
        SESSION.shutdown()
        assert not os.path.exists(os.path.dirname(log)), "unregistering deletes the log folder"
    finally:
        SESSION.stop_local_backend()
    prefs.python = str(tmp_path / "no-such-python")
    with pytest.raises(RuntimeError, match="does not exist"):
        bpy.ops.shapebridge.start_local_backend()


def test_python_api_run(connected):
    from blender_addon import api

    info = api.connect(connected.address)
    assert "mesh_stats" in api.method_names() and info["methods"]
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    cube = bpy.context.active_object
    objs = api.run("mesh_stats", objects=[cube], scale=0.5)
    assert [o.name for o in objs] == [o.name for o in result_objects()]
    assert_close(positions(objs[0].data), 0.5 * positions(cube.data), name="api result")
    with pytest.raises(api.ShapeBridgeError, match="offers no method"):
        api.run("no_such_method")
    with pytest.raises(api.ShapeBridgeError, match="below its minimum"):
        api.run("mesh_stats", objects=[cube], scale=0.0)


def _docs_example() -> str:
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "addon.md").read_text()
    start = text.index("```python\n# shapebridge_batch.py") + len("```python\n")
    return text[start: text.index("```", start)]


def test_docs_scripting_example_runs_as_written(backend_server, tmp_path):
    """The example of docs/addon.md, run by the bpy module in a fresh process."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = tmp_path / "shapebridge_batch.py"
    script.write_text(_docs_example())
    proc = subprocess.run(
        [sys.executable, str(script), "--", backend_server.address, str(ROOT)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "MeshStats area" in proc.stdout
    assert (tmp_path / "shapebridge_batch.blend").exists()


def test_read_image_top_row_first(addon):
    image = bpy.data.images.new("probe", width=5, height=3, alpha=True, float_buffer=True)
    rng = np.random.default_rng(0)
    stored = rng.random((3, 5, 4), dtype=np.float32)  # Blender order: bottom row first
    image.pixels.foreach_set(stored.ravel())
    pixels = bridge.read_image(image)
    assert pixels.shape == (3, 5, 4) and pixels.dtype == np.float32
    flat = list(image.pixels)
    for row in range(3):  # naive: pixel (row from the top, col) at index ((H-1-row)*W+col)*4
        for col in range(5):
            start = ((2 - row) * 5 + col) * 4
            assert_close(pixels[row, col], flat[start: start + 4], name=f"pixel {row},{col}")


def test_camera_read_and_rebuild_round_trip(addon):
    from blender_addon.bridge.camera import new_camera_object, read_camera

    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = 640, 480
    bpy.ops.object.camera_add(location=(1.0, -6.0, 2.5), rotation=(1.2, 0.1, 0.3))
    cam = bpy.context.active_object
    cam.data.lens, cam.data.shift_x = 42.0, 0.05
    arrays = read_camera(cam, scene)
    assert arrays["size"].tolist() == [480, 640]
    # a world point projects where Blender's own camera projection puts it
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    point = Vector((0.3, 0.2, 0.4))
    ndc = world_to_camera_view(scene, cam, point)
    uvw = arrays["K"] @ (arrays["R"] @ np.array(point) + arrays["t"])
    u, v = uvw[:2] / uvw[2]
    assert_close([u, v], [ndc.x * 640, (1 - ndc.y) * 480], atol=1e-2, name="projection")
    rebuilt = new_camera_object("Rebuilt", arrays)
    try:
        assert_close(np.array(rebuilt.matrix_world), np.array(cam.matrix_world), atol=1e-5,
                     name="camera pose")
        assert rebuilt.data.lens == pytest.approx(42.0, rel=1e-5)
        assert rebuilt.data.shift_x == pytest.approx(0.05, abs=1e-6)
    finally:
        bpy.data.objects.remove(rebuilt)
