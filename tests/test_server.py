"""Server + client over real sockets, with the backend as a real subprocess."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from backend.bench.transport import grid_mesh
from backend.server.server import Job, Scheduler, is_loopback
from blender_addon import protocol as P
from blender_addon.client import Client, ClientError, Timeouts
from tests.conftest import ROOT


def cube() -> tuple[np.ndarray, np.ndarray]:
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], np.float32)
    f = np.array(
        [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]], np.int32)
    return v, f


@pytest.fixture
def client_factory():
    clients = []

    def make(address, **kw):
        kw.setdefault("timeouts", Timeouts(connect=10, request=10, inactivity=10))
        c = Client(address, **kw)
        clients.append(c)
        return c

    yield make
    for c in clients:
        c.close()


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_hello_and_mesh_stats_round_trip(start_backend, client_factory, tmp_path, transport):
    addr = "tcp://127.0.0.1:*" if transport == "tcp" else f"ipc://{tmp_path}/sb.sock"
    backend = start_backend(addr)
    client = client_factory(backend.address)
    info = client.connect()
    assert tuple(info["protocol"]) == P.PROTOCOL_VERSION
    assert info["device"] in ("cpu", "cuda")
    assert "mesh_stats" in info["methods"]
    schema = info["methods"]["mesh_stats"]
    assert {p["name"] for p in schema["params"]} >= {"scale", "color_by", "delay_s"}
    assert schema["inputs"] == [{"name": "mesh", "kind": "mesh", "doc": schema["inputs"][0]["doc"], "optional": False}]

    v, f = cube()
    seen = []
    fut = client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"scale": 2.0})
    fut.add_progress_callback(lambda j: seen.append(j.state))
    msg = fut.result(timeout=30)
    assert fut.state == "done"
    np.testing.assert_allclose(msg.arrays["result.vertices"], 2 * v)
    np.testing.assert_array_equal(msg.arrays["result.faces"], f)
    assert msg.arrays["result.colors"].shape == (8, 4)
    s = msg.body["scores"]
    assert s["area"] == pytest.approx(6.0) and s["volume"] == pytest.approx(1.0)
    assert s["watertight"] == 1.0 and s["euler_characteristic"] == 2.0
    assert msg.body["outputs"][0]["kind"] == "mesh"
    assert msg.body["provenance"]["method"] == "mesh_stats"
    assert msg.body["provenance"]["params"] == {"scale": 2.0}
    assert "queued" in seen


def test_progress_and_cancel_running_and_queued(backend_server, client_factory):
    client = client_factory(backend_server.address)
    client.connect()
    v, f = cube()
    running = client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"delay_s": 30.0})
    queued = client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"delay_s": 30.0})
    end = time.monotonic() + 10
    while running.stage != "waiting" and time.monotonic() < end:
        time.sleep(0.02)
    assert running.state == "running" and running.stage == "waiting"
    time.sleep(0.3)
    assert 0.0 < running.fraction < 1.0
    queued.cancel()
    running.cancel()
    for fut in (queued, running):
        with pytest.raises(ClientError) as e:
            fut.result(timeout=5)
        assert e.value.code == P.ErrorCode.CANCELLED and fut.state == "cancelled"
    # the worker is free again: a new job finishes long before the cancelled 30 s ones would have
    client.submit("mesh_stats", P.mesh_arrays("mesh", v, f)).result(timeout=15)


class RawPeer:
    """A bare DEALER that sends hand-made frames, to test what a bad client gets back."""

    def __init__(self, address: str):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(address)

    def ask(self, frames: list, timeout: float = 10.0) -> P.Message:
        self.sock.send_multipart(frames)
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError("the server did not answer")
        return P.decode(self.sock.recv_multipart())

    def answer(self, frames: list, timeout: float = 10.0) -> P.Message:
        """`ask`, then the first reply that is not a progress message."""
        reply = self.ask(frames, timeout)
        while reply.type == P.MsgType.PROGRESS:
            assert self.sock.poll(int(timeout * 1000)), "no answer after progress"
            reply = P.decode(self.sock.recv_multipart())
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


def _submit_frames(inputs: dict, method: str = "mesh_stats", **header) -> list:
    """Frames of a submit; keyword arguments overwrite header fields as sent."""
    frames = P.encode(P.Message(P.MsgType.SUBMIT, job=header.pop("job", "j1"), method=method, arrays=inputs))
    if header:
        h = msgpack.unpackb(frames[0])
        h.update(header)
        frames[0] = msgpack.packb(h)
    return [bytes(memoryview(fr)) for fr in frames]


def test_bad_inputs_get_their_error_code_and_the_server_keeps_serving(start_backend):
    backend = start_backend(extra=["--max-array-mb", "1"])
    peer = RawPeer(backend.address)
    v, f = cube()
    good = P.mesh_arrays("mesh", v, f)
    nan_v = v.copy()
    nan_v[3, 1] = np.nan
    big_v = np.zeros((200_000, 3), np.float32)  # 2.4 MB > 1 MB cap
    truncated = _submit_frames(good)
    truncated[1] = truncated[1][:-5]
    cases = {
        "wrong dtype": (_submit_frames({"mesh.vertices": v.astype(np.int32), "mesh.faces": f}), P.ErrorCode.BAD_DTYPE),
        "wrong dtype name": (_submit_frames(good, arrays=[{"name": "mesh.vertices", "dtype": "float128", "shape": [8, 3], "frame": 1},
                                                          {"name": "mesh.faces", "dtype": "int32", "shape": [12, 3], "frame": 2}]),
                             P.ErrorCode.BAD_DTYPE),
        "NaN": (_submit_frames(P.mesh_arrays("mesh", nan_v, f)), P.ErrorCode.NON_FINITE),
        "face index out of range": (_submit_frames(P.mesh_arrays("mesh", v, f + 1)), P.ErrorCode.INDEX_OUT_OF_RANGE),
        "truncated frame": (truncated, P.ErrorCode.SHAPE_MISMATCH),
        "missing frame": (_submit_frames(good)[:2], P.ErrorCode.BAD_MESSAGE),
        "oversize": (_submit_frames(P.mesh_arrays("mesh", big_v, f)), P.ErrorCode.TOO_LARGE),
        "unknown method": (_submit_frames(good, method="make_coffee"), P.ErrorCode.UNKNOWN_METHOD),
        "wrong protocol major": (_submit_frames(good, v=[P.PROTOCOL_MAJOR + 1, 0]), P.ErrorCode.UNSUPPORTED_VERSION),
        "bad param type": (_submit_frames(good, params={"scale": "big"}), P.ErrorCode.BAD_PARAMS),
        "param out of range": (_submit_frames(good, params={"scale": -1.0}), P.ErrorCode.BAD_PARAMS),
        "unknown param": (_submit_frames(good, params={"colour": 1}), P.ErrorCode.BAD_PARAMS),
        "garbage header": ([b"\xde\xad\xbe\xef"], P.ErrorCode.BAD_MESSAGE),
        "missing input": (_submit_frames({"other.vertices": v}), P.ErrorCode.BAD_INPUT),
    }
    try:
        for i, (what, (frames, code)) in enumerate(cases.items()):
            reply = peer.ask(frames)
            assert reply.type == P.MsgType.ERROR, what
            assert reply.body["code"] == code.value, f"{what}: {reply.body}"
            assert len(reply.body["message"]) > 10, what
            # ...and the server still serves a good job from the same peer
            ok = peer.ask(_submit_frames(good, job=f"ok{i}"))
            assert ok.type == P.MsgType.ACCEPTED, what
            while ok.type != P.MsgType.RESULT:
                assert peer.sock.poll(10_000), f"{what}: no result for the good job"
                ok = P.decode(peer.sock.recv_multipart())
        assert backend.alive()
        assert "Traceback" not in backend.output()
    finally:
        peer.close()


def test_duplicate_job_and_unknown_cancel(backend_server):
    """A second submit of a running job's id is refused (DUPLICATE_JOB), a cancel of an id
    the server does not hold is refused (UNKNOWN_JOB). The first job waits 30 s, so it is
    still running however loaded the machine is (with 2 s it could finish first), and is
    cancelled at the end."""
    peer = RawPeer(backend_server.address)
    try:
        v, f = cube()
        frames = P.encode(P.Message(P.MsgType.SUBMIT, job="dup", method="mesh_stats",
                                    params={"delay_s": 30.0}, arrays=P.mesh_arrays("mesh", v, f)))
        assert peer.ask(frames).type == P.MsgType.ACCEPTED
        reply = peer.answer(frames)
        assert reply.type == P.MsgType.ERROR and reply.job == "dup", reply
        assert reply.body["code"] == P.ErrorCode.DUPLICATE_JOB.value
        reply = peer.answer(P.encode(P.Message(P.MsgType.CANCEL, job="nope")))
        assert reply.type == P.MsgType.ERROR, reply
        assert reply.body["code"] == P.ErrorCode.UNKNOWN_JOB.value
        reply = peer.answer(P.encode(P.Message(P.MsgType.CANCEL, job="dup")))
        assert reply.type == P.MsgType.CANCELLED and reply.job == "dup", reply
    finally:
        peer.close()


def test_four_clients_twenty_five_jobs_each_get_their_own_results(backend_server, client_factory):
    clients = [client_factory(backend_server.address) for _ in range(4)]
    for c in clients:
        c.connect()
    failures: list[str] = []

    def work(ci: int, client: Client) -> None:
        futs = []
        for j in range(25):
            v, f = grid_mesh((3 + (ci * 25 + j) % 17) ** 2)
            futs.append((v, client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"scale": float(ci + 1)})))
        for v, fut in futs:
            try:
                msg = fut.result(timeout=120)
                np.testing.assert_allclose(msg.arrays["result.vertices"], v * (ci + 1), rtol=1e-6)
            except Exception as exc:  # collected and reported below
                failures.append(f"client {ci}: {exc}")

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not failures, failures[:3]


def test_scheduler_is_fair_between_clients():
    s = Scheduler()
    for i in range(10):
        s.put(Job(b"A", f"a{i}", "m", None, {}, {}))
    s.put(Job(b"B", "b0", "m", None, {}, {}))
    order = [s.get(0).id for _ in range(4)]
    assert order == ["a0", "b0", "a1", "a2"]
    assert [j.id for j in s.remove(b"A")] == [f"a{i}" for i in range(3, 10)]
    assert s.get(0) is None


def test_jobs_of_a_vanished_client_are_cancelled(start_backend, client_factory):
    backend = start_backend(extra=["--client-timeout", "1.5"])
    v, f = cube()
    leaver = client_factory(backend.address)
    leaver.connect()
    leaver.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"delay_s": 60.0})
    time.sleep(0.5)
    leaver.close()  # no goodbye: the server notices the silence
    other = client_factory(backend.address)
    other.connect()
    # would time out if the vanished client's 60 s job still held the worker
    other.submit("mesh_stats", P.mesh_arrays("mesh", v, f)).result(timeout=30)
    assert "went silent: cancelled 1 job" in backend.output()


def test_backend_killed_mid_job_reports_within_inactivity_timeout(backend_server, client_factory):
    client = client_factory(backend_server.address, timeouts=Timeouts(connect=10, request=10, inactivity=2.0))
    client.connect()
    v, f = cube()
    fut = client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"delay_s": 60.0})
    while fut.state != "running":
        time.sleep(0.02)
    backend_server.kill()
    t0 = time.monotonic()
    with pytest.raises(ClientError) as e:
        fut.result(timeout=10)
    waited = time.monotonic() - t0
    assert e.value.code == P.ErrorCode.TIMEOUT and "silent" in e.value.message
    assert waited < 2.0 + 3.0, f"reported after {waited:.1f} s; the inactivity timeout is 2 s"
    assert not client.connected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_reconnects_after_backend_restart(start_backend, client_factory):
    addr = f"tcp://127.0.0.1:{_free_port()}"
    first = start_backend(addr, name="first")
    client = client_factory(addr, timeouts=Timeouts(connect=10, request=10, inactivity=3.0))
    old_id = client.connect()["server_id"]
    first.kill()
    second = start_backend(addr, name="second")
    end = time.monotonic() + 20
    while time.monotonic() < end and not (client.server_info and client.server_info["server_id"] != old_id):
        time.sleep(0.05)
    assert client.server_info and client.server_info["server_id"] != old_id
    v, f = cube()
    msg = client.submit("mesh_stats", P.mesh_arrays("mesh", v, f)).result(timeout=30)
    assert msg.body["scores"]["volume"] == pytest.approx(1.0)
    assert second.alive()


def test_curve_allows_listed_keys_and_refuses_unknown_ones(start_backend, client_factory, tmp_path):
    from backend.server.keys import create_keys

    keys = tmp_path / "keys"
    create_keys(str(keys), ["alice"])
    create_keys(str(tmp_path / "other"), ["mallory"], server=False)
    backend = start_backend(
        "tcp://127.0.0.1:*",
        extra=["--secret-key", str(keys / "server.key_secret"), "--allow", str(keys / "clients")],
    )
    assert "CURVE on" in backend.output()
    alice = client_factory(backend.address, server_public_key=str(keys / "server.key"),
                           client_secret_key=str(keys / "alice.key_secret"))
    assert "mesh_stats" in alice.connect()["methods"]
    mallory = client_factory(backend.address, server_public_key=str(keys / "server.key"),
                             client_secret_key=str(tmp_path / "other" / "mallory.key_secret"),
                             timeouts=Timeouts(connect=3))
    with pytest.raises(ClientError) as e:
        mallory.connect()
    assert e.value.code == P.ErrorCode.AUTH_FAILED, e.value
    plain = client_factory(backend.address, timeouts=Timeouts(connect=2))
    with pytest.raises(ClientError):
        plain.connect()
    assert backend.alive()


def test_non_loopback_bind_needs_curve_keys():
    out = subprocess.run([sys.executable, "-m", "backend", "serve", "--address", "tcp://0.0.0.0:*"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "needs CURVE keys" in out.stderr and "shapebridge keys" in out.stderr
    assert is_loopback("tcp://127.0.0.1:5557") and is_loopback("ipc:///tmp/x") and is_loopback("tcp://[::1]:1")
    assert not is_loopback("tcp://0.0.0.0:5557") and not is_loopback("tcp://*:5557")


def test_clean_shutdown_on_sigterm(backend_server, client_factory):
    client = client_factory(backend_server.address)
    client.connect()
    v, f = cube()
    client.submit("mesh_stats", P.mesh_arrays("mesh", v, f), {"delay_s": 60.0})
    time.sleep(0.5)
    assert backend_server.stop() == 0  # exits by itself on SIGTERM (else it is killed: -9)
    log = backend_server.output()
    assert "shutting down: cancelling 1 job" in log and "stopped" in log


def test_unreachable_backend_is_reported_plainly(client_factory):
    client = client_factory(f"tcp://127.0.0.1:{_free_port()}", timeouts=Timeouts(connect=1.0))
    with pytest.raises(ClientError) as e:
        client.connect()
    assert e.value.code == P.ErrorCode.UNAVAILABLE and "no ShapeBridge backend answered" in e.value.message
    fut = client.submit("mesh_stats", P.mesh_arrays("mesh", *cube()))
    with pytest.raises(ClientError) as e:
        fut.result(timeout=5)
    assert e.value.code == P.ErrorCode.UNAVAILABLE
