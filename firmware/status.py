"""STATUS: what the board says about its run, in one reply (docs/link.md, its fields).

The reply names the run's state and fault bits, its position in the step table, the
charge counters, the estimate and its slow states, the ring's seqs and room, and the
last errors. The host asks for it when it attaches (cellbench run --resume) or to check
on a board, not during a run's ticks, so the board does not keep this module:
controller._once imports it for the command and drops it after (its bytecode goes back
to the ring).

Units: uV, nA (> 0 charges the cell), ms, nAh, ppm, mohm; all integers.
"""

import steps


def status(ctl):
    """STATUS on ctl (a controller.Controller): the run's state, position, counters,
    estimate, ring and errors in one reply (docs/link.md)."""
    e = ctl.engine
    b = ctl.board
    return {"state": ctl.state, "fault": ctl.fault, "t_ms": ctl.t_ms,
            "step_no": e.step_no, "step_count": e.step_count, "step_index": e.step_index,
            "step_type": e.step_type, "cycle": e.cycle, "v_uV": b.v_uV, "i_nA": b.i_nA,
            "i_set_nA": e.i_cmd_nA, "q_chg_nAh": e.acc[steps.Q_CHG],
            "q_dch_nAh": e.acc[steps.Q_DCH],
            "soc_ppm": ctl.soc_ppm, "soc_std_ppm": ctl.std_ppm,
            "cap_nAh": ctl.cap_nAh, "cap_std_nAh": ctl.cap_std_nAh,
            "r_mohm": ctl.r_mohm, "r_std_mohm": ctl.r_std_mohm,
            "seq_next": ctl.ring.head, "seq_oldest": ctl.ring.tail,
            "free": ctl.ring.free(), "lost": ctl.lost, "tick_ms": ctl.tick_ms,
            "table": ctl.table is not None, "model": ctl.model is not None,
            "estimator": ctl.est is not None, "error": ctl.error,
            "interrupted": ctl.interrupted,
            "journal": "" if ctl.journal is None else ctl.journal.error}
