"""A client of a lab's HTTP API (standard library only), and a way to start a lab.

Used by the tests and ``make bench`` (which drive a lab only through its API), and the
building block of a lab-wide view over several hosts (docs/lab.md): each host's lab is
one :class:`LabClient`.
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import ROOT


class LabClient:
    """``url``: the lab's base URL (``http://127.0.0.1:8470``); ``token``: sent on POST."""

    def __init__(self, url, token=None, timeout_s=30.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method, path, body=None, raw=None):
        """(status, parsed JSON or bytes) of one request; never raises on an HTTP status."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token and method != "GET":
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                status, payload, kind = resp.status, resp.read(), resp.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            status, payload, kind = exc.code, exc.read(), exc.headers.get_content_type()
        return status, json.loads(payload) if kind == "application/json" else payload

    def get(self, path):
        status, data = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data!r}")
        return data

    def post(self, path, body=None):
        status, data = self.request("POST", path, {} if body is None else body)
        if status not in (200, 201, 202):
            raise RuntimeError(f"POST {path}: {status} {data!r}")
        return data

    def events(self, channel=None):
        """Server-sent events as dicts, as they come (a generator over one connection)."""
        path = "/api/events" + (f"?channel={channel}" if channel else "")
        with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as resp:
            for line in resp:
                if line.startswith(b"data: "):
                    yield json.loads(line[6:])


def start(data_dir, port, sim_speed=1.0, host="127.0.0.1", token=None, log=None):
    """Start ``cellbench lab`` as a process of its own; (Popen, LabClient) once it answers.

    ``log``: a file for its output (default: discarded). The lab's boards outlive it:
    stop them with cellbench.sim.detached.shutdown on each of <data>/boards/*.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "host"), env.get("PYTHONPATH")]))
    if token:
        env["CELLBENCH_LAB_TOKEN"] = token
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "cellbench.cli", "lab", "--data", str(data_dir),
                             "--host", host, "--port", str(port), "--sim-speed", str(sim_speed),
                             "--no-usb"], stdout=out, stderr=out, env=env, cwd=str(ROOT))
    client = LabClient(f"http://{host}:{port}", token)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cellbench lab exited with {proc.returncode}")
        try:
            client.get("/api/lab")
            return proc, client
        except (OSError, RuntimeError):
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("cellbench lab did not answer within 60 s")


def stop_boards(data_dir):
    """Shut down every simulated board a lab started in ``data_dir``."""
    from concurrent.futures import ThreadPoolExecutor

    from ..sim import detached

    boards = sorted((Path(data_dir) / "boards").glob("*"))
    with ThreadPoolExecutor(max_workers=16) as pool:  # each waits for its board to end
        list(pool.map(detached.shutdown, boards))
