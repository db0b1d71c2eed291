"""`shapebridge keys`: create CURVE key pairs for a backend reachable beyond loopback.

    shapebridge keys --out ~/.shapebridge/keys
      -> server.key / server.key_secret   (keep the secret on the server)
         clients/<name>.key               (public; the server's allow-list folder)
         <name>.key / <name>.key_secret   (give these to the Blender user)
"""

from __future__ import annotations

import argparse
import os
import shutil


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for the key files")
    p.add_argument("--client", action="append", default=None, metavar="NAME",
                   help="client key pair(s) to create (repeatable; default: one named 'client')")
    p.add_argument("--no-server", action="store_true", help="only create client key pairs")


def create_keys(out: str, clients: list[str], server: bool = True) -> dict[str, str]:
    """Create key pairs; returns {name: public key file}. Existing files are kept."""
    import zmq.auth

    os.makedirs(os.path.join(out, "clients"), exist_ok=True)
    made = {}
    for name in (["server"] if server else []) + clients:
        public = os.path.join(out, f"{name}.key")
        if not os.path.exists(public):
            public, _secret = zmq.auth.create_certificates(out, name)
            os.chmod(os.path.join(out, f"{name}.key_secret"), 0o600)
        made[name] = public
        if name != "server":
            shutil.copy(public, os.path.join(out, "clients", f"{name}.key"))
    return made


def run(args: argparse.Namespace) -> int:
    made = create_keys(args.out, args.client or ["client"], server=not args.no_server)
    for name, path in made.items():
        print(f"{name:>10}: {path} (+ {os.path.basename(path)}_secret)")
    print(f"allow-list folder for `shapebridge serve --allow`: {os.path.join(args.out, 'clients')}")
    return 0
