"""`shapebridge bench transport`: how fast meshes travel between Blender and the backend.

For grid meshes of 10k, 100k and 1M vertices (faces ~ 2 V), each a median of
``--repeats`` round trips after one warm-up:

- **shapebridge**: `Client.submit("echo", mesh)` to a real backend process over
  loopback TCP and back: encode, send, server-side validation (finite values, face
  indices), the echo method, the result message, client-side decode and validation;
- **raw_loopback**: the same bytes (vertex + face buffers) sent to an echo process over
  a plain loopback TCP socket and received into a preallocated buffer: the floor any
  transport pays for moving the bytes twice;
- **msgpack_nested_lists**: the naive alternative: ``msgpack.packb`` of ``tolist()``
  nested lists, through the same raw echo, unpacked and turned back into arrays;
- **bpy_write / bpy_read**: the add-on's bridge building a Blender mesh from the arrays
  and reading it back (the bpy module, in a subprocess: the backend never imports bpy).

Ratios: "ours/raw_copy" (target <= 2) and "nested_lists/ours" (target >= 20).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import msgpack
import numpy as np

from backend.bench.results import write_results
from backend.server.process import ROOT, BackendProcess
from blender_addon import protocol as P
from blender_addon.client import Client, Timeouts

SIZES = (10_000, 100_000, 1_000_000)
BPY_REPEATS = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated vertex counts")
    p.add_argument("--repeats", type=int, default=5, help="timed round trips per size (median)")
    p.add_argument("--no-bpy", action="store_true", help="skip the Blender bridge rows")
    p.add_argument("--json", metavar="PATH", help="write results (and PATH with .md) here")


def grid_mesh(vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """A random-height n x n grid with n = round(sqrt(vertices)); faces (F, 3) int32."""
    n = int(round(vertices**0.5))
    rng = np.random.default_rng(n)
    x, y = np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32), indexing="ij")
    v = np.stack([x.ravel(), y.ravel(), rng.random(n * n, dtype=np.float32)], axis=1)
    i = np.arange(n - 1)
    a = (i[:, None] * n + i[None, :]).ravel()
    f = np.concatenate([np.stack([a, a + n, a + 1], 1), np.stack([a + 1, a + n, a + n + 1], 1)])
    return v, f.astype(np.int32)


# --------------------------------------------------------------------------- raw echo


def _recv_exact(sock: socket.socket, buf: memoryview) -> None:
    got = 0
    while got < len(buf):
        n = sock.recv_into(buf[got:])
        if n == 0:
            raise ConnectionError("echo peer closed")
        got += n


def _echo_server(port_queue) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port_queue.put(srv.getsockname()[1])
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray()
    head = bytearray(8)
    try:
        while True:
            _recv_exact(conn, memoryview(head))
            (n,) = struct.unpack("<Q", head)
            if n == 0:
                return
            if len(buf) < n:
                buf = bytearray(n)
            view = memoryview(buf)[:n]
            _recv_exact(conn, view)
            conn.sendall(head)
            conn.sendall(view)
    except ConnectionError:
        return


class RawEcho:
    """A plain TCP echo process on loopback: the floor of moving bytes there and back."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        self.proc = ctx.Process(target=_echo_server, args=(q,), daemon=True)
        self.proc.start()
        self.sock = socket.create_connection(("127.0.0.1", q.get(timeout=30)))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def roundtrip(self, *buffers: memoryview) -> memoryview:
        n = sum(b.nbytes for b in buffers)
        self.sock.sendall(struct.pack("<Q", n))
        for b in buffers:
            self.sock.sendall(b)
        head = bytearray(8)
        _recv_exact(self.sock, memoryview(head))
        if len(self.buf) < n:
            self.buf = bytearray(n)
        view = memoryview(self.buf)[:n]
        _recv_exact(self.sock, view)
        return view

    def close(self) -> None:
        self.sock.sendall(struct.pack("<Q", 0))
        self.sock.close()
        self.proc.join(5)


