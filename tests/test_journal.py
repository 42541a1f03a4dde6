"""The run journal (firmware/journal.py): torn writes never lose the last good entry, and
a run interrupted by a reset continues on RECOVER without losing or double-counting a
cycle or any charge, on the simulated board killed with SIGKILL (a power cut) mid-run.
"""

import json
import os
import sys

import pytest
from hypothesis import given, settings, strategies as st

from cellbench import fw, sim

sys.path.insert(0, os.path.dirname(__file__))
controller = fw.module("controller")
frame = fw.module("frame")
journal = fw.module("journal")
record = fw.module("record")
link = fw.module("link")

from test_hil import MODEL, Link  # noqa: E402
from test_steps import FakeBoard, FakeCell, Firmware  # noqa: E402

I_nA = 150_000
TABLE = {"v": 1, "tick_ms": 1000, "record": {"dt_ms": 10_000, "dv_uV": 5_000},
         "steps": [["CC", -I_nA, 0, 1_200_000], ["OCV", 300_000],
                   ["CC", I_nA, 0, 2_300_000], ["OCV", 300_000], ["LOOP", 0, 1]]}


# ---------------------------------------------------------------- storage

def _entry(j, base):
    for k in range(journal.N_DATA):
        j.words[k] = base + k
    j.words[journal.W_ACTIVE] = 1


def test_entries_alternate_slots_and_the_newest_is_loaded(tmp_path):
    j = journal.Journal(str(tmp_path / "j.bin"))
    for n in range(5):
        _entry(j, 1000 * n)
        assert j.save()
    r = journal.Journal(str(tmp_path / "j.bin"))
    assert r.load() and r.gen == 5 and r.words[journal.W_T_LO] == 4000 + journal.W_T_LO
    assert (tmp_path / "j.bin").stat().st_size == 2 * journal.SLOT_BYTES


def test_missing_or_empty_journal_has_no_entry(tmp_path):
    assert not journal.Journal(str(tmp_path / "none.bin")).load()
    (tmp_path / "empty.bin").write_bytes(b"")
    assert not journal.Journal(str(tmp_path / "empty.bin")).load()


@settings(max_examples=300, deadline=None)
@given(n_saves=st.integers(1, 6), cut=st.integers(0, journal.SLOT_BYTES - 1),
       flips=st.lists(st.tuples(st.integers(0, journal.SLOT_BYTES - 1), st.integers(1, 255)),
                      min_size=1, max_size=3, unique_by=lambda f: f[0]),
       mode=st.sampled_from(["truncate", "corrupt"]))
def test_a_torn_last_write_falls_back_to_the_previous_entry(tmp_path_factory, n_saves, cut, flips, mode):
    path = tmp_path_factory.mktemp("j") / "j.bin"
    j = journal.Journal(str(path))
    for n in range(n_saves):
        _entry(j, 1000 * n)
        j.save()
    data = bytearray(path.read_bytes())
    slot = (n_saves & 1) * journal.SLOT_BYTES  # where the newest entry went
    if mode == "truncate" and slot:  # the newest slot is the file's end: a short write
        data = data[:slot + cut]
    else:  # part of the newest slot did not make it (any bytes wrong)
        for off, x in flips:
            data[slot + off] ^= x
    path.write_bytes(bytes(data))
    r = journal.Journal(str(path))
    if n_saves == 1:
        assert not r.load()
    else:
        assert r.load() and r.gen == n_saves - 1
        assert r.words[journal.W_T_LO] == 1000 * (n_saves - 2) + journal.W_T_LO


# ---------------------------------------------------------------- controller (CPython)

def _controller(path, cell):
    b = FakeBoard(cell)
    b.sample()
    return b, Firmware(b, capacity=4000, journal=journal.Journal(str(path)))


def _cmd(ctl, text):
    ctl.feed(frame.encode(text))
    out = [frame.decode(x) for x in ctl.output(burst=100000)]
    return [x for x in out if x.startswith(("OK", "ERR"))][-1], out


def _run(b, ctl, ticks):
    lines = []
    for _ in range(ticks):
        b.elapse(1000)
        ctl.tick(1000)
        lines += [frame.decode(x) for x in ctl.output(burst=100000)]
        if ctl.state != controller.RUNNING:
            break
    return [dict(zip(["seq"] + list(record.FIELDS), map(int, x.split()[1:])))
            for x in lines if x.startswith("R ")]


FAKE_TABLE = {"v": 1, "tick_ms": 1000,
              "steps": [["CC", -300_000, 20_000, 0], ["OCV", 15_000], ["CC", 300_000, 20_000, 0],
                        ["OCV", 15_000], ["LOOP", 0, 2]]}


