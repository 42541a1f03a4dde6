"""``cellbench lab``: one long-running service that owns every board of this host.

It serves a web page and an HTTP JSON API (cellbench.lab.api) on localhost (by default),
runs each channel's queue of jobs, writes every job's BDF log and sidecar under the data
directory (cellbench.lab.layout) and keeps its state in SQLite. Stopped or killed at any
time, it re-attaches to every board when started again on the same data directory.
"""

import ipaddress
import json
import os
import secrets
import socket
import sys
import time

from ..errors import InputError

NAME = "lab"
HELP = "run the lab service: every board of this host, a web page and an HTTP API"
DEFAULT_PORT = 8470
TOKEN_ENV = "CELLBENCH_LAB_TOKEN"


def add_arguments(parser):
    parser.add_argument("--data", required=True, help="data directory (database, logs by cell "
                        "and date, simulated boards)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                        "127.0.0.1; anything else needs the token for requests that change something)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    parser.add_argument("--sim", type=int, default=0, metavar="N", help="make sure the lab has "
                        "at least N simulated channels (new ones hold --sim-cell)")
    parser.add_argument("--sim-cell", default="lto-li-coin", help="cell model (models/ name or "
                        "file) of the simulated channels --sim adds (default lto-li-coin)")
    parser.add_argument("--sim-speed", type=float, default=1.0, help="virtual seconds per real "
                        "second of the simulated boards the lab starts (default 1: real time)")
    parser.add_argument("--no-usb", action="store_true", help="do not look for RP2040 boards on USB")


def is_local(host):
    """True for a loopback address or name (only this machine can connect)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_for(args, layout):
    """The API token: $CELLBENCH_LAB_TOKEN, else (beyond localhost) <data>/token, made once
    with 32 random bytes and mode 0600. None on localhost without the variable."""
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    if is_local(args.host):
        return None
    path = layout.token
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def check_arguments(args):
    if not 0 < args.port < 65536:
        raise InputError(f"port: must be 1-65535, got {args.port}")
    if args.sim < 0 or args.sim > 256:
        raise InputError(f"sim: must be 0-256, got {args.sim}")
    if not args.sim_speed > 0:
        raise InputError(f"sim_speed: must be > 0, got {args.sim_speed}")
    if args.sim:
        from ..lab.service import cell_path

        cell_path(args.sim_cell, "sim_cell")
    with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args.host, args.port))
        except OSError as exc:
            raise InputError(f"port: cannot listen on {args.host}:{args.port}: {exc.strerror}") from None


def run(args):
    check_arguments(args)
    from aiohttp import web

    from ..lab.api import make_app
    from ..lab.service import Lab

    lab = Lab(args.data, sim_speed=args.sim_speed, usb=not args.no_usb)
    token = token_for(args, lab.layout)
    have = sum(1 for r in lab.db.channels() if r["kind"] == "sim")
    app = make_app(lab, token)
    url = f"http://{args.host if ':' not in args.host else f'[{args.host}]'}:{args.port}/"

    async def started(app):
        lab.start()
        for _ in range(have, args.sim):
            lab.add_sim_channel({"cell": args.sim_cell})
        info = {"pid": os.getpid(), "url": url, "started_unix_s": time.time(),
                "token_required": bool(token)}
        (lab.layout.root / "service.json").write_text(json.dumps(info))
        print(f"cellbench lab: {url} (data {lab.layout.root}, {len(lab.channels)} channels"
              + (f"; token in {lab.layout.token if not os.environ.get(TOKEN_ENV) else '$' + TOKEN_ENV}"
                 if token else "") + ")", file=sys.stderr, flush=True)

    async def stopped(app):
        lab.close()

    app.on_startup.append(started)
    app.on_cleanup.append(stopped)
    # Open event streams never end by themselves: shutting down does not wait for them.
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None,
                shutdown_timeout=1.0)
    return 0
