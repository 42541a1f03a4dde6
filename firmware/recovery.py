"""Continuing a run that a reset interrupted: the journal's run noted at boot, RECOVER.

The journal (firmware/journal.py) keeps the run's position, counters and estimator state
in flash. At boot, when it holds an unfinished run, note_interrupted() reports it (STATUS
and ID "interrupted", the INTERRUPTED event) and moves the ring's seqs past any the run
may have sent; on RECOVER, with the same step table loaded again, recover() continues it.
Both run rarely, so the board does not keep this module: controller._once imports it for
the call and drops it after (its bytecode goes back to the ring).

Units: uV, nA, ms, nAh, ppm, mohm; all integers (journal words).
"""

import journal
import record
import runsetup  # START's estimator reset and run (dropped with this module)
import steps
from controller import CommandError
from runjournal import SEQ_STRIDE

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_SEQ_SLACK = const(16)  # seqs go on from the journal's seq + SEQ_STRIDE + this


def note_interrupted(ctl):
    """At boot, the journal of ctl (loaded, its run active): ctl.interrupted summarises
    the run, ctl.boot_seq is the seq of its INTERRUPTED event, and an empty ring goes on
    past every seq the run may have used (the journal saves at least every SEQ_STRIDE)."""
    w = ctl.journal.words
    e = journal.W_ENGINE
    seq = w[journal.W_SEQ] + SEQ_STRIDE + _SEQ_SLACK
    ctl.interrupted = {"step_no": w[e + journal.E_STEP_NO],
                       "step_count": w[e + journal.E_STEP_COUNT],
                       "cycle": w[e + journal.E_CYCLE],
                       "t_ms": journal.t_ms(w), "seq": w[journal.W_SEQ],
                       "q_chg_nAh": w[e + journal.E_ACC + steps.Q_CHG],
                       "q_dch_nAh": w[e + journal.E_ACC + steps.Q_DCH],
                       "soc_ppm": w[journal.W_SOC], "table_crc": w[journal.W_TABLE]}
    if ctl.ring.count() == 0:
        ctl.ring = record.Ring(ctl.ring.cap, seq + 1)
    ctl.boot_seq = seq  # the boot event is written once, not held in the ring


def prepare(ctl):
    """RECOVER on ctl before the ring is made (controller.Controller._begin): refused
    (CommandError, nothing changed) if no run was noted at boot, the loaded table is not
    the run's (checksum) or the journal does not fit it; the estimator reset at the
    journaled SoC is returned (None without one)."""
    ctl.check_idle()
    if ctl.interrupted is None:
        raise CommandError("journal", "no interrupted run to recover")
    w = ctl.journal.words
    if ctl.table is None or ctl.table_crc != w[journal.W_TABLE]:
        raise CommandError("table", "LOAD the interrupted run's step table (the same JSON) first")
    if not _fits(ctl.engine, w, journal.W_ENGINE):
        raise CommandError("journal", "does not fit the loaded table")
    soc = w[journal.W_SOC]
    return runsetup.reset_estimator(ctl, soc / 1000000 if soc >= 0 else None)


def begin(ctl, est):
    """RECOVER on ctl once the ring is made: the run goes on from its journaled position,
    time, counters, fault bits and estimate, with the estimator est (prepare's)."""
    w = ctl.journal.words
    ctl.est = est
    ctl.soc_ppm = w[journal.W_SOC] if est is not None else -1
    ctl.std_ppm = w[journal.W_STD] if est is not None else -1
    ctl.no_slow()
    if est is not None:
        _restore_slow(ctl, est, w)
    ctl.fault = w[journal.W_FAULT]
    ctl.t_ms = journal.t_ms(w)
    _restore_engine(ctl.engine, w, journal.W_ENGINE)  # the current comes on here
    seq = runsetup.run(ctl, record.EV_RECOVER)
    e = ctl.engine
    return {"seq": seq, "tick_ms": ctl.tick_ms, "step_no": e.step_no,
            "step_count": e.step_count, "cycle": e.cycle}


def _fits(engine, words, base):
    """True if journal words saved by runjournal.save can continue the table
    loaded into engine (a steps.Engine): a step that is not a LOOP, the same LOOP count."""
    loop = steps.KINDS["LOOP"]
    no = words[base + journal.E_STEP_NO]
    n_loops = 0
    for s in engine.steps:
        if s[0] == loop:
            n_loops += 1
    return 0 <= no < len(engine.steps) and engine.steps[no][0] != loop \
        and words[base + journal.E_N_LOOPS] == n_loops


def _restore_engine(engine, words, base):
    """Continue a journaled run on engine (its table loaded, _fits checked): counters and
    loop counts from words[base:], then re-enter the journaled step with its step time
    and step charge restarted (the engine's own _clear and _enter, as LOAD and advance).

    The re-entered step counts as a new step (step_count + 1: its time restarts) but
    not as a new cycle: its sign is the journal's last sign, so the engine's cycle count
    leaves the cycle alone.
    """
    loop = steps.KINDS["LOOP"]
    no = words[base + journal.E_STEP_NO]
    engine._clear()
    engine.step_count = words[base + journal.E_STEP_COUNT]
    engine.cycle = words[base + journal.E_CYCLE]
    engine.first_sign = words[base + journal.E_FIRST_SIGN]
    engine.last_sign = words[base + journal.E_LAST_SIGN]
    engine.r_ohm = words[base + journal.E_R_OHM]
    engine.i_cmd_nA = words[base + journal.E_I_CMD]  # a CV step restarts from it
    for k in range(steps.N_ACC):
        engine.acc[k] = words[base + journal.E_ACC + k]
    n = 0
    for k in range(len(engine.steps)):
        if engine.steps[k][0] == loop:
            engine.loops[k] = words[base + journal.E_LOOPS + n]
            n += 1
    engine._enter(no)


def _restore_slow(ctl, est, w):
    """The capacity and resistance the run had learned, from the journal words w, back
    into the estimator that reset() started afresh (what a reset must not lose: tens of
    cycles of learning). The journaled values are what the records go on with until the
    first tick; -1 words (a state that was off) leave the estimator's own."""
    cap, cap_std = w[journal.W_CAP], w[journal.W_CAP_STD]
    r, r_std = w[journal.W_R], w[journal.W_R_STD]
    setter = getattr(est, "set_slow", None)
    if setter is None or (cap < 0 and r < 0):
        return
    try:
        setter(cap, cap_std, r, r_std)
    except Exception as ex:
        ctl.error = "estimator: " + repr(ex)[:60]
        return
    ctl.copy_slow(est)
