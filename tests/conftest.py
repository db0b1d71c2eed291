"""Shared fixtures: a real backend process on a real socket, and array assertions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"


class BackendProcess:
    """A `shapebridge serve` subprocess. `.address` is where it listens."""

    def __init__(self, tmp: Path, address: str = "tcp://127.0.0.1:*", extra: list[str] | None = None,
                 name: str = "backend"):
        self.ready = tmp / f"{name}.ready.json"
        self.log_path = tmp / f"{name}.log"
        self.ready.unlink(missing_ok=True)
        self.cmd = [sys.executable, "-m", "backend", "serve", "--address", address,
                    "--ready-file", str(self.ready), *(extra or [])]
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.address = self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.exists():
                return json.loads(self.ready.read_text())["address"]
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise RuntimeError(f"backend did not start within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the clean-shutdown path."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


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
