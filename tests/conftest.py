"""Shared fixtures: a real backend process on a real socket, and array assertions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend.server.process import BackendProcess

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture
def start_backend(tmp_path):
    """Factory: start_backend(address=..., extra=[...]) -> BackendProcess (stopped at teardown)."""
    procs: list[BackendProcess] = []

    def start(address: str = "tcp://127.0.0.1:*", extra: list[str] | None = None, name: str | None = None):
        p = BackendProcess(tmp_path, address, extra, name or f"backend{len(procs)}")
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def backend_server(start_backend):
    """One running backend on loopback TCP."""
    return start_backend()


@pytest.fixture
def addon():
    """The add-on registered in the bpy module on an empty scene (bpy imported lazily, so the
    tests that do not use Blender never load it)."""
    import bpy

    import blender_addon

    bpy.ops.wm.read_factory_settings(use_empty=True)
    blender_addon.register()
    yield
    blender_addon.unregister()
    bpy.ops.wm.read_factory_settings(use_empty=True)


def assert_close(actual, expected, rtol: float = 1e-5, atol: float = 1e-6, name: str = "") -> None:
    """np.allclose with a message that says where the largest difference is."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{name} shape {a.shape} != {e.shape}"
    if a.size == 0:
        return
    diff = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    if not np.all(diff <= tol):
        idx = np.unravel_index(np.argmax(diff - tol), diff.shape)
        raise AssertionError(
            f"{name} differs at {idx}: {a[idx]} vs {e[idx]} (|diff| {diff[idx]:.3g}, "
            f"{np.count_nonzero(diff > tol)} of {diff.size} beyond tolerance)"
        )
