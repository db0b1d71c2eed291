"""Match Shape (feature_matching) in the real `bpy` module against a real backend process:
the result's shape keys follow the trajectory and one 0-1 slider scrubs along it."""

from __future__ import annotations

import json

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

import blender_addon  # noqa: E402
from blender_addon import bridge  # noqa: E402
from blender_addon.bridge.mesh import _hat_expression, read_mesh, trajectory_weights  # noqa: E402
from tests.conftest import assert_close  # noqa: E402

# a category without a shipped checkpoint: the seeded untrained network (deterministic)
PARAMS = {"steps": 4, "shape_keys": 5, "category": "cabinet", "gn_iterations": 2, "seed": 3}


@pytest.fixture
def connected(backend_server):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    assert bpy.ops.shapebridge.connect(address=backend_server.address) == {"FINISHED"}
    yield backend_server
    blender_addon.unregister()
    bpy.ops.wm.read_factory_settings(use_empty=True)


def evaluated_positions(obj) -> np.ndarray:
    """(V, 3) float32 vertex positions of the evaluated object (shape keys applied)."""
    depsgraph = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(depsgraph)
    mesh = ev.to_mesh()
    try:
        return np.array([tuple(v.co) for v in mesh.vertices], dtype=np.float32)
    finally:
        ev.to_mesh_clear()


def set_slider(obj, t: float) -> None:
    obj["shapebridge_t"] = t
    obj.update_tag()
    bpy.context.view_layer.update()


def test_trajectory_weights_are_hat_functions():
    times = np.array([0.0, 0.2, 0.5, 1.0])
    for t, expected in [(0.0, [1, 0, 0, 0]), (0.1, [0.5, 0.5, 0, 0]), (0.5, [0, 0, 1, 0]),
                        (0.75, [0, 0, 0.5, 0.5]), (1.0, [0, 0, 0, 1])]:
        assert_close(trajectory_weights(times, t), expected, atol=1e-12)
    # the driver expressions compute the same weights (evaluated here as Python)
    for t in np.linspace(0, 1, 23):
        w = [eval(_hat_expression(times, i), {"max": max, "min": min, "t": t}) for i in range(4)]
        assert_close(w, trajectory_weights(times, t), atol=1e-12)


def test_match_shape_scrubbable_result(connected):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8, radius=0.7,
                                         location=(1.0, 0.0, 0.5))
    source = bpy.context.active_object
    source.name = "Source"
    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-2.0, 0.0, 0.0))
    target = bpy.context.active_object
    target.name = "Target"
    target.scale = (1.0, 0.4, 1.5)
    bpy.context.view_layer.update()
    src = read_mesh(source)

    ret = bpy.ops.shapebridge.run_method(
        method="feature_matching", wait="BLOCK", params_json=json.dumps(PARAMS),
        inputs_json=json.dumps({"source": "Source", "target": "Target"}))
    assert ret == {"FINISHED"}
    objs = [o for o in bpy.data.collections[bridge.COLLECTION_NAME].objects]
    assert len(objs) == 1
    result = objs[0]
    blocks = list(result.data.shape_keys.key_blocks)
    assert [b.name for b in blocks] == ["Basis", "t=0.00", "t=0.25", "t=0.50", "t=0.75", "t=1.00"]
    keys = []
    for b in blocks[1:]:
        co = np.empty(len(b.data) * 3, np.float32)
        b.data.foreach_get("co", co)
        keys.append(co.reshape(-1, 3))
    keys = np.stack(keys)  # (5, V, 3) trajectory at t = 0, .25, .5, .75, 1

    # the same job run in this process gives the same trajectory (the backend is deterministic)
    from backend.methods.base import JobContext
    from backend.methods.feature_matching.method import FeatureMatching

    inputs = {"source.vertices": src.vertices, "source.faces": src.faces,
              "target.vertices": read_mesh(target).vertices, "target.faces": read_mesh(target).faces}
    direct = FeatureMatching().infer(inputs, FeatureMatching.validate(inputs, PARAMS),
                                     JobContext("t", report=lambda *a: None))
    expected = direct.outputs[0].arrays["shape_keys"]
    assert_close(keys, expected, atol=1e-5, name="shape keys vs trajectory")
    assert_close(keys[0], src.vertices, atol=1e-5, name="t=0 is the source")
    assert np.abs(keys[-1] - keys[0]).max() > 1e-4  # the shape moved

    # every key is driven by the one slider, with simple (Python-free) expressions
    fcurves = {fc.data_path: fc for fc in result.data.shape_keys.animation_data.drivers}
    for b in blocks[1:]:
        fc = fcurves[f'key_blocks["{b.name}"].value']
        assert fc.driver.is_valid and fc.driver.is_simple_expression
        assert fc.driver.variables[0].targets[0].id == result
    assert result["shapebridge_t"] == 1.0
    # the sidebar's Trajectory panel shows the slider for the active result only
    from blender_addon.ui.panels import SHAPEBRIDGE_PT_trajectory

    bpy.context.view_layer.objects.active = result
    assert SHAPEBRIDGE_PT_trajectory.poll(bpy.context)
    bpy.context.view_layer.objects.active = source
    assert not SHAPEBRIDGE_PT_trajectory.poll(bpy.context)
    for t, want in [(0.0, keys[0]), (0.5, keys[2]), (1.0, keys[4]),
                    (0.6, 0.6 * keys[2] + 0.4 * keys[3])]:  # between keys: linear blend
        set_slider(result, t)
        assert_close(evaluated_positions(result), want, atol=1e-5, name=f"slider {t}")

    # target part colours, one per vertex, from the palette (a cube is one part)
    color = result.data.color_attributes["target_parts"]
    assert color.domain == "POINT" and len(color.data) == len(src.vertices)
    rgba = np.array([tuple(c.color) for c in color.data], dtype=np.float32)
    assert_close(rgba, direct.outputs[0].arrays["colors"], atol=1e-6, name="colours")
    assert len(np.unique(rgba, axis=0)) == 1
    # placed at the source
    assert_close(np.array(result.matrix_world), np.array(source.matrix_world), atol=1e-6)
    # no checkpoint ships for this category: the user is told, in the job list and last error
    from blender_addon.ui.state import SESSION

    record = next(r for r in SESSION.jobs.values() if r.method == "feature_matching")
    assert "checkpoint" in record.warning and record.warning in SESSION.last_error


def test_trajectory_slider_rejects_bad_times():
    from blender_addon.bridge.common import BridgeError
    from blender_addon.bridge.mesh import add_shape_keys, add_trajectory_slider, new_mesh

    bpy.ops.wm.read_factory_settings(use_empty=True)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    obj = bpy.data.objects.new("T", new_mesh("T", v, np.array([[0, 1, 2]], np.int32)))
    with pytest.raises(BridgeError, match="at least 2 shape keys"):
        add_trajectory_slider(obj)
    add_shape_keys(obj, np.stack([v, v + 1, v + 2]), ["a", "b", "c"])
    with pytest.raises(BridgeError, match="3 increasing values from 0 to 1"):
        add_trajectory_slider(obj, [0.0, 0.7, 0.5])
    add_trajectory_slider(obj, [0.0, 0.7, 1.0])
    obj["shapebridge_t"] = 0.35  # halfway between the keys at 0 and 0.7
    bpy.context.scene.collection.objects.link(obj)
    obj.update_tag()
    bpy.context.view_layer.update()
    assert_close(evaluated_positions(obj), v + 0.5, atol=1e-6)
