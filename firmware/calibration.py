"""The commands calibration uses outside runs: SET (a forced current) and HIST (raw codes).

`cellbench calibrate` (host/cellbench/calibrate) drives the board with SET and reads the
converters' noise with HIST; neither is used while a run goes on, so the board does not
keep this module: controller._once imports it for the command and drops it after. The SET
current's own tick (its time and voltage limits) stays in the controller.

Units: nA (> 0 charges the cell), uV, ms; ADC codes.
"""

from controller import CommandError

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_SET_MAX_ms = const(600000)  # SET: longest; the current goes off by itself after it
_HIST_MAX_N = const(20000)   # HIST: most conversions (~40 ms RP2040, ~26 s ADS1115)
_HIST_MAX_SPAN = const(1024)  # HIST: widest spread of codes replied (unsteady input: refused)


def set_current(ctl, i_nA, for_ms):
    """SET on ctl: force i_nA outside runs for for_ms (calibration points).

    The board's own limits hold: |i| <= max_nA, and the current goes off (like STOP)
    at the first tick whose voltage is outside [min_uV, max_uV] or once for_ms passed.
    """
    ctl.check_idle()
    b = ctl.board
    if i_nA > b.max_nA or -i_nA > b.max_nA:
        raise CommandError("i_nA", "outside the board limit %d" % b.max_nA)
    if not 0 < for_ms <= _SET_MAX_ms:
        raise CommandError("for_ms", "must be 1..%d" % _SET_MAX_ms)
    if not b.min_uV <= b.v_uV <= b.max_uV:
        raise CommandError("v_uV", "%d outside the board limits" % b.v_uV)
    applied = b.set_current(i_nA)
    ctl.set_ms = for_ms
    return {"i_set_nA": applied, "range": b.range, "for_ms": for_ms}


def hist(ctl, ch, n):
    """HIST on ctl: histogram of n raw conversions of channel ch ("V" or "I"), from the
    lowest code seen; refused while a run goes on or when the codes spread too wide."""
    ctl.check_idle()
    if not 0 < n <= _HIST_MAX_N:
        raise CommandError("n", "must be 1..%d" % _HIST_MAX_N)
    b = ctl.board
    counts = b.code_histogram(0 if ch == "V" else 1, n)
    lo = min(counts)
    span = max(counts) - lo + 1
    if span > _HIST_MAX_SPAN:
        raise CommandError("span", "codes spread over %d > %d: input not steady" % (span, _HIST_MAX_SPAN))
    hist = [0] * span
    for c in counts:
        hist[c - lo] = counts[c]
    return {"ch": ch, "n": n, "lo": lo, "counts": hist,
            "i_set_nA": b.setpoint_nA, "range": b.range}
