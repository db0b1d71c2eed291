"""`shapebridge serve`: run the backend server in the foreground."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default="tcp://127.0.0.1:5557",
                   help="ZeroMQ endpoint to bind (tcp://HOST:PORT, tcp://127.0.0.1:* for a free port, "
                        "ipc://PATH). Non-loopback hosts need --secret-key and --allow.")
    p.add_argument("--secret-key", dest="secret_key_file", metavar="FILE",
                   help="server key pair secret file from `shapebridge keys` (enables CURVE)")
    p.add_argument("--allow", dest="allowed_clients_dir", metavar="DIR",
                   help="folder of allow-listed client public keys (*.key)")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--workers", type=int, default=1, help="compute worker threads")
    p.add_argument("--client-timeout", type=float, default=10.0,
                   help="seconds of client silence after which its jobs are cancelled")
    p.add_argument("--max-array-mb", type=float, default=1024, help="size cap of one received array")
    p.add_argument("--max-message-mb", type=float, default=2048, help="size cap of one received message")
    p.add_argument("--ready-file", metavar="PATH",
                   help="write {address, pid, server_id} as JSON here once listening")
    p.add_argument("--log-file", metavar="PATH", help="also write the log to this file")
    p.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from backend.server.server import Server, ServerConfig
    from blender_addon.protocol import Limits

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        handlers.append(logging.FileHandler(args.log_file))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )
    config = ServerConfig(
        address=args.address,
        secret_key_file=args.secret_key_file,
        allowed_clients_dir=args.allowed_clients_dir,
        workers=args.workers,
        device=args.device,
        client_timeout=args.client_timeout,
        limits=Limits(
            max_array_bytes=int(args.max_array_mb * 2**20),
            max_total_bytes=int(args.max_message_mb * 2**20),
        ),
    )
    try:
        server = Server(config)
        endpoint = server.bind()
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"shapebridge serve: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    if args.ready_file:
        tmp = args.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"address": endpoint, "pid": os.getpid(), "server_id": server.server_id}, f)
        os.replace(tmp, args.ready_file)
    server.serve_forever()
    return 0
