"""Start `shapebridge serve` as a subprocess and wait until it listens (bench, demo, tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class BackendProcess:
    """A `shapebridge serve` subprocess; `.address` is the endpoint it bound."""

    def __init__(self, workdir: str | Path, address: str = "tcp://127.0.0.1:*",
                 extra: list[str] | None = None, name: str = "backend", timeout: float = 60.0):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.ready = workdir / f"{name}.ready.json"
        self.log_path = workdir / f"{name}.log"
        self.ready.unlink(missing_ok=True)
        self.cmd = [sys.executable, "-m", "backend", "serve", "--address", address,
                    "--ready-file", str(self.ready), *(extra or [])]
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.address = self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.exists():
                return json.loads(self.ready.read_text())["address"]
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"backend did not start within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        """Everything the backend has logged so far."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait: the clean-shutdown path. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.log.closed:
            self.log.close()
        return self.proc.returncode

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
