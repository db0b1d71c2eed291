"""The ShapeBridge backend server: a ZeroMQ ROUTER, a fair job queue and compute workers.

Threads:
- the I/O thread (`Server.serve_forever`) owns the ROUTER socket. It decodes and
  validates every message, answers ``hello``/``heartbeat``/``cancel``, queues jobs,
  forwards what the workers produce, sends heartbeats and drops silent clients;
- worker threads (one by default: the GPU, or the CPU) take jobs from the `Scheduler`
  round-robin across clients and run the method. They never touch the ROUTER: their
  messages go to the I/O thread over an ``inproc://`` PUSH/PULL pair, without copies.

A malformed message gets an ``error`` reply with a code and the server keeps serving.
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from backend import __version__
from backend.methods import registry as method_registry
from backend.methods.base import JobCancelled, JobContext, Method, MethodResult
from blender_addon import protocol as P

log = logging.getLogger("shapebridge.server")


@dataclass
class ServerConfig:
    """How the server listens and schedules."""

    address: str = "tcp://127.0.0.1:5557"
    """ZeroMQ endpoint to bind. Non-loopback addresses need CURVE keys."""
    secret_key_file: str | None = None
    """Server key pair (``shapebridge keys``): the ``.key_secret`` file. Enables CURVE."""
    allowed_clients_dir: str | None = None
    """Folder of allow-listed client public keys (``*.key``). Required with CURVE."""
    workers: int = 1
    """Compute worker threads (1 = jobs run one at a time on the device)."""
    device: str = "auto"
    """"auto" (cuda if available), "cuda" or "cpu"."""
    heartbeat_interval: float = 1.0
    """Seconds between heartbeats sent to each live client."""
    client_timeout: float = 10.0
    """A client silent for this long is considered gone and its jobs are cancelled."""
    max_jobs_per_client: int = 256
    """Queued + running jobs a single client may hold."""
    progress_interval: float = 0.05
    """Minimum seconds between progress messages of one job."""
    limits: P.Limits = field(default_factory=P.Limits)


def is_loopback(address: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on a loopback host."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", interface names, host names: not loopback


def detect_device(requested: str = "auto") -> dict[str, Any]:
    """Device name, GPU name and free memory, without requiring torch."""
    info: dict[str, Any] = {"device": "cpu", "gpu_name": None, "free_memory": None}
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and requested in ("auto", "cuda") and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        info.update(device="cuda", gpu_name=torch.cuda.get_device_name(0), free_memory=int(free))
    else:
        if requested == "cuda":
            raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available")
        try:
            info["free_memory"] = int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return info


class Job:
    """A submitted job: inputs, config, owner and state."""

    def __init__(self, client: bytes, job_id: str, method: str, config: Any, params: dict, arrays: dict):
        self.client = client
        self.id = job_id
        self.method = method
        self.config = config
        self.params = params
        self.arrays = arrays
        self.cancel_event = threading.Event()
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.last_progress = 0.0


class Scheduler:
    """Per-client FIFO queues served round-robin, so one busy client cannot starve others."""

    def __init__(self) -> None:
        self._queues: collections.OrderedDict[bytes, collections.deque[Job]] = collections.OrderedDict()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, job: Job) -> int:
        """Queue a job; returns the number of jobs ahead of it across all clients."""
        with self._cond:
            ahead = sum(len(q) for q in self._queues.values())
            self._queues.setdefault(job.client, collections.deque()).append(job)
            self._cond.notify()
            return ahead

    def get(self, timeout: float | None = None) -> Job | None:
        """Next job round-robin across clients; None on timeout or when closed."""
        with self._cond:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._closed:
                for client in list(self._queues):
                    q = self._queues[client]
                    if q:
                        job = q.popleft()
                        self._queues.move_to_end(client)  # this client goes last in the rotation
                        if not q:
                            del self._queues[client]
                        return job
                    del self._queues[client]
                remaining = None if end is None else end - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            return None

    def remove(self, client: bytes, job_id: str | None = None) -> list[Job]:
        """Remove queued jobs of a client (one job, or all when job_id is None)."""
        with self._cond:
            q = self._queues.get(client)
            if not q:
                return []
            taken = [j for j in q if job_id is None or j.id == job_id]
            for j in taken:
                q.remove(j)
            return taken

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Server:
    """The backend server. `serve_forever()` runs the I/O loop until `stop()`."""

    def __init__(self, config: ServerConfig | None = None, methods: Mapping[str, type[Method]] | None = None):
        self.config = config or ServerConfig()
        self.methods = dict(methods) if methods is not None else method_registry()
        self.server_id = uuid.uuid4().hex[:12]
        self.device_info = detect_device(self.config.device)
        self.scheduler = Scheduler()
        self.ctx = zmq.Context()
        self._outbox_addr = f"inproc://shapebridge-outbox-{self.server_id}"
        self._stop = threading.Event()
        self._instances: dict[str, Method] = {}
        self._instances_lock = threading.Lock()
        self._jobs: dict[tuple[bytes, str], Job] = {}  # queued + running, by (client, job id)
        self._jobs_lock = threading.Lock()
        self._last_seen: dict[bytes, float] = {}
        self._auth = None
        self._router: zmq.Socket | None = None
        self._workers: list[threading.Thread] = []
        self.endpoint: str | None = None
        self.stats = collections.Counter()

    # ------------------------------------------------------------------ lifecycle
    def bind(self) -> str:
        """Create and bind the ROUTER (with CURVE when configured). Returns the endpoint."""
        cfg = self.config
        curve = cfg.secret_key_file is not None
        if not is_loopback(cfg.address) and not curve:
            raise ValueError(
                f"refusing to listen on {cfg.address} without encryption: a non-loopback address "
                "needs CURVE keys. Create them with `shapebridge keys --out DIR`, then pass "
                "--secret-key DIR/server.key_secret --allow DIR/clients/"
            )
        router = self.ctx.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # unknown peer -> error instead of silent drop
        router.setsockopt(zmq.RCVHWM, 1000)
        router.setsockopt(zmq.SNDHWM, 1000)
        if curve:
            from zmq.auth import load_certificate
            from zmq.auth.thread import ThreadAuthenticator

            if not cfg.allowed_clients_dir or not os.path.isdir(cfg.allowed_clients_dir):
                raise ValueError(
                    "CURVE needs a folder of allowed client public keys (--allow DIR); "
                    f"got {cfg.allowed_clients_dir!r}"
                )
            public, secret = load_certificate(cfg.secret_key_file)
            if secret is None:
                raise ValueError(f"{cfg.secret_key_file} holds no secret key; pass the .key_secret file")
            self._auth = ThreadAuthenticator(self.ctx, log=logging.getLogger("shapebridge.auth"))
            self._auth.start()
            self._auth.configure_curve(domain="*", location=cfg.allowed_clients_dir)
            router.curve_secretkey = secret
            router.curve_publickey = public
            router.curve_server = True
        router.bind(cfg.address)
        self.endpoint = router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._router = router
        log.info(
            "ShapeBridge backend %s listening on %s (protocol %d.%d, device %s%s, CURVE %s)",
            __version__,
            self.endpoint,
            *P.PROTOCOL_VERSION,
            self.device_info["device"],
            f" {self.device_info['gpu_name']}" if self.device_info["gpu_name"] else "",
            "on" if curve else "off",
        )
        return self.endpoint

    def serve_forever(self) -> None:
        """Run until `stop()` (or SIGINT/SIGTERM through the CLI); then shut down cleanly."""
        if self._router is None:
            self.bind()
        pull = self.ctx.socket(zmq.PULL)
        pull.bind(self._outbox_addr)
        for i in range(self.config.workers):
            t = threading.Thread(target=self._worker, name=f"shapebridge-worker-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        next_beat = time.monotonic()
        try:
            while not self._stop.is_set():
                timeout_ms = max(0, int((next_beat - time.monotonic()) * 1000))
                events = dict(poller.poll(min(timeout_ms, 200)))
                if self._router in events:
                    # Drain a bounded batch so worker output is never starved.
                    for _ in range(64):
                        try:
                            frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_frames(frames)
                if pull in events:
                    for _ in range(256):
                        try:
                            frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._forward(frames)
                now = time.monotonic()
                if now >= next_beat:
                    self._heartbeat(now)
                    next_beat = now + self.config.heartbeat_interval
        finally:
            self._shutdown(pull)

    def stop(self) -> None:
        """Ask the I/O loop to finish (thread-safe; safe from a signal handler)."""
        self._stop.set()

    def _shutdown(self, pull: zmq.Socket) -> None:
        log.info("shutting down: cancelling %d job(s)", len(self._jobs))
        with self._jobs_lock:
            for job in self._jobs.values():
                job.cancel_event.set()
        self.scheduler.close()
        for t in self._workers:
            t.join(timeout=5.0)
        pull.close(0)
        if self._router is not None:
            self._router.close(0)
        if self._auth is not None:
            self._auth.stop()
        self.ctx.term()
        log.info("stopped (%s)", ", ".join(f"{k} {v}" for k, v in sorted(self.stats.items())) or "no jobs")

    # ------------------------------------------------------------------ I/O thread
    def _send(self, client: bytes, msg: P.Message) -> None:
        try:
            P.send(self._router, msg, identity=client)
        except zmq.ZMQError as exc:  # peer gone (ROUTER_MANDATORY) or HWM: drop, log
            log.debug("could not send %s to %s: %s", msg.type.value, client.hex(), exc)

    def _forward(self, frames: list) -> None:
        """Frames from a worker: [client identity, *message frames]."""
        try:
            self._router.send_multipart(frames, copy=False)
        except zmq.ZMQError as exc:
            log.debug("could not forward to %s: %s", bytes(frames[0].buffer).hex(), exc)

    def _on_frames(self, frames: list) -> None:
        client = bytes(frames[0].buffer)
        self._last_seen[client] = time.monotonic()
        body = frames[1:]
        try:
            msg = P.decode(body, self.config.limits)
        except P.ProtocolError as exc:
            head = P.peek_header(body)
            self.stats["rejected"] += 1
            log.warning("rejected message from %s: %s", client.hex()[:8], exc)
            reply = P.error_message(exc.code, exc.message, exc.detail, job=head.get("job"))
            self._send(client, reply)
            return
        try:
            handler = {
                P.MsgType.HELLO: self._on_hello,
                P.MsgType.SUBMIT: self._on_submit,
                P.MsgType.CANCEL: self._on_cancel,
                P.MsgType.HEARTBEAT: self._on_heartbeat,
            }.get(msg.type)
            if handler is None:
                raise P.ProtocolError(
                    P.ErrorCode.BAD_MESSAGE, f"a client may not send '{msg.type.value}' messages"
                )
            handler(client, msg)
        except P.ProtocolError as exc:
            self.stats["rejected"] += 1
            log.warning("rejected %s from %s: %s", msg.type.value, client.hex()[:8], exc)
            self._send(client, P.error_message(exc.code, exc.message, exc.detail, job=msg.job))
        except Exception as exc:  # a bug here must not take the server down
            log.exception("internal error handling %s", msg.type.value)
            self._send(
                client,
                P.error_message(P.ErrorCode.INTERNAL, f"internal server error: {exc}", job=msg.job),
            )

    def hello_info(self) -> dict[str, Any]:
        return {
            "protocol": list(P.PROTOCOL_VERSION),
            "version": __version__,
            "server_id": self.server_id,
            **self.device_info,
            "methods": {name: cls.schema() for name, cls in self.methods.items()},
            "models": {name: m.models() for name, m in self._loaded_methods().items()},
            "queue": len(self.scheduler),
        }

    def _loaded_methods(self) -> dict[str, Method]:
        with self._instances_lock:
            return dict(self._instances)

    def _on_hello(self, client: bytes, msg: P.Message) -> None:
        reply = P.hello(**self.hello_info())
        reply.id = msg.id
        self._send(client, reply)

    def _on_heartbeat(self, client: bytes, msg: P.Message) -> None:
        pass  # last_seen already updated; the periodic heartbeat answers

    def _on_submit(self, client: bytes, msg: P.Message) -> None:
        if not msg.job:
            raise P.ProtocolError(P.ErrorCode.BAD_MESSAGE, "a submit needs a job id in 'job'")
        cls = self.methods.get(msg.method or "")
        if cls is None:
            raise P.ProtocolError(
                P.ErrorCode.UNKNOWN_METHOD,
                f"unknown method {msg.method!r}; this backend offers {', '.join(sorted(self.methods))}",
            )
        with self._jobs_lock:
            if (client, msg.job) in self._jobs:
                raise P.ProtocolError(P.ErrorCode.DUPLICATE_JOB, f"job {msg.job!r} is already queued or running")
            held = sum(1 for c, _ in self._jobs if c == client)
        if held >= self.config.max_jobs_per_client:
            raise P.ProtocolError(
                P.ErrorCode.TOO_LARGE,
                f"this client already has {held} jobs queued or running (limit {self.config.max_jobs_per_client})",
            )
        config = cls.validate(msg.arrays, msg.params)
        job = Job(client, msg.job, cls.name, config, msg.params, msg.arrays)
        with self._jobs_lock:
            self._jobs[(client, job.id)] = job
        ahead = self.scheduler.put(job)
        self.stats["accepted"] += 1
        log.info("job %s (%s) from %s accepted, %d ahead", job.id, job.method, client.hex()[:8], ahead)
        self._send(client, P.Message(P.MsgType.ACCEPTED, job=job.id, method=job.method, body={"ahead": ahead}))

    def _on_cancel(self, client: bytes, msg: P.Message) -> None:
        if not msg.job:
            raise P.ProtocolError(P.ErrorCode.BAD_MESSAGE, "a cancel needs the job id in 'job'")
        queued = self.scheduler.remove(client, msg.job)
        if queued:
            self._finish(queued[0], "cancelled")
            self._send(client, P.Message(P.MsgType.CANCELLED, job=msg.job, body={"stage": "queued"}))
            return
        with self._jobs_lock:
            job = self._jobs.get((client, msg.job))
        if job is None:
            raise P.ProtocolError(P.ErrorCode.UNKNOWN_JOB, f"no queued or running job {msg.job!r} for this client")
        job.cancel_event.set()  # the worker answers 'cancelled' at the method's next check

    def _heartbeat(self, now: float) -> None:
        gone = [c for c, t in self._last_seen.items() if now - t > self.config.client_timeout]
        for client in gone:
            del self._last_seen[client]
            self._drop_client(client)
        beat = P.Message(P.MsgType.HEARTBEAT, body={"server_id": self.server_id, "queue": len(self.scheduler)})
        frames = P.encode(beat)
        for client in self._last_seen:
            try:
                self._router.send_multipart([client, *frames], copy=False)
            except zmq.ZMQError:
                pass

    def _drop_client(self, client: bytes) -> None:
        """A client went silent: cancel its queued and running jobs."""
        for job in self.scheduler.remove(client):
            self._finish(job, "cancelled")
        with self._jobs_lock:
            running = [j for (c, _), j in self._jobs.items() if c == client]
        for job in running:
            job.cancel_event.set()
        if running:
            log.info("client %s went silent: cancelled %d job(s)", client.hex()[:8], len(running))

    def _finish(self, job: Job, outcome: str) -> None:
        with self._jobs_lock:
            self._jobs.pop((job.client, job.id), None)
        self.stats[outcome] += 1

    # ------------------------------------------------------------------ workers
    def _method(self, name: str) -> Method:
        with self._instances_lock:
            inst = self._instances.get(name)
            if inst is None:
                inst = self.methods[name](device=self.device_info["device"])
                self._instances[name] = inst
        if not inst.loaded:
            inst.load()
        return inst

    def _worker(self) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(self._outbox_addr)
        try:
            while not self._stop.is_set():
                job = self.scheduler.get(timeout=0.5)
                if job is None:
                    continue
                self._run_job(job, push)
        finally:
            push.close(0)

    def _run_job(self, job: Job, push: zmq.Socket) -> None:
        def emit(msg: P.Message) -> None:
            push.send_multipart([job.client, *P.encode(msg)], copy=False)

        def report(fraction: float, stage: str = "", message: str = "", preview=None) -> None:
            now = time.monotonic()
            if now - job.last_progress >= self.config.progress_interval or fraction >= 1.0:
                job.last_progress = now
                emit(P.progress_message(job.id, fraction, stage, message, preview))

        job.started = time.monotonic()
        ctx = JobContext(job.id, report, job.cancel_event.is_set, self.device_info["device"])
        outcome = "failed"
        try:
            if job.cancel_event.is_set():
                raise JobCancelled(job.id)
            report(0.0, "loading", "")
            method = self._method(job.method)
            result = method.infer(job.arrays, job.config, ctx)
            ctx.check_cancelled()
            emit(self._result_message(job, method, result))
            outcome = "done"
        except JobCancelled:
            emit(P.Message(P.MsgType.CANCELLED, job=job.id, body={"stage": "running"}))
            outcome = "cancelled"
        except P.ProtocolError as exc:
            emit(P.error_message(exc.code, exc.message, exc.detail, job=job.id))
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.method)
            tb = traceback.format_exception(exc)
            emit(
                P.error_message(
                    P.ErrorCode.METHOD_FAILED,
                    f"{job.method} failed: {type(exc).__name__}: {exc}",
                    {"traceback": "".join(tb[-6:])},
                    job=job.id,
                )
            )
        finally:
            self._finish(job, outcome)
            job.arrays = {}  # release the input frames
            log.info(
                "job %s (%s) %s in %.3f s (queued %.3f s)",
                job.id,
                job.method,
                outcome,
                time.monotonic() - job.started,
                job.started - job.submitted,
            )

    def _result_message(self, job: Job, method: Method, result: MethodResult) -> P.Message:
        arrays: dict[str, np.ndarray] = {}
        outputs = []
        for out in result.outputs:
            outputs.append({"name": out.name, "kind": out.kind, "meta": out.meta})
            for key, arr in out.arrays.items():
                arrays[f"{out.name}.{key}"] = arr
        now = time.monotonic()
        body = {
            "outputs": outputs,
            "scores": {k: float(v) for k, v in result.scores.items()},
            "info": result.info,
            "provenance": {
                "method": job.method,
                "params": job.params,
                "models": method.models(),
                "server_version": __version__,
                "device": self.device_info["gpu_name"] or self.device_info["device"],
                "job": job.id,
            },
            "timing": {"queued_s": job.started - job.submitted, "run_s": now - job.started},
        }
        return P.Message(P.MsgType.RESULT, job=job.id, method=job.method, arrays=arrays, body=body)
