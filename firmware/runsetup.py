"""A run set up between runs: LOAD takes its step table, START begins it.

LOAD checks the table (firmware/steptable.py) and compiles it into the step engine's
integer tuples, its current limits, the safety limits and the record trigger. START
comes in two halves, each loaded for its call by controller.Controller._begin: prepare()
refuses what cannot start and resets the estimator; the controller then makes the ring
from the heap then free, with this module dropped (its bytecode goes to the ring too);
begin() sets the run going from its first step. RECOVER (firmware/recovery.py) does the
same from the journal with reset_estimator() and run(). None of this runs during a run,
so the board does not keep the module (controller._once).

Units: uV, nA (> 0 charges the cell), ms; all integers.
"""

from array import array

import record
import runjournal
import safety
import steps
from controller import READY, RUNNING, CommandError


def load(ctl, table, crc):
    """LOAD on ctl: take a step table (a parsed JSON object) whose text has checksum crc;
    CommandError naming its first bad field (nothing changed) if it is not valid."""
    import steptable  # the check: dropped with this module (controller._ONCE)

    ctl.check_idle()
    b = ctl.board
    err = steptable.validate(table, b)
    if err:
        raise CommandError(err[0], err[1])
    _compile(ctl.engine, table, b)
    ctl.safety.configure(table.get("safety"))
    rec = table.get("record") or {}
    tick_ms = table.get("tick_ms", b.tick_ms)
    ctl.trigger.configure(rec.get("dt_ms", 0), rec.get("dv_uV", 0), rec.get("di_nA", 0),
                          tick_ms // 2)
    ctl.table = table
    ctl.table_crc = crc  # RECOVER checks it (journal.W_TABLE)
    ctl.state = READY
    return {"steps": len(table["steps"]), "tick_ms": tick_ms}


def _compile(engine, table, board):
    """The table (validate() accepted it) into engine: steps as (kind, a, b, c) int tuples,
    the LOOP counters, and the current limits its CV control clamps to."""
    compiled = []
    for s in table["steps"]:
        args = [int(x) for x in s[1:]]
        while len(args) < 3:
            args.append(0)
        compiled.append((steps.KINDS[s[0]], args[0], args[1], args[2]))
    loop = steps.KINDS["LOOP"]
    engine.steps = compiled
    engine.loops = array("i", [s[2] if s[0] == loop else 0 for s in compiled])
    lim = safety.limits(board, table.get("safety"))
    engine.hi_nA = min(lim["max_nA"], board.max_nA, board.range_max_nA)
    engine.lo_nA = max(lim["min_nA"], -board.max_nA, -board.range_max_nA)


def prepare(ctl):
    """START on ctl before the ring is made (controller.Controller._begin): refused
    (CommandError, nothing changed) while a run goes on or with no table; the MODEL's
    estimator reset from the rested voltage is returned (None without one)."""
    ctl.check_idle()
    if ctl.table is None:
        raise CommandError("state", "no step table (LOAD first)")
    return reset_estimator(ctl, None)


def begin(ctl, est):
    """START on ctl once the ring is made: the run from the table's first step with the
    estimator est (prepare's); the reply (the START event's seq, tick_ms)."""
    ctl.est = est
    ctl.soc_ppm = -1
    ctl.std_ppm = -1
    ctl.no_slow()
    ctl.fault = 0
    ctl.t_ms = 0
    ctl.engine.start()
    return {"seq": run(ctl, record.EV_START), "tick_ms": ctl.tick_ms}


def run(ctl, kind):
    """START and RECOVER once the engine is set: RUNNING, the event kind (its seq is
    returned), the journal."""
    ctl.tick_ms = ctl.table.get("tick_ms", ctl.board.tick_ms)
    ctl.safety.reset()
    ctl.set_ms = 0  # a run takes the source over from SET
    b = ctl.board
    ctl.trigger.mark(ctl.t_ms, b.v_uV, b.i_nA)
    ctl.state = RUNNING
    ctl.resync = True  # main.py restarts the tick clock: the first dt starts now
    seq = ctl.event(kind)
    ctl.interrupted = None  # a new run replaces the interrupted one
    runjournal.save(ctl, 1)
    return seq


def reset_estimator(ctl, soc):
    """START and RECOVER before the ring takes the heap (reset allocates): the MODEL's
    estimator reset for a new run at soc (0-1; None: from the rested voltage); None
    without one or if it fails (ctl.error says why)."""
    ctl.error = ""
    ctl.est = None  # the last run's, if another MODEL replaced it: free before the ring
    est = ctl.model_est
    if est is None:
        return None
    try:
        if hasattr(est, "reset"):
            est.reset(soc, ctl.board.v_uV, ctl.board.i_nA)
        else:
            est = ctl.model_est = type(est)(ctl.model)
        return est
    except Exception as ex:
        ctl.error = "estimator: " + repr(ex)[:60]
        return None