# --------------------------------------------------------------------------- variants


def _timed(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_ours(client: Client, v: np.ndarray, f: np.ndarray, repeats: int) -> float:
    def once() -> None:
        msg = client.submit("echo", P.mesh_arrays("mesh", v, f)).result(timeout=300)
        assert msg.arrays["result.vertices"].shape == v.shape

    return _timed(once, repeats)


def bench_raw(echo: RawEcho, v: np.ndarray, f: np.ndarray, repeats: int) -> float:
    def once() -> None:
        back = echo.roundtrip(memoryview(v).cast("B"), memoryview(f).cast("B"))
        rv = np.frombuffer(back, np.float32, count=v.size).reshape(v.shape)
        rf = np.frombuffer(back, np.int32, offset=v.nbytes).reshape(f.shape)
        assert rv.shape == v.shape and rf.shape == f.shape

    return _timed(once, repeats)


def bench_nested(echo: RawEcho, v: np.ndarray, f: np.ndarray, repeats: int) -> float:
    def once() -> None:
        blob = msgpack.packb({"vertices": v.tolist(), "faces": f.tolist()})
        back = msgpack.unpackb(echo.roundtrip(memoryview(blob)))
        rv = np.asarray(back["vertices"], np.float32)
        rf = np.asarray(back["faces"], np.int32)
        assert rv.shape == v.shape and rf.shape == f.shape

    return _timed(once, repeats)


def bench_bpy(sizes: list[int]) -> list[dict]:
    script = ROOT / "blender_addon" / "examples" / "bench_bridge.py"
    out = subprocess.run([sys.executable, str(script), "--repeats", str(BPY_REPEATS), *map(str, sizes)], cwd=ROOT,
                         capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(f"bpy bridge bench failed:\n{out.stderr[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def run(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict] = []

    def row(variant: str, cond: str, metric: str, value: float, n: int = args.repeats) -> None:
        rows.append({"variant": variant, "category": "grid mesh", "condition": cond, "metric": metric,
                     "value": round(value, 4), "ci_low": None, "ci_high": None, "n": n})

    with tempfile.TemporaryDirectory() as tmp, BackendProcess(tmp, name="bench-backend") as backend:
        client = Client(backend.address, timeouts=Timeouts(connect=30, request=120, inactivity=120))
        echo = RawEcho()
        try:
            client.connect()
            for size in sizes:
                v, f = grid_mesh(size)
                cond = f"{v.shape[0]} vertices, {f.shape[0]} faces ({(v.nbytes + f.nbytes) / 2**20:.1f} MiB)"
                ours = bench_ours(client, v, f, args.repeats)
                raw = bench_raw(echo, v, f, args.repeats)
                nested = bench_nested(echo, v, f, max(1, min(args.repeats, 3)))
                row("shapebridge", cond, "ms", ours * 1e3)
                row("raw_loopback", cond, "ms", raw * 1e3)
                row("msgpack_nested_lists", cond, "ms", nested * 1e3)
                row("ours/raw_copy", cond, "ratio", ours / raw)
                row("nested_lists/ours", cond, "ratio", nested / ours)
                print(f"{cond}: ours {ours * 1e3:.1f} ms, raw {raw * 1e3:.1f} ms, nested {nested * 1e3:.0f} ms",
                      file=sys.stderr)
        finally:
            echo.close()
            client.close()
    if not args.no_bpy:
        for r in bench_bpy(sizes):
            cond = next(x["condition"] for x in rows if x["condition"].startswith(f"{r['vertices']} vertices"))
            row("bpy_write (bridge.new_mesh)", cond, "ms", r["write_s"] * 1e3, BPY_REPEATS)
            row("bpy_read (bridge.read_mesh)", cond, "ms", r["read_s"] * 1e3, BPY_REPEATS)
    write_results("transport", "bench", rows, args.json,
                  "Transport: mesh round trip through the backend vs raw loopback and nested lists")
    return 0
