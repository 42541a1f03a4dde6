"""A simulated board that outlives its host, as a real board on USB does.

Choice (issue 6): a small relay process owns the simulated board (the MicroPython
process of :func:`cellbench.sim.start_board`) and offers its serial line on a Unix
socket in the board directory. The relay runs in its own session (``start_new_session``),
so killing the host, even with SIGKILL, leaves board and relay running; a later host
reattaches by connecting to the socket (:class:`DetachedTransport`).

Why a relay rather than a pty or FIFOs: the relay always drains the board's stdout, so
the firmware never blocks on a write and its virtual clock keeps running with no host,
exactly like a real RP2040 whose USB CDC drops output while no host has the port open.
Nothing is lost by that: the board holds every record in its ring until a host ACKs it,
and the reattached host fetches them with ``SEND`` (docs/link.md). With no ACKs the ring
fills, the board pauses the run (FULL, current off) and its limits stay enforced.
A board that waits like that, or PAUSEd, for a host that may not come for minutes does not
spin a core meanwhile: the relay starts it with CELLBENCH_SIM_WAIT_PACED, so it waits on
its port at a hundred times real time, as an idle board does (sim/mpy/select.py).

The relay forwards whole lines only, in both directions: a host killed mid-line leaves
no fragment that would corrupt the next host's first command, and a new host never
receives the tail of a line that started before it connected. One host at a time: a new
connection replaces the old one. While a host is connected but does not read, up to
CLIENT_BUFFER bytes wait for it, then lines are dropped (the link re-sends them).

Files in the board directory: ``relay.json`` (pids, socket path, flash dir, truth CSV),
``relay.log`` (the relay's stderr), ``sim/`` (the simulator's work dir: flash, truth).
The relay exits when the board process ends, or on SIGTERM (:func:`shutdown`), after
closing the board's stdin so the firmware switches the current off. With ``reboot``
(``spawn(..., reboot=True)``, ``--reboot``) a board process killed by a signal (SIGKILL
stands for a power cut or a watchdog reset) is started again on the same flash directory
and plant state, as a real board boots again by itself: it then finds its run journal and
reports the interrupted run (docs/link.md "Resets and the journal"). The connected host
stays connected across the reboot; ``relay.json`` gets the new ``board_pid`` and counts
``reboots``. A board that exits by itself (an error, or its stdin closed) is not restarted.
"""

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import InputError
from ..paths import ROOT
from ..transport import Transport

INFO = "relay.json"
CLIENT_BUFFER = 4 << 20   # bytes queued for a connected host that is not reading
SOCKET_PATH_MAX = 100      # AF_UNIX paths are limited to ~107 bytes
START_TIMEOUT_S = 60.0     # mpy-cross and the firmware's boot, on a loaded machine


# ---------------------------------------------------------------- host side


def info(board_dir):
    """The relay's ``relay.json`` as a dict; InputError if no detached board is there."""
    path = Path(board_dir) / INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"board_dir: no detached simulated board in {board_dir}") from None


def alive(board_dir):
    """True while the relay of ``board_dir`` runs (and so its board)."""
    try:
        meta = info(board_dir)
        pid = int(meta["pid"])
    except (InputError, KeyError, ValueError):
        return False
    if "exit" in meta:  # the relay said goodbye (its pid may since belong to another process)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True  # no /proc: trust kill(0)


