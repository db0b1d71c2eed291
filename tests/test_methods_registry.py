"""Every registered method runs end to end on tiny inputs (a new method is covered the day it
is registered), its schema is well formed, and its config defaults validate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backend.methods import registry
from backend.methods.base import JobContext, MethodResult, config_schema, make_config
from blender_addon import protocol as P

METHODS = registry()


def tiny_inputs(spec: dict) -> dict[str, np.ndarray]:
    """A small valid input of each kind (an octahedron, a point cloud, an image, a camera)."""
    name, kind = spec["name"], spec["kind"]
    if kind == "mesh":
        v = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float32) * 0.4
        f = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]], np.int32)
        return P.mesh_arrays(name, v, f)
    if kind == "points":
        rng = np.random.default_rng(0)
        p = rng.normal(size=(256, 3)).astype(np.float32)
        return {f"{name}.points": 0.4 * p / np.linalg.norm(p, axis=1, keepdims=True)}
    if kind == "image":
        img = np.zeros((64, 64, 4), np.float32)
        img[16:48, 16:48] = (0.8, 0.3, 0.2, 1.0)
        return {f"{name}.pixels": img}
    if kind == "camera":
        return {f"{name}.K": np.array([[70, 0, 32], [0, 70, 32], [0, 0, 1]], np.float64),
                f"{name}.R": np.eye(3), f"{name}.t": np.array([0, 0, 2.5]), f"{name}.size": np.array([64, 64])}
    raise AssertionError(f"no tiny input for kind {kind!r}")


def test_registry_has_methods():
    assert {"mesh_stats", "echo"} <= set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_schema_is_well_formed(name):
    cls = METHODS[name]
    s = cls.schema()
    assert s["name"] == name and s["title"] and s["description"]
    for p in s["params"]:
        assert p["type"] in ("bool", "int", "float", "str", "enum") and p["doc"], p
        if p["type"] == "enum":
            assert p["default"] in p["choices"]
    for i in s["inputs"]:
        assert i["kind"] in P.INPUT_KINDS
    defaults = {p["name"]: p["default"] for p in config_schema(cls.Config)}
    assert dataclasses.asdict(make_config(cls.Config, defaults)) == dataclasses.asdict(cls.Config())


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_end_to_end_on_tiny_inputs(name):
    cls = METHODS[name]
    arrays: dict[str, np.ndarray] = {}
    specs = cls.schema()["inputs"]
    # all inputs optional (one of several target kinds): send the first
    for spec in [s for s in specs if not s["optional"]] or specs[:1]:
        arrays.update(tiny_inputs(spec))
    # Through the wire format, as the server receives them (read-only views).
    msg = P.decode([bytes(memoryview(f)) for f in P.encode(P.Message(P.MsgType.SUBMIT, job="t", method=name, arrays=arrays))])
    config = cls.validate(msg.arrays, {})
    progress = []
    method = cls(device="cpu")
    method.load()
    result = method.infer(msg.arrays, config, JobContext("t", lambda *a: progress.append(a[0])))
    assert isinstance(result, MethodResult) and result.outputs
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert set(o.kind for o in result.outputs) <= set(cls.output_kinds)
    for out in result.outputs:
        if out.kind == "mesh":
            P.validate_mesh(out.arrays, out.name)
    # results must be encodable
    P.encode(P.Message(P.MsgType.RESULT, job="t", arrays={f"{o.name}.{k}": v for o in result.outputs for k, v in o.arrays.items()}))
