"""The ShapeBridge client: one I/O thread owns the DEALER socket; a future per job.

Used by the Blender add-on and by plain Python scripts::

    with Client("tcp://127.0.0.1:5557") as client:
        info = client.connect()
        job = client.submit("mesh_stats", protocol.mesh_arrays("mesh", V, F))
        msg = job.result(timeout=60)

Threads: the caller's threads only put commands on a queue and wake the I/O thread
through a pipe; the I/O thread alone touches the socket. Callbacks (progress, done) run
through ``dispatcher``: by default on the I/O thread; the add-on passes a queue's
``put`` so they run on Blender's main thread when its timer drains the queue.

Timeouts by phase (`Timeouts`): *connect* (hello reply after connecting), *request*
(``accepted`` after a submit), *inactivity* (nothing at all from the backend while a
job is open: it died or hangs). After a backend restart the client notices the new
server id, says hello again and fails the jobs the old backend held.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from .. import protocol as P

log = logging.getLogger("shapebridge.client")

Dispatcher = Callable[[Callable[[], None]], None]


@dataclass
class Timeouts:
    """Seconds allowed per phase."""

    connect: float = 5.0
    """From connect() to the backend's hello reply."""
    request: float = 10.0
    """From submit to the backend's 'accepted'."""
    inactivity: float = 15.0
    """Longest silence from the backend while a job is open (it sends heartbeats every second)."""
    heartbeat: float = 1.0
    """Seconds between the client's own heartbeats."""


class ClientError(Exception):
    """A failure the user can act on: code (`protocol.ErrorCode`), plain message, detail."""

    def __init__(self, code: P.ErrorCode | str, message: str, detail: Mapping[str, Any] | None = None):
        self.code = P.ErrorCode(code)
        self.message = message
        self.detail = dict(detail or {})
        super().__init__(message)


_OPEN_STATES = ("pending", "queued", "running")


class JobFuture:
    """The client's handle on one submitted job. Thread-safe."""

    def __init__(self, client: Client, job_id: str, method: str):
        self._client = client
        self.job_id = job_id
        self.method = method
        self.state = "pending"
        self.fraction = 0.0
        self.stage = ""
        self.message = ""
        self.error: ClientError | None = None
        self.submitted = time.monotonic()
        self.server_id: str | None = None
        self._result: P.Message | None = None
        self._cond = threading.Condition()
        self._done_callbacks: list[Callable[[JobFuture], None]] = []
        self._progress_callbacks: list[Callable[[JobFuture], None]] = []

    def __repr__(self) -> str:
        return f"<JobFuture {self.method} {self.job_id[:8]} {self.state} {self.fraction:.0%}>"

    def done(self) -> bool:
        return self.state not in _OPEN_STATES

    def result(self, timeout: float | None = None) -> P.Message:
        """Block until the job ends; return the result message or raise `ClientError`."""
        with self._cond:
            if not self._cond.wait_for(self.done, timeout):
                raise ClientError(P.ErrorCode.TIMEOUT, f"no result for {self.method} within {timeout:g} s")
        if self.error is not None:
            raise self.error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        """Ask the backend to cancel; the state becomes 'cancelled' when it confirms."""
        if not self.done():
            self._client._command(("cancel", self.job_id))

    def add_done_callback(self, fn: Callable[[JobFuture], None]) -> None:
        with self._cond:
            if not self.done():
                self._done_callbacks.append(fn)
                return
        self._client._dispatch(lambda: fn(self))

    def add_progress_callback(self, fn: Callable[[JobFuture], None]) -> None:
        with self._cond:
            self._progress_callbacks.append(fn)

    # called on the I/O thread
    def _update(self, **fields: Any) -> None:
        with self._cond:
            for k, v in fields.items():
                setattr(self, k, v)
            callbacks = list(self._progress_callbacks)
        for fn in callbacks:
            self._client._dispatch(lambda fn=fn: fn(self))

    def _finish(self, state: str, result: P.Message | None = None, error: ClientError | None = None) -> None:
        with self._cond:
            if self.done():
                return
            self.state = state
            self._result = result
            self.error = error
            if state == "done":
                self.fraction = 1.0
            callbacks = list(self._done_callbacks)
            self._done_callbacks.clear()
            self._cond.notify_all()
        for fn in callbacks:
            self._client._dispatch(lambda fn=fn: fn(self))


