"""What of a run goes into the flash journal, and when (firmware/journal.py is the file).

save() fills the journal's words with the controller's part of the run (time, next seq,
estimate and slow states, fault bits, the step table's checksum) and the step engine's
position (step, counts, cycle signs, CV setpoint and resistance, accumulators, LOOP
counters) and writes them; due() rations those writes. firmware/recovery.py reads the
same words back after a reset (RECOVER). The rationing runs every tick of a run, so this
module stays loaded (small ints and attribute reads only until a write is due).

Units: ms, nAh, uWh, ppm, mohm, uV, nA; all integers (journal words).
"""

import journal
import steps

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


# Why these numbers, and the flash wear they give: firmware/journal.py.
JOURNAL_MS = const(300000)   # within a long step, save the position at least every 5 min
_GAP_MS = const(10000)       # never more often (a step boundary inside the gap waits)
SEQ_STRIDE = const(512)      # ... except every 512 seqs, so that a reset never reuses a seq
                             # (after one, seqs go on past the journal's: firmware/recovery.py)


def due(ctl):
    """True when ctl's running run (a controller.Controller with a journal) should be
    saved now: step boundaries (ctl.j_due) and the periodic save wait for the gap; the
    seq stride does not, so a reset can never make a seq be used twice."""
    since = ctl.t_ms - ctl.j_t_ms
    return ctl.ring.head - ctl.j_seq >= SEQ_STRIDE or \
        (since >= _GAP_MS and (ctl.j_due or since >= JOURNAL_MS))


def save(ctl, active):
    """Write ctl's run to its journal (nothing without a journal or a table); active: 1
    while the run goes on, 0 once it ended (nothing to recover)."""
    j = ctl.journal
    if j is None or ctl.table is None:
        return
    w = j.words
    t_ms = ctl.t_ms
    w[journal.W_ACTIVE] = active
    w[journal.W_TABLE] = ctl.table_crc
    w[journal.W_T_LO] = t_ms & 0x3FFFFFFF
    w[journal.W_T_HI] = t_ms >> 30
    w[journal.W_SEQ] = ctl.ring.head
    w[journal.W_SOC] = ctl.soc_ppm
    w[journal.W_STD] = ctl.std_ppm
    w[journal.W_CAP] = ctl.cap_nAh
    w[journal.W_CAP_STD] = ctl.cap_std_nAh
    w[journal.W_R] = ctl.r_mohm
    w[journal.W_R_STD] = ctl.r_std_mohm
    w[journal.W_FAULT] = ctl.fault
    if not _engine_words(ctl.engine, w, journal.W_ENGINE):
        w[journal.W_ACTIVE] = 0  # too many LOOPs to keep: the run cannot be recovered
        j.error = "journal: more than %d LOOP steps" % journal.MAX_LOOPS
    j.save()
    ctl.j_t_ms = t_ms
    ctl.j_seq = ctl.ring.head
    ctl.j_due = False


def _engine_words(engine, words, base):
    """The step engine's position and counters into words[base:] (the journal.E_*
    offsets): step_no, step_count, cycle, the cycle signs, r_ohm, i_cmd_nA, step_type,
    the accumulators (acc), the number of LOOP steps and their remaining counts in table
    order. False if the table has more than journal.MAX_LOOPS LOOP steps (the position
    could not be kept)."""
    words[base + journal.E_STEP_NO] = engine.step_no
    words[base + journal.E_STEP_COUNT] = engine.step_count
    words[base + journal.E_CYCLE] = engine.cycle
    words[base + journal.E_FIRST_SIGN] = engine.first_sign
    words[base + journal.E_LAST_SIGN] = engine.last_sign
    words[base + journal.E_R_OHM] = engine.r_ohm
    words[base + journal.E_I_CMD] = engine.i_cmd_nA
    words[base + journal.E_STEP_TYPE] = engine.step_type
    for k in range(steps.N_ACC):
        words[base + journal.E_ACC + k] = engine.acc[k]
    loop = steps.KINDS["LOOP"]
    n = 0
    for k in range(len(engine.steps)):
        if engine.steps[k][0] == loop:
            if n >= journal.MAX_LOOPS:
                return False
            words[base + journal.E_LOOPS + n] = engine.loops[k]
            n += 1
    words[base + journal.E_N_LOOPS] = n
    return True
