"""A detached simulated board (cellbench.sim.detached) whose run waits for a host, PAUSEd
or with its ring full (FULL), waits on its port instead of spinning a core: its virtual
clock then runs at most about IDLE_SPEEDUP times real time (sim/mpy/select.py), as an idle
board's does, where a busy-waiting board's ran as fast as the CPU allowed (thousands of
times real time). The bound holds however loaded the machine is (load only slows the
board further), so this is no timing assertion; and the clock still goes on.
"""

import contextlib
import json
import time

import pytest

from cellbench.link import Link
from cellbench.paths import MODELS, ROOT
from polling import wait_for

needs_sim = pytest.mark.hil  # the firmware on the simulated board (tests/conftest.py)

CELL = MODELS / "lto-li-coin.json"
IDLE_SPEEDUP = 100  # sim/mpy/select.py: virtual ms per real ms of a board that waits
TICK_MS = 1000
# A 1 s tick's wait is polled for int(wait / IDLE_SPEEDUP) real ms, so truncation lets the
# clock run up to ~10 % faster than IDLE_SPEEDUP; twice it is far below a busy loop's rate.
MAX_RATE = 2 * IDLE_SPEEDUP
WAIT_VIRTUAL_MS = 60_000  # virtual time watched while the board waits
WAITING = ("PAUSED", "FULL")  # a run that waits for a command (controller.py)


def _select_speedup():
    text = (ROOT / "host" / "cellbench" / "sim" / "mpy" / "select.py").read_text()
    return int(text.split("IDLE_SPEEDUP = ", 1)[1].split()[0])


@contextlib.contextmanager
def detached_board(tmp_path):
    from cellbench.sim import detached

    board_dir = tmp_path / "board"
    detached.spawn(CELL, board_dir, seed=3)
    transport = detached.DetachedTransport(board_dir, timeout_s=60.0)
    try:
        yield Link(transport, reply_timeout_s=60.0)
    finally:
        transport.close()
        detached.shutdown(board_dir)


def _clock_rate(link):
    """Virtual ms per real ms of the board's run clock (STATUS t_ms) over WAIT_VIRTUAL_MS
    of virtual time while the run waits (WAITING); the real interval brackets both STATUS
    replies, so this is an upper bound on the rate."""
    t0 = time.monotonic()
    first = link.command("STATUS")
    assert first["state"] in WAITING, first
    last = wait_for(lambda: link.command("STATUS"), f"{WAIT_VIRTUAL_MS} ms of board time",
                    until=lambda s: s["t_ms"] >= first["t_ms"] + WAIT_VIRTUAL_MS)
    real_ms = (time.monotonic() - t0) * 1000
    # Nothing but a command makes a waiting run go on: it waited all along.
    assert last["state"] in WAITING and last["fault"] == 0, last
    # One tick of slack: t_ms moves in whole ticks and may stand one tick behind the clock.
    return (last["t_ms"] - first["t_ms"] - TICK_MS) / real_ms


@needs_sim
def test_a_paused_or_full_detached_board_waits_on_its_port(tmp_path):
    assert _select_speedup() == IDLE_SPEEDUP
    model = json.loads(CELL.read_text())
    i_nA = int(round(model["capacity_Ah"] * 1e9 / 20))  # C/20: no step end while we watch
    table = {"v": 1, "tick_ms": TICK_MS, "record": {"dt_ms": TICK_MS},  # a record per tick
             "steps": [["CC", -i_nA, 0, int(model["window_V"][0] * 1e6)], ["OCV", 600_000]]}
    with detached_board(tmp_path) as link:
        link.command("LOAD", json.dumps(table))
        link.command("START")
        # Nobody ACKs: the running board (unpaced, as fast as it goes) fills its ring.
        wait_for(lambda: link.command("STATUS"), "the ring to fill (FULL)",
                 until=lambda s: s["state"] == "FULL")
        assert _clock_rate(link) <= MAX_RATE
        # ACK everything (the link files ACK replies as housekeeping: no command() here);
        # the run goes on...
        link.send("ACK %d" % (link.command("STATUS")["seq_next"] - 1))
        # ... and is PAUSEd (or, if its ring filled again before the PAUSE came, FULL and
        # then PAUSEd: a paused run keeps recording, so it turns FULL again at once).
        link.command("PAUSE")
        assert _clock_rate(link) <= MAX_RATE
        assert link.command("STOP")["state"] == "STOPPED"