def _key(value: str | bytes | None, secret: bool = False) -> bytes | None:
    """A Z85 key given as the 40-character text or a key file of `shapebridge keys`."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        value = value.decode()
    if len(value) == 40 and not os.path.exists(value):
        return value.encode()
    import zmq.auth

    public, sec = zmq.auth.load_certificate(os.path.expanduser(value))
    key = sec if secret else public
    if key is None:
        raise ClientError(P.ErrorCode.AUTH_FAILED, f"{value} holds no {'secret' if secret else 'public'} key")
    return key


class Client:
    """Connection to one backend. See the module docstring."""

    def __init__(
        self,
        address: str,
        *,
        server_public_key: str | bytes | None = None,
        client_secret_key: str | bytes | None = None,
        client_public_key: str | bytes | None = None,
        timeouts: Timeouts | None = None,
        dispatcher: Dispatcher | None = None,
        limits: P.Limits = P.DEFAULT_LIMITS,
    ):
        self.address = address
        self.timeouts = timeouts or Timeouts()
        self.limits = limits
        self._dispatcher = dispatcher
        self.server_info: dict[str, Any] | None = None
        self.last_error: ClientError | None = None
        self._server_key = _key(server_public_key)
        self._client_secret = _key(client_secret_key, secret=True)
        self._client_public = _key(client_public_key)
        if self._server_key and not (self._client_secret and self._client_public):
            # A secret key file carries its public half too.
            if client_secret_key and not client_public_key:
                self._client_public = _key(client_secret_key)
            if not (self._client_secret and self._client_public):
                raise ClientError(
                    P.ErrorCode.AUTH_FAILED,
                    "the backend uses CURVE keys: give this client's key pair too "
                    "(`shapebridge keys` makes one)",
                )
        self._jobs: dict[str, JobFuture] = {}
        self._lock = threading.Lock()
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._hello_waiters: list[threading.Event] = []
        self._hello_deadline: float | None = None
        self._hello_id: str | None = None
        self._server_id: str | None = None
        self._last_heard = 0.0
        self._auth_failed = False
        self._closed = False
        self._ctx = zmq.Context()
        self._thread = threading.Thread(target=self._run, name="shapebridge-client-io", daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(5.0)

    # ------------------------------------------------------------------ public API
    @property
    def connected(self) -> bool:
        return self.server_info is not None and not self._closed

    def connect(self, timeout: float | None = None) -> dict[str, Any]:
        """Say hello and wait for the backend's reply; return its info (hello body)."""
        timeout = self.timeouts.connect if timeout is None else timeout
        ev = threading.Event()
        self._command(("hello", ev, timeout))
        if not ev.wait(timeout + 1.0) or self.server_info is None:
            err = self.last_error or ClientError(
                P.ErrorCode.UNAVAILABLE,
                f"no ShapeBridge backend answered at {self.address} within {timeout:g} s; "
                "start one (`shapebridge serve`) or check the address",
            )
            raise err
        return self.server_info

    def submit(
        self, method: str, arrays: Mapping[str, np.ndarray], params: Mapping[str, Any] | None = None
    ) -> JobFuture:
        """Send a job; returns its future at once. Arrays are sent without copying:
        do not modify them until the job is accepted."""
        if self._closed:
            raise ClientError(P.ErrorCode.UNAVAILABLE, "the client is closed")
        job_id = uuid.uuid4().hex
        msg = P.Message(P.MsgType.SUBMIT, job=job_id, method=method, params=dict(params or {}), arrays=dict(arrays))
        frames = P.encode(msg)  # validates dtypes on the caller's thread; raises ProtocolError
        fut = JobFuture(self, job_id, method)
        with self._lock:
            self._jobs[job_id] = fut
        self._command(("submit", fut, frames))
        return fut

    def jobs(self) -> list[JobFuture]:
        with self._lock:
            return list(self._jobs.values())

    def close(self) -> None:
        """Cancel nothing, stop the I/O thread, close the socket. Open jobs fail."""
        if self._closed:
            return
        self._closed = True
        self._command(("close",))
        self._thread.join(5.0)
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._ctx.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _dispatch(self, fn: Callable[[], None]) -> None:
        if self._dispatcher is None:
            try:
                fn()
            except Exception:
                log.exception("client callback failed")
        else:
            self._dispatcher(fn)

    def _command(self, cmd: tuple) -> None:
        self._commands.put(cmd)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def _make_socket(self) -> tuple[zmq.Socket, zmq.Socket]:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # never queue for a peer that is not there
        sock.setsockopt(zmq.RECONNECT_IVL, 100)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        if self._server_key:
            sock.curve_serverkey = self._server_key
            sock.curve_secretkey = self._client_secret
            sock.curve_publickey = self._client_public
        monitor = sock.get_monitor_socket()
        sock.connect(self.address)
        return sock, monitor

    def _run(self) -> None:
        try:
            sock, monitor = self._make_socket()
        except zmq.ZMQError as exc:
            self.last_error = ClientError(P.ErrorCode.UNAVAILABLE, f"cannot use address {self.address!r}: {exc}")
            self._closed = True
            self._started.set()
            return
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        self._started.set()
        next_beat = 0.0
        try:
            while True:
                events = dict(poller.poll(100))
                if self._wake_r in events:
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                if not self._drain_commands(sock):
                    break
                if monitor in events:
                    self._on_monitor(monitor)
                if sock in events:
                    for _ in range(256):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
                now = time.monotonic()
                if now >= next_beat:
                    next_beat = now + self.timeouts.heartbeat
                    self._tick(sock, now)
        finally:
            for fut in self.jobs():
                fut._finish("error", error=ClientError(P.ErrorCode.UNAVAILABLE, "the client was closed"))
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    def _try_send(self, sock: zmq.Socket, frames: list) -> bool:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def _drain_commands(self, sock: zmq.Socket) -> bool:
        while True:
            try:
                cmd = self._commands.get_nowait()
            except queue.Empty:
                return True
            kind = cmd[0]
            if kind == "close":
                return False
            if kind == "hello":
                _, ev, timeout = cmd
                self._hello_waiters.append(ev)
                self._hello_deadline = time.monotonic() + timeout
                self._send_hello(sock)
            elif kind == "submit":
                _, fut, frames = cmd
                if not self._try_send(sock, frames):
                    self._fail(
                        fut,
                        ClientError(
                            P.ErrorCode.UNAVAILABLE,
                            f"the backend at {self.address} is not reachable; start it or check the address",
                        ),
                    )
                else:
                    fut.server_id = self._server_id
            elif kind == "cancel":
                self._try_send(sock, P.encode(P.Message(P.MsgType.CANCEL, job=cmd[1])))

    def _send_hello(self, sock: zmq.Socket) -> None:
        msg = P.hello(client="shapebridge-client", protocol=list(P.PROTOCOL_VERSION))
        self._hello_id = msg.id
        self._try_send(sock, P.encode(msg))  # retried by _tick until the deadline

    def _tick(self, sock: zmq.Socket, now: float) -> None:
        """Once per heartbeat interval: heartbeats, hello retries, timeouts."""
        self._try_send(sock, P.encode(P.Message(P.MsgType.HEARTBEAT)))
        if self._hello_waiters:
            if self._hello_deadline is not None and now > self._hello_deadline:
                if self.last_error is None or self.last_error.code != P.ErrorCode.AUTH_FAILED:
                    self.last_error = ClientError(
                        P.ErrorCode.UNAVAILABLE,
                        f"no ShapeBridge backend answered at {self.address}; start one "
                        "(`shapebridge serve`) or check the address",
                    )
                self._wake_hello()
            else:
                self._send_hello(sock)
        for fut in self.jobs():
            if fut.done():
                continue
            if fut.state == "pending" and now - fut.submitted > self.timeouts.request:
                self._fail(
                    fut,
                    ClientError(
                        P.ErrorCode.TIMEOUT,
                        f"the backend did not accept the {fut.method} job within {self.timeouts.request:g} s",
                    ),
                )
            elif now - max(self._last_heard, fut.submitted) > self.timeouts.inactivity:
                self._fail(
                    fut,
                    ClientError(
                        P.ErrorCode.TIMEOUT,
                        f"the backend went silent for {self.timeouts.inactivity:g} s while running "
                        f"{fut.method}; it may have crashed or been stopped",
                    ),
                )
                self.server_info = None

    def _wake_hello(self) -> None:
        for ev in self._hello_waiters:
            ev.set()
        self._hello_waiters.clear()
        self._hello_deadline = None

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            ev = event["event"]
            if ev == getattr(zmq, "EVENT_HANDSHAKE_FAILED_AUTH", -1) or ev == getattr(
                zmq, "EVENT_HANDSHAKE_FAILED_PROTOCOL", -1
            ):
                self.last_error = ClientError(
                    P.ErrorCode.AUTH_FAILED,
                    f"the backend at {self.address} refused this client's key; ask its admin to "
                    "allow-list your public key",
                )
                self._auth_failed = True
                self._wake_hello()
            elif ev == zmq.EVENT_DISCONNECTED:
                log.info("disconnected from %s", self.address)

    def _fail(self, fut: JobFuture, err: ClientError) -> None:
        self.last_error = err
        fut._finish("error", error=err)
        with self._lock:
            self._jobs.pop(fut.job_id, None)

    def _on_frames(self, frames: list) -> None:
        self._last_heard = time.monotonic()
        try:
            msg = P.decode(frames, self.limits)
        except P.ProtocolError as exc:
            log.warning("undecodable message from the backend: %s", exc)
            self.last_error = ClientError(exc.code, exc.message, exc.detail)
            if exc.code == P.ErrorCode.UNSUPPORTED_VERSION:
                self._wake_hello()
            return
        sid = msg.body.get("server_id") if msg.type in (P.MsgType.HEARTBEAT, P.MsgType.HELLO) else None
        if sid and self._server_id and sid != self._server_id:
            self._on_restart(sid)
        if sid:
            self._server_id = sid
        if msg.type == P.MsgType.HELLO:
            self.server_info = msg.body
            self.last_error = None
            self._wake_hello()
            return
        if msg.type == P.MsgType.HEARTBEAT:
            if self.server_info is None and not self._hello_waiters:
                self._command(("hello", threading.Event(), self.timeouts.connect))
            return
        fut = self._jobs.get(msg.job or "")
        if fut is None:
            if msg.type == P.MsgType.ERROR:
                err = msg.body
                self.last_error = ClientError(err.get("code", "internal"), err.get("message", "error"), err.get("detail"))
                if self._hello_waiters:  # e.g. a version mismatch answering our hello
                    self._wake_hello()
            return
        if msg.type == P.MsgType.ACCEPTED:
            fut._update(state="queued", stage="queued", message=f"{msg.body.get('ahead', 0)} job(s) ahead")
        elif msg.type == P.MsgType.PROGRESS:
            b = msg.body
            fut._update(
                state="running",
                fraction=float(b.get("fraction", 0.0)),
                stage=str(b.get("stage", "")),
                message=str(b.get("message", "")),
            )
        elif msg.type == P.MsgType.RESULT:
            with self._lock:
                self._jobs.pop(fut.job_id, None)
            fut._finish("done", result=msg)
        elif msg.type == P.MsgType.ERROR:
            b = msg.body
            self._fail(fut, ClientError(b.get("code", "internal"), b.get("message", "the job failed"), b.get("detail")))
        elif msg.type == P.MsgType.CANCELLED:
            with self._lock:
                self._jobs.pop(fut.job_id, None)
            fut._finish("cancelled", error=ClientError(P.ErrorCode.CANCELLED, f"{fut.method} was cancelled"))

    def _on_restart(self, new_id: str) -> None:
        """The backend restarted: its jobs are gone; say hello again."""
        log.info("backend at %s restarted (%s -> %s)", self.address, self._server_id, new_id)
        for fut in self.jobs():
            if fut.server_id != new_id and fut.state != "pending":
                self._fail(
                    fut,
                    ClientError(
                        P.ErrorCode.BACKEND_RESTARTED,
                        f"the backend restarted while running {fut.method}; submit it again",
                    ),
                )
        self.server_info = None
        self._command(("hello", threading.Event(), self.timeouts.connect))
