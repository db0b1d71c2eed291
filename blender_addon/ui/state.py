"""Session state of the add-on: one client, the callback queue and its main-thread drain,
the job list, the last error and the local backend process.

Threads: the client's I/O thread never touches bpy. Its callbacks go through
``dispatcher=queue.put`` into `Session.queue`; `Session.drain` runs them on Blender's main
thread (from a `bpy.app.timers` function in the GUI, or directly in tests and background
scripts, where timers never fire) under a time budget, and applies finished results.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import bpy
import numpy as np

from .. import bridge
from ..client import Client, ClientError, JobFuture, Timeouts

ADDON_ID = __package__.rpartition(".")[0]
"""The add-on's module name as Blender knows it (``blender_addon`` or ``bl_ext.<repo>.<id>``)."""

DRAIN_BUDGET_S = 0.008
TIMER_INTERVAL_BUSY_S = 0.05
TIMER_INTERVAL_IDLE_S = 0.25


class ShapeBridgeError(Exception):
    """An add-on side failure with a sentence the artist can act on."""


def error_text(exc: BaseException) -> str:
    """The plain-words message of an add-on, bridge or client error."""
    if isinstance(exc, ClientError):
        return exc.message
    return str(exc)


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// to 127.0.0.0/8, ::1 or localhost."""
    parts = urlsplit(address)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class JobRecord:
    """One submitted job as the panel shows it.

    placements: input name -> (4, 4) float32 world matrix of the object read for that input,
        captured at submit time (results are placed there even if the object moved since).
    sources: input name -> name of the object or image the input was read from.
    """

    future: JobFuture
    method: str
    title: str
    sources: dict[str, str]
    placements: dict[str, np.ndarray]
    scene_name: str
    submitted: float = field(default_factory=time.monotonic)
    finished: float | None = None
    applied: bool = False
    objects: list[str] = field(default_factory=list)
    error: str = ""
    warning: str = ""

    @property
    def job_id(self) -> str:
        return self.future.job_id

    @property
    def state(self) -> str:
        """pending | queued | running | done | error | cancelled (an apply failure is error)."""
        return "error" if self.error else self.future.state

    @property
    def active(self) -> bool:
        return not self.future.done()