def test_recover_continues_where_the_journal_left_off(tmp_path):
    """A reset at any tick: the recovered run ends with the cycles and step sequence of an
    uninterrupted one, and its counters are the journal's plus what it moved since."""
    ref_b, ref = _controller(tmp_path / "ref.bin", FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0))
    _cmd(ref, "LOAD " + json.dumps(FAKE_TABLE))
    _cmd(ref, "START")
    full = _run(ref_b, ref, 1000)
    assert ref.state == controller.DONE and full[-1]["cycle"] == 3
    for kill_at in (5, 21, 30, 36, 100, 140):
        path = tmp_path / ("k%d.bin" % kill_at)
        b, ctl = _controller(path, FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0))
        _cmd(ctl, "LOAD " + json.dumps(FAKE_TABLE))
        _cmd(ctl, "START")
        before = _run(b, ctl, kill_at)
        # the reset: a new controller on the same journal file, the board current off
        b2, ctl2 = _controller(path, b.cell)
        boot = [frame.decode(x) for x in ctl2.output()]
        assert boot[0].split()[2] == "INTERRUPTED"
        info = json.loads(boot[0].split(" ", 3)[3])
        assert b2.applied_nA() == 0 and ctl2.state == controller.IDLE
        assert _cmd(ctl2, "RECOVER")[0].startswith("ERR RECOVER table")
        _cmd(ctl2, "LOAD " + json.dumps(FAKE_TABLE))
        ok, out = _cmd(ctl2, "RECOVER")
        assert ok.startswith("OK RECOVER"), ok
        assert ctl2.ring.head > before[-1]["seq"]  # seqs never reused after a reset
        after = _run(b2, ctl2, 1000)
        assert ctl2.state == controller.DONE
        assert after[0]["step_no"] == info["step_no"] and after[0]["cycle"] == info["cycle"]
        assert after[-1]["cycle"] == full[-1]["cycle"]  # no cycle lost or counted twice
        steps_after = [r["step_no"] for r in after if r["step_index"] == 0]
        steps_full = [r["step_no"] for r in full if r["step_index"] == 0]
        assert steps_full[-len(steps_after):] == steps_after
        assert after[0]["q_dch_nAh"] >= info["q_dch_nAh"]


class Learner:
    """An estimator whose slow states follow a known law: from reset() on, each step()
    takes 1 nAh off the capacity and adds 2 mohm to the resistance; set_slow() puts
    them (and their std) where it is told, as ekf.Ekf.set_slow does."""

    CAP0_nAh, R0_mohm = 400_000, 33_000

    def __init__(self, model):
        self.reset()

    def reset(self, soc=None, v_uV=None, i_nA=0):
        self.soc_ppm, self.std_ppm = 500_000, 10_000
        self.cap_nAh, self.cap_std_nAh = self.CAP0_nAh, 4_000
        self.r_mohm, self.r_std_mohm = self.R0_mohm, 3_000

    def set_slow(self, cap_nAh, cap_std_nAh, r_mohm, r_std_mohm):
        self.cap_nAh, self.cap_std_nAh, self.r_mohm, self.r_std_mohm = cap_nAh, cap_std_nAh, r_mohm, r_std_mohm

    def step(self, i_nA, v_uV, dt_ms):
        self.cap_nAh -= 1
        self.r_mohm += 2
        self.cap_std_nAh = self.r_std_mohm = 1_000


def test_recover_keeps_the_learned_capacity_and_resistance(tmp_path, monkeypatch):
    """A reset does not throw away what the estimator learned: after RECOVER its capacity
    and resistance go on from where they were at the journal's save (the law of Learner
    at the journaled run time), not from the model's fresh values."""
    monkeypatch.setattr(link, "estimator_class", lambda: Learner)
    path = tmp_path / "j.bin"
    b, ctl = _controller(path, FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0))
    _cmd(ctl, 'MODEL {"capacity_Ah": 4e-4}')
    _cmd(ctl, "LOAD " + json.dumps(FAKE_TABLE))
    _cmd(ctl, "START")
    before = _run(b, ctl, 100)
    assert before[-1]["cap_nAh"] == Learner.CAP0_nAh - 100 and before[-1]["r_std_mohm"] == 1_000
    b2, ctl2 = _controller(path, b.cell)
    info = json.loads([frame.decode(x) for x in ctl2.output()][0].split(" ", 3)[3])
    _cmd(ctl2, 'MODEL {"capacity_Ah": 4e-4}')
    _cmd(ctl2, "LOAD " + json.dumps(FAKE_TABLE))
    assert _cmd(ctl2, "RECOVER")[0].startswith("OK RECOVER")
    after = _run(b2, ctl2, 1000)
    steps = info["t_ms"] // 1000  # one estimator step per 1 s tick up to the save
    assert 20 <= steps <= 100
    first = after[0]  # the first tick after RECOVER: one more step
    assert first["cap_nAh"] == Learner.CAP0_nAh - steps - 1
    assert first["r_mohm"] == Learner.R0_mohm + 2 * (steps + 1)
    caps = [r["cap_nAh"] for r in after]
    assert caps == sorted(caps, reverse=True) and caps[-1] < first["cap_nAh"]  # learning goes on


