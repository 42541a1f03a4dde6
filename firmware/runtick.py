"""The work of one tick of the run (docs/design.md data flow).

tick(ctl, dt_ms) is controller.Controller.tick: board.sample() -> safety -> step engine
-> estimator -> ring of records, the run's end (DONE, FAULT) or pause for a full ring
(FULL), then the journal's rationed save (firmware/runjournal.py); outside a run, the
time and voltage limits of a SET current. The commands that move the run between its
states are the controller's (firmware/controller.py). Nothing here allocates while the
run is healthy: small ints, attribute stores and the ring's preallocated arrays (the
estimator's floats are the estimator's). tick() never raises: an exception inside it
switches the current off and ends the run with the INTERNAL fault bit.

Units: uV, nA (> 0 charges the cell), ms, nAh, uWh, ppm; all integers.
"""

import controller
import record
import runjournal
import safety
import steps


def tick(ctl, dt_ms):
    """One sampling tick of ctl (a controller.Controller); dt_ms = real ms since the
    previous tick. Never raises."""
    try:
        ctl.board.sample()
        if ctl.state in controller.ACTIVE:
            _run_tick(ctl, dt_ms)
            if ctl.journal is not None and ctl.state in controller.ACTIVE and \
                    runjournal.due(ctl):
                runjournal.save(ctl, 1)
        elif ctl.set_ms:
            _set_tick(ctl, dt_ms)
    except Exception as ex:
        _internal(ctl, ex)
    ctl.board.led(ctl.state in controller.LED_ON)
    ctl.board.feed()


def _set_tick(ctl, dt_ms):
    # A SET current obeys the board's voltage limits and its time, like a run would.
    b = ctl.board
    ctl.set_ms -= dt_ms
    if ctl.set_ms <= 0 or not b.min_uV <= b.v_uV <= b.max_uV:
        b.off()
        ctl.set_ms = 0


def _run_tick(ctl, dt_ms):
    eng = ctl.engine
    st = ctl.state
    ctl.t_lo += dt_ms  # small ints only (t_ms would outgrow them after 12.4 days)
    if ctl.t_lo >= record.T_WRAP:
        ctl.t_lo -= record.T_WRAP
        ctl.t_hi += 1
    eng.count(dt_ms)
    bits = 0
    ended = False
    force = False
    if st == controller.RUNNING:
        bits = ctl.safety.check(eng.acc[steps.Q_STEP], dt_ms)
        if bits:
            ctl.fault |= bits
            force = True
        else:
            ended = eng.control(dt_ms)
            force = ended or eng.step_index == 0
    _estimate(ctl, dt_ms)
    b = ctl.board
    if st != controller.FULL and (force or ctl.trigger.due(ctl.t_lo, b.v_uV, b.i_nA)):
        if ctl.push(record.RECORD) >= 0:
            ctl.trigger.mark(ctl.t_lo, b.v_uV, b.i_nA)
    if bits:
        _end(ctl, controller.FAULT, record.EV_FAULT)
    elif ended and not eng.advance():
        _end(ctl, controller.DONE, record.EV_END)
    elif ended:
        ctl.j_due = True  # a step boundary: the journal saves the new position
    st = ctl.state
    if (st == controller.RUNNING or st == controller.PAUSED) and \
            ctl.ring.free() <= controller.RESERVE:
        # Pause at this safe point rather than overwrite what the host has not got.
        ctl.full_from = st
        eng.stop()
        ctl.state = controller.FULL
        ctl.event(record.EV_FULL)


def _estimate(ctl, dt_ms):
    est = ctl.est
    if est is None:
        return
    try:
        est.step(ctl.board.i_nA, ctl.board.v_uV, dt_ms)
        ctl.soc_ppm = est.soc_ppm
        ctl.std_ppm = est.std_ppm
        ctl.copy_slow(est)
    except Exception as ex:
        # The run matters more than the estimate: drop the estimator, say so.
        ctl.est = None
        ctl.soc_ppm = -1
        ctl.std_ppm = -1
        ctl.no_slow()
        ctl.error = "estimator: " + repr(ex)[:60]
        ctl.event(record.EV_ESTIMATOR)


def _end(ctl, state, kind):
    ctl.engine.stop()
    ctl.state = state
    ctl.event(kind)
    runjournal.save(ctl, 0)


def _internal(ctl, ex):
    ctl.board.off()
    ctl.error = repr(ex)[:80]
    if ctl.state in controller.ACTIVE:
        ctl.fault |= safety.INTERNAL
        ctl.state = controller.FAULT
        try:
            ctl.event(record.EV_FAULT)
        except Exception:
            ctl.lost += 1
        try:
            runjournal.save(ctl, 0)  # a faulted run is not one to recover
        except Exception:
            pass