class Session:
    """Everything the add-on holds between operator calls (one per Blender session)."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self.jobs: dict[str, JobRecord] = {}
        self.last_error = ""
        self.local_backend: subprocess.Popen | None = None
        self.local_log: str = ""
        self.local_address: str = ""

    # ----------------------------------------------------------------- connection
    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.connected

    @property
    def server_info(self) -> dict[str, Any]:
        return (self.client.server_info or {}) if self.client is not None else {}

    @property
    def methods(self) -> dict[str, dict[str, Any]]:
        """Method schemas published by the backend, by name (empty when not connected)."""
        return dict(self.server_info.get("methods") or {}) if self.connected else {}

    def connect(
        self,
        address: str,
        *,
        server_public_key: str = "",
        client_secret_key: str = "",
        client_public_key: str = "",
        timeouts: Timeouts | None = None,
    ) -> dict[str, Any]:
        """Connect to a backend (closing any previous connection); return its hello info.

        Non-loopback addresses are refused when Blender's "Allow Online Access" is off
        (`bpy.app.online_access`, Blender 4.2+). Raises ShapeBridgeError or ClientError.
        """
        address = address.strip()
        if not address:
            raise ShapeBridgeError("no backend address is set; enter one in the add-on preferences")
        if not is_loopback(address) and not getattr(bpy.app, "online_access", True):
            raise ShapeBridgeError(
                f"{address} is on another machine and Blender's online access is off; allow it "
                "in Preferences > System > Network, or use a local backend"
            )
        self.disconnect()
        client = Client(
            address,
            server_public_key=server_public_key or None,
            client_secret_key=client_secret_key or None,
            client_public_key=client_public_key or None,
            timeouts=timeouts,
            dispatcher=self.queue.put,
        )
        try:
            info = client.connect()
        except Exception:
            client.close()
            raise
        self.client = client
        self.last_error = ""
        return info

    def disconnect(self) -> None:
        """Close the connection; open jobs fail with a 'disconnected' message."""
        client, self.client = self.client, None
        if client is not None:
            client.close()
        for record in self.jobs.values():
            if record.active and not record.error:
                record.error = "disconnected from the backend before the job finished"

    # ----------------------------------------------------------------- jobs
    def submit(
        self,
        context: bpy.types.Context,
        schema: Mapping[str, Any],
        sources: Mapping[str, Any],
        params: Mapping[str, Any],
    ) -> JobRecord:
        """Read the inputs (main thread), send the job, return its record.

        schema: the method schema; sources: input name -> object or image (None for an
        absent optional input); params: parameter values for the backend.
        """
        if not self.connected:
            raise ShapeBridgeError("not connected to a backend; press Connect first")
        scene = context.scene
        depsgraph = context.evaluated_depsgraph_get()
        arrays: dict[str, np.ndarray] = {}
        placements: dict[str, np.ndarray] = {}
        names: dict[str, str] = {}
        for spec in schema.get("inputs", []):
            source = sources.get(spec["name"])
            if source is None:
                continue
            arrays.update(bridge.input_arrays(spec, source, scene, depsgraph=depsgraph))
            names[spec["name"]] = source.name
            if isinstance(source, bpy.types.Object):
                placements[spec["name"]] = bridge.mesh.matrix_array(source.matrix_world)
        assert self.client is not None
        future = self.client.submit(schema["name"], arrays, dict(params))
        record = JobRecord(
            future=future,
            method=schema["name"],
            title=schema.get("title") or schema["name"],
            sources=names,
            placements=placements,
            scene_name=scene.name,
        )
        self.jobs[future.job_id] = record
        future.add_done_callback(lambda f, r=record: self.finish(r))
        return record

    def finish(self, record: JobRecord) -> list[bpy.types.Object]:
        """Main thread: apply a finished job's result once (idempotent); return new objects.

        An error of the job or of applying it goes to `record.error` and `last_error`.
        """
        if record.applied or record.error or not record.future.done():
            return []
        record.finished = record.finished or time.monotonic()
        future = record.future
        if future.state == "cancelled":
            return []
        if future.state != "done":
            err = future.error
            record.error = error_text(err) if err else f"the job ended in state {future.state}"
            self.last_error = f"{record.title}: {record.error}"
            return []
        scene = bpy.data.scenes.get(record.scene_name) or bpy.context.scene
        try:
            objs = bridge.apply_result(future.result(0), placements=record.placements, scene=scene)
        except (bridge.BridgeError, ClientError) as exc:
            record.error = error_text(exc)
            self.last_error = f"{record.title}: {record.error}"
            return []
        record.applied = True
        record.objects = [o.name for o in objs]
        # e.g. "no trained checkpoint is loaded": the result exists but the user must know
        record.warning = str((future.result(0).body.get("info") or {}).get("warning") or "")
        if record.warning:
            self.last_error = f"{record.title}: {record.warning}"
        return objs

    def wait(self, record: JobRecord, timeout: float | None) -> list[bpy.types.Object]:
        """Block until the job ends (background mode, scripts), apply it, return new objects.

        Raises ShapeBridgeError with the job's error; a timeout cancels the job.
        """
        try:
            record.future.result(timeout)
        except ClientError:
            if not record.future.done():  # our wait timed out, not the job
                record.future.cancel()
                record.error = f"no result within {timeout:g} s; the job was cancelled"
                self.last_error = f"{record.title}: {record.error}"
                raise ShapeBridgeError(self.last_error) from None
        objs = self.finish(record)
        if record.error:
            raise ShapeBridgeError(f"{record.title}: {record.error}")
        if record.future.state == "cancelled":
            raise ShapeBridgeError(f"{record.title} was cancelled")
        return objs

    def cancel(self, job_id: str) -> None:
        record = self.jobs.get(job_id)
        if record is None:
            raise ShapeBridgeError("that job is no longer in the list")
        record.future.cancel()

    def clear_finished(self) -> None:
        """Forget finished jobs (the objects they made stay in the scene)."""
        self.jobs = {k: r for k, r in self.jobs.items() if r.active}

    def drain(self, budget_s: float = DRAIN_BUDGET_S) -> int:
        """Main thread: run queued client callbacks for at most `budget_s`; return how many ran.

        Callbacks apply finished results; an exception in one is kept as the last error and
        never escapes (it would stop the timer).
        """
        end = time.perf_counter() + budget_s
        count = 0
        while True:
            try:
                fn = self.queue.get_nowait()
            except queue.Empty:
                break
            count += 1
            try:
                fn()
            except Exception as exc:  # a bug in a callback must not kill the timer
                self.last_error = f"internal error while applying a result: {exc!r}"
            if time.perf_counter() >= end:
                break
        return count

    @property
    def busy(self) -> bool:
        return any(r.active for r in self.jobs.values()) or not self.queue.empty()

    # ----------------------------------------------------------------- local backend
    def start_local_backend(
        self, python: str, address: str, extra_args: str = "", workdir: str = "",
        startup_timeout: float = 60.0,
    ) -> str:
        """Start ``python -m backend serve --address ADDRESS`` and wait until it listens.

        Returns the address it bound (``tcp://127.0.0.1:*`` picks a free port). The log goes
        to a temporary file whose tail is shown if the backend exits early.
        """
        if self.local_backend is not None and self.local_backend.poll() is None:
            raise ShapeBridgeError("a local backend is already running; stop it first")
        python = python.strip() or sys.executable
        if not os.path.exists(python):
            raise ShapeBridgeError(
                f"the backend Python '{python}' does not exist; set the Python of your "
                "ShapeBridge environment in the add-on preferences"
            )
        self._remove_local_log()  # the previous backend's log, kept until now for reading
        tmp = tempfile.mkdtemp(prefix="shapebridge-")
        ready = os.path.join(tmp, "ready.json")
        self.local_log = os.path.join(tmp, "backend.log")
        cmd = [python, "-m", "backend", "serve", "--address", address, "--ready-file", ready,
               *shlex.split(extra_args)]
        with open(self.local_log, "wb") as log:
            self.local_backend = subprocess.Popen(
                cmd, cwd=workdir or None, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        end = time.monotonic() + startup_timeout
        while time.monotonic() < end:
            if os.path.exists(ready):
                with open(ready) as f:
                    self.local_address = json.load(f)["address"]
                return self.local_address
            if self.local_backend.poll() is not None:
                code = self.local_backend.returncode
                self.local_backend = None
                raise ShapeBridgeError(
                    f"the local backend exited with code {code}: {self.local_log_tail()}"
                )
            time.sleep(0.05)
        self.stop_local_backend()
        raise ShapeBridgeError(f"the local backend did not start within {startup_timeout:g} s")

    def _remove_local_log(self) -> None:
        """Delete the temporary folder of the last local backend's log."""
        if self.local_log:
            shutil.rmtree(os.path.dirname(self.local_log), ignore_errors=True)
            self.local_log = ""

    def local_log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.local_log, errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def local_running(self) -> bool:
        return self.local_backend is not None and self.local_backend.poll() is None

    def stop_local_backend(self, timeout: float = 10.0) -> None:
        """Stop the local backend (SIGTERM, then kill after `timeout`); disconnect from it."""
        proc, self.local_backend = self.local_backend, None
        if proc is None:
            return
        if self.client is not None and self.client.address == self.local_address:
            self.disconnect()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def shutdown(self) -> None:
        """Unregister: close the client, stop the local backend, delete its log, forget jobs."""
        self.disconnect()
        self.stop_local_backend()
        self._remove_local_log()
        self.jobs.clear()
        while not self.queue.empty():
            self.queue.get_nowait()


SESSION = Session()


def tag_redraw() -> None:
    """Redraw the 3D View sidebars (main thread)."""
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()


def timer() -> float:
    """`bpy.app.timers` function: drain the queue, redraw while jobs run."""
    ran = SESSION.drain()
    busy = SESSION.busy
    if ran or busy:
        tag_redraw()
    return TIMER_INTERVAL_BUSY_S if busy else TIMER_INTERVAL_IDLE_S