def spawn(cell, board_dir, board="sim", seed=0, calibration=None, heap_kb=None, reboot=False,
          env=None):
    """Start a detached simulated board holding ``cell`` in ``board_dir``; its info dict.

    ``env``: more environment for the relay and the board (e.g. CELLBENCH_SIM_SPEED).

    Returns once the board answers on its socket. InputError if ``board_dir`` already has
    a live board or the relay does not come up (its log's last line is in the message).
    """
    d = Path(board_dir).resolve()
    if alive(d):
        raise InputError(f"board_dir: {d} already has a running board (pid {info(d)['pid']})")
    d.mkdir(parents=True, exist_ok=True)
    try:
        (d / INFO).unlink()
    except FileNotFoundError:
        pass
    cmd = [sys.executable, "-m", "cellbench.sim.detached", "serve", "--dir", str(d),
           "--cell", str(Path(cell).resolve()), "--board", str(board), "--seed", str(int(seed))]
    if calibration is not None:
        cmd += ["--calibration", str(calibration)]
    if heap_kb is not None:
        cmd += ["--heap-kb", str(int(heap_kb))]
    if reboot:
        cmd += ["--reboot"]
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "host"), env.get("PYTHONPATH")]))
    with open(d / "relay.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=log, start_new_session=True, env=env, cwd=str(d))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if (d / INFO).is_file():
            return info(d)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    tail = (d / "relay.log").read_text(errors="replace").strip().splitlines()
    raise InputError(f"board_dir: the simulated board did not start"
                     + (f": {tail[-1]}" if tail else ""))


def shutdown(board_dir, timeout_s=15.0):
    """Stop a detached board (current off, processes end); True if it had been running."""
    if not alive(board_dir):
        return False
    pid = int(info(board_dir)["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive(board_dir):
        time.sleep(0.05)
    if alive(board_dir):
        os.kill(pid, signal.SIGKILL)
    return True


class DetachedTransport(Transport):
    """The serial line of a detached simulated board, over its relay's Unix socket.

    The Transport interface, as SimBoard and SerialTransport: ``write(data)``, ``readline(timeout_s)``
    (a line with its newline; TimeoutError when none came in time; b"" once the board has
    ended, after which ``eof`` is true), ``close()`` (detaches; the board keeps running).
    """

    def __init__(self, board_dir, timeout_s=300.0):
        self.board_dir = Path(board_dir)
        meta = info(board_dir)
        self.flash_dir = Path(meta["flash_dir"])
        self.truth_path = Path(meta["truth_path"])
        self.timeout_s = timeout_s
        self.eof = False
        self._buf = b""
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(meta["socket"])
        except OSError as exc:
            self._sock.close()
            raise InputError(f"board_dir: cannot connect to the board in {board_dir}: "
                             f"{exc.strerror or exc}") from None

    def write(self, data: bytes):
        self._sock.sendall(data)

    def readline(self, timeout_s=None) -> bytes:
        limit = self.timeout_s if timeout_s is None else timeout_s
        while b"\n" not in self._buf:
            if self.eof:
                out, self._buf = self._buf, b""
                return out
            ready, _, _ = select.select([self._sock], [], [], limit)
            if not ready:
                raise TimeoutError(f"detached board: no line in {limit} s")
            chunk = self._sock.recv(65536)
            if not chunk:
                self.eof = True
                continue
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def stderr_text(self) -> str:
        try:
            return (self.flash_dir / "stderr.txt").read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        """Detach from the board (it keeps running); safe to call twice."""
        self._sock.close()


# ---------------------------------------------------------------- the relay process


def _socket_path(d):
    path = str(d / "board.sock")
    if len(path) <= SOCKET_PATH_MAX:
        return path
    return str(Path(tempfile.mkdtemp(prefix="cellbench-")) / "board.sock")


def _lines(buf):
    """(complete lines incl. newlines, rest) of a byte buffer."""
    cut = buf.rfind(b"\n") + 1
    return buf[:cut], buf[cut:]


class Relay:
    """Moves whole lines between the board process and at most one host connection."""

    def __init__(self, board, server, restart=None):
        self.board = board
        self.restart = restart   # callable -> a new board after a reset, or None
        self.server = server
        self.client = None
        self.from_board = b""    # partial line from the board
        self.to_client = b""     # whole lines waiting for the host
        self.from_client = b""   # partial line from the host
        self.dropped_lines = 0   # board lines no host took (the ring still holds records)
        self.stopping = False

    def run(self):
        while not self.stopping:
            self._serve_board()
            if self.stopping or not self._rebooted():
                return

    def _rebooted(self):
        """After the board process ended: start it again if it was killed (a reset)."""
        code = self.board.proc.wait()
        if self.restart is None or code >= 0:
            return False
        self.board.close()
        self.from_board = b""  # the torn last line of the dead process
        self.board = self.restart()
        return True

    def _serve_board(self):
        out_fd = self.board.proc.stdout.fileno()
        while not self.stopping:
            reads = [out_fd, self.server] + ([self.client] if self.client else [])
            writes = [self.client] if self.client and self.to_client else []
            try:
                readable, writable, _ = select.select(reads, writes, [], 1.0)
            except InterruptedError:
                continue
            if out_fd in readable and not self._from_board(out_fd):
                return
            if self.server in readable:
                self._accept()
            if self.client is not None and self.client in readable:
                self._from_host()
            if self.client is not None and self.client in writable:
                self._to_host()

    def _from_board(self, fd):
        chunk = os.read(fd, 65536)
        if not chunk:
            return False  # the board process ended
        lines, self.from_board = _lines(self.from_board + chunk)
        if self.client is None or len(self.to_client) + len(lines) > CLIENT_BUFFER:
            self.dropped_lines += lines.count(b"\n")
        else:
            self.to_client += lines
        return True

    def _accept(self):
        conn, _ = self.server.accept()
        self._drop_client()
        conn.setblocking(False)
        self.client = conn

    def _drop_client(self):
        if self.client is not None:
            self.client.close()
        self.client, self.to_client, self.from_client = None, b"", b""

    def _from_host(self):
        try:
            chunk = self.client.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_client()  # the host went away; a partial line of its dies with it
            return
        lines, self.from_client = _lines(self.from_client + chunk)
        if lines:
            try:
                self.board.write(lines)
            except OSError:
                pass  # the board is dead or rebooting: the line is lost, as on a real one

    def _to_host(self):
        try:
            sent = self.client.send(self.to_client)
        except BlockingIOError:
            return
        except OSError:
            self._drop_client()
            return
        self.to_client = self.to_client[sent:]


def serve(argv=None):
    """The relay process: start the board, offer it on a socket until it ends."""
    from . import start_board

    ap = argparse.ArgumentParser(prog="cellbench.sim.detached")
    ap.add_argument("command", choices=["serve"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--cell", required=True)
    ap.add_argument("--board", default="sim")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration")
    ap.add_argument("--heap-kb", type=int)
    ap.add_argument("--reboot", action="store_true",
                    help="start the board again when its process is killed (a reset)")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    # A run that waits for a host (PAUSED, FULL) waits on the port, not in a busy loop; a
    # board paced by CELLBENCH_SIM_SPEED (the lab) is left as it is (sim/mpy/select.py).
    os.environ["CELLBENCH_SIM_WAIT_PACED"] = "1"

    def boot():
        return start_board(args.cell, board=args.board, calibration=args.calibration,
                           workdir=d / "sim", seed=args.seed, heap_kb=args.heap_kb)

    board = boot()
    path = _socket_path(d)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(2)
    meta = {}

    def reboot():
        new = boot()
        meta.update(board_pid=new.proc.pid, reboots=meta.get("reboots", 0) + 1)
        _write_info(d, meta)
        print(f"relay: board killed, booted again (pid {new.proc.pid})", file=sys.stderr)
        return new

    relay = Relay(board, server, restart=reboot if args.reboot else None)

    def stop(signum, frame):
        relay.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started it may go
    meta.update({"pid": os.getpid(), "board_pid": board.proc.pid, "socket": path,
                 "flash_dir": str(board.flash_dir), "truth_path": str(board.truth_path),
                 "cell": args.cell, "board": args.board, "seed": args.seed,
                 "calibration": args.calibration, "reboot": args.reboot})
    _write_info(d, meta)  # written last: its presence means "ready"
    try:
        relay.run()
    finally:
        relay._drop_client()
        server.close()
        code = relay.board.close()  # stdin closed: the firmware ends with the current off
        try:
            os.unlink(path)
        except OSError:
            pass
        _write_info(d, dict(meta, exit=code, dropped_lines=relay.dropped_lines))
        print(f"relay: board ended (exit {code}), {relay.dropped_lines} lines with no host",
              file=sys.stderr)
    return 0


def _write_info(d, meta):
    tmp = d / (INFO + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, d / INFO)


if __name__ == "__main__":
    sys.exit(serve())