def test_a_finished_run_is_not_reported_interrupted(tmp_path):
    b, ctl = _controller(tmp_path / "j.bin", FakeCell(v0_uV=1_500_000, slope_uV_nAh=20.0))
    _cmd(ctl, "LOAD " + json.dumps(FAKE_TABLE))
    _cmd(ctl, "START")
    _run(b, ctl, 10)
    _cmd(ctl, "STOP")
    b2, ctl2 = _controller(tmp_path / "j.bin", b.cell)
    assert ctl2.interrupted is None and ctl2.output() == []
    assert _cmd(ctl2, "RECOVER")[0].startswith("ERR RECOVER journal")


# ---------------------------------------------------------------- HIL: SIGKILL mid-run

def _boot(tmp_path, work, cell):
    board = sim.start_board(cell, board=tmp_path / "board.json", calibration="ideal",
                            workdir=work, seed=7, soc0=0.9)
    return board, Link(board)


@pytest.mark.hil
def test_power_cut_mid_run_then_recover_matches_the_plant(tmp_path):
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(MODEL))
    cfg = json.loads(sim.board_path("sim").read_text())
    cfg["sim"]["truth_dt_s"] = 1.0
    (tmp_path / "board.json").write_text(json.dumps(cfg))
    work = tmp_path / "work"
    table = json.dumps(TABLE)
    board, lk = _boot(tmp_path, work, cell)
    try:
        assert lk.cmd("LOAD " + table).startswith("OK")
        assert lk.cmd("START").startswith("OK")
        # run into the rest after the first discharge, then cut the power
        lk.read_until(lambda: lk.records and lk.records[-1]["step_count"] == 2
                      and lk.records[-1]["step_index"] >= 20, "a record 20 ticks into the rest")
        board.proc.kill()  # SIGKILL: no clean-up, whatever was in RAM is gone
        board.proc.wait()
    finally:
        board.close()
    before = list(lk.records)
    assert (work / "flash" / "journal.bin").exists()

    board, lk = _boot(tmp_path, work, cell)  # same flash dir and plant state
    try:
        boot = lk._line()
        assert boot.split()[2] == "INTERRUPTED", boot
        info = json.loads(boot.split(" ", 3)[3])
        assert info["step_no"] == 1 and info["cycle"] == 1
        ident = json.loads(lk.cmd("ID")[len("OK ID "):])
        assert ident["interrupted"] == info
        status = json.loads(lk.cmd("STATUS")[len("OK STATUS "):])
        assert status["state"] == "IDLE" and status["interrupted"] == info
        assert lk.cmd("RECOVER").startswith("ERR RECOVER table")
        assert lk.cmd("START").startswith("ERR START state")  # nothing loaded: refused
        assert lk.cmd("LOAD " + table).startswith("OK")
        ok = lk.cmd("RECOVER")
        assert ok.startswith("OK RECOVER"), ok
        lk.records.clear()
        end = lk.run_to_end()
    finally:
        board.close()
    truth = sim.read_truth(board.truth_path)
    after = lk.records
    assert end == "END"
    assert after[0]["seq"] > before[-1]["seq"]
    firsts = [r for r in after if r["step_index"] == 0]
    # the rest step again (timer restarted), then the rest of the protocol: one more cycle
    assert [r["step_no"] for r in firsts] == [1, 2, 3, 0, 1, 2, 3]
    assert [r["cycle"] for r in firsts] == [1, 1, 1, 2, 2, 2, 2]
    assert firsts[0]["step_count"] == info["step_count"] + 1
    last = after[-1]
    assert truth["q_dch_Ah"][-1] > 1.5 * 0.5e-4 and truth["q_chg_Ah"][-1] > 0.5e-4
    assert last["q_chg_nAh"] * 1e-9 == pytest.approx(truth["q_chg_Ah"][-1], rel=1e-3)
    assert last["q_dch_nAh"] * 1e-9 == pytest.approx(truth["q_dch_Ah"][-1], rel=1e-3)
