"""The calibration procedure: ADC non-linearity, current ranges, voltage, then the file.

Order: with the current load connected, the RP2040's non-linearity is measured first
(a slow ramp of the current-sense input, made by stepping the source through the
smallest range around each erratum code), because every later point is read through
it; then the current points of each range; then the voltage points. Each point is a
``HIST`` of raw codes (docs/link.md), scaled on the host with the new correction table,
so whatever calibration the board has loaded does not matter. Units: V, A (> 0
charges), codes.
"""

import datetime
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..link import LinkError
from . import dnl, scaling
from .bench import pause
from .linfit import fit_line

FRACTIONS = (-0.85, -0.5, -0.2, 0.2, 0.5, 0.85)  # of each range's full scale
N_RP2040 = 4096     # conversions per point (noise 1-2 LSB rms averages to ~0.03 LSB)
N_ADS1115 = 128     # 860 sps: 0.15 s per point
DNL_HALF = 20       # codes each side of an erratum code in its window
DNL_MARGIN = 10     # codes swept beyond the window, for the noise at the sweep's ends
DNL_STEP = 0.5      # codes between source steps of the sweep
DNL_PER_STEP = 200  # conversions per step: ~400 per code over the window
SET_MS = 600000     # a SET lasts at most this (the firmware's longest); STOP ends it sooner
MAX_OFFSET_V = 0.2  # a larger voltage offset is a wiring or reference mistake
MAX_OFFSET_FS = 0.05  # a current offset beyond 5 % of full scale likewise


def pick_range(i_A, board):
    """Range index the firmware picks for ``i_A`` (board.py set_current's rule)."""
    rs = scaling.ranges(board)
    margin = float(board["current"].get("range_margin", 0.9))
    for k, r in enumerate(rs[:-1]):
        if abs(i_A) <= margin * r["full_scale_mA"] * 1e-3:
            return k
    return len(rs) - 1


def default_plan(board):
    """{"voltage_V": targets, "current_A": setpoints}: five voltages over the board's
    window and FRACTIONS of each range's full scale that the firmware puts on that range."""
    lim = board["limits"]
    hi = min(float(lim["max_V"]), float(board["voltage"]["max_V"]))
    lo = max(float(lim["min_V"]), 0.0)
    volts = [round(lo + (hi - lo) * f, 3) for f in (0.08, 0.3, 0.52, 0.74, 0.94)]
    amps = []
    for k, r in enumerate(scaling.ranges(board)):
        fs = r["full_scale_mA"] * 1e-3
        amps += [f * fs for f in FRACTIONS if pick_range(f * fs, board) == k]
    return {"voltage_V": volts, "current_A": amps}


def _hist(link, ch, n):
    return link.command("HIST", ch, n, timeout_s=60.0)


def _set(link, i_A):
    """Force ``i_A``; returns (applied A, range index)."""
    r = link.command("SET", int(round(i_A * 1e9)), SET_MS)
    return r["i_set_nA"] * 1e-9, int(r["range"])


def _forced_hist(link, i_A, n, field):
    """HIST of the current channel with ``i_A`` flowing.

    The setpoint is sent again right before: a SET lapses after SET_MS of board time,
    which on the simulator (virtual time runs ahead while the host is busy) or after a
    slow typed reading may already have passed. A current still off after that means a
    voltage limit tripped.
    """
    for _ in range(3):
        _set(link, i_A)
        h = _hist(link, "I", n)
        if h["i_set_nA"] != 0 or int(round(i_A * 1e9)) == 0:
            return h
    raise InputError(f"{field}: the board switched the current off (a voltage limit?): check the load")


def sweep_dnl(bench, board, codes=dnl.E11_CODES, say=print):
    """Code counts of a slow ramp of the current-sense input around each of ``codes``.

    The source steps through the smallest range so that the sense amplifier's output
    moves DNL_STEP codes at a time across [code - DNL_HALF - DNL_MARGIN, code + DNL_HALF +
    DNL_MARGIN]; equal conversions per step make the input uniform over the window.
    Returns (counts[4096], windows [(lo, hi)], skipped codes).
    """
    link = bench.link
    counts = np.zeros(4096)
    windows, skipped = [], []
    pick0 = float(board["current"].get("range_margin", 0.9)) * scaling.ranges(board)[0]["full_scale_mA"] * 1e-3
    a_per_code = scaling.A_per_code(board, 0)
    for p in codes:
        lo, hi = p - DNL_HALF - DNL_MARGIN, p + DNL_HALF + DNL_MARGIN
        i_p = scaling.cell_A(p, board, 0)
        if max(abs(scaling.cell_A(lo, board, 0)), abs(scaling.cell_A(hi, board, 0))) > pick0:
            skipped.append(p)
            continue
        _set(link, i_p)
        pause(bench.settle_s)
        h = _forced_hist(link, i_p, 512, f"adc_correction.ramp[{p}]")
        shift = scaling.mean_code(h) - p  # the source's own error, in codes
        say(f"  ramp around code {p}: source offset {shift:+.1f} codes")
        for x in np.arange(lo, hi + DNL_STEP / 2, DNL_STEP):
            i_A = i_p + (x - p - shift) * a_per_code
            _set(link, i_A)
            pause(bench.settle_s)
            h = _forced_hist(link, i_A, DNL_PER_STEP, f"adc_correction.ramp[{p}]")
            for j, c in enumerate(h["counts"]):
                if 0 <= h["lo"] + j < 4096:
                    counts[h["lo"] + j] += c
        windows.append((p - DNL_HALF, p + DNL_HALF))
    link.command("STOP")
    return counts, windows, skipped


def measure_currents(bench, reference, board, setpoints_A, corr, n):
    """{range index: (measured A list, reference A list)} from forced setpoints."""
    link = bench.link
    pts = {}
    try:
        for j, i_A in enumerate(setpoints_A):
            applied_A, k = _set(link, i_A)
            pause(bench.settle_s)
            ref = reference.current(applied_A, j)
            h = _forced_hist(link, i_A, n, f"current[{j}]")
            meas, refs = pts.setdefault(k, ([], []))
            meas.append(scaling.cell_A(scaling.mean_code(h, corr), board, k))
            refs.append(ref)
    finally:
        link.command("STOP")
    return pts


def measure_voltages(bench, reference, board, targets_V, corr, n):
    """(measured V list, reference V list), one reference connected at a time."""
    meas, refs = [], []
    for j, target in enumerate(targets_V):
        bench.voltage_source(target, j)
        refs.append(reference.voltage(target, j))
        meas.append(scaling.cell_V(scaling.mean_code(_hist(bench.link, "V", n), corr), board))
    return meas, refs


def calibrate(bench, reference, board, plan=None, adc="measure", say=print, created=None):
    """Run the whole procedure on ``bench``; returns the calibration (file dict).

    board: the board file dict. plan: default_plan(board) unless given (a fixture's
    points). adc: "measure" (code-density ramp), "default" (the published table) or
    "none", for the RP2040 path; the ADS1115 path has no table.
    """
    plan = plan or default_plan(board)
    kind = scaling.converter(board)
    rs = scaling.ranges(board)
    max_A = max(abs(i) for i in plan["current_A"])
    bench.current_load(max_A)
    _check_id(bench.link, board)
    corr, file_table = {}, None
    adc_note = "none (ADS1115 path)" if kind != "rp2040" else "none (--adc none)"
    if kind == "rp2040" and adc == "measure":
        say("Measuring the ADC's non-linearity (RP2040-E11) with a slow ramp ...")
        counts, windows, skipped = sweep_dnl(bench, board, say=say)
        if not windows:
            raise InputError("adc_correction: the smallest range cannot ramp the input across any "
                             "erratum code; use --adc default")
        corr = dnl.correction_from_counts(counts, windows)
        adc_note = (f"measured: code density of a ramp around codes {[w[0] + DNL_HALF for w in windows]}"
                    + (f" (not reachable: {skipped})" if skipped else ""))
    elif kind == "rp2040" and adc == "default":
        file_table = dnl.default_file_table()
        corr, adc_note = dnl.from_file_table(file_table), f"published default ({dnl.DEFAULT_TABLE.name})"
    n = N_RP2040 if kind == "rp2040" else N_ADS1115
    say("Current points ...")
    cur = measure_currents(bench, reference, board, plan["current_A"], corr, n)
    say("Voltage points ...")
    v_meas, v_ref = measure_voltages(bench, reference, board, plan["voltage_V"], corr, n)
    vfit = fit_line(v_meas, v_ref, "voltage", MAX_OFFSET_V)
    cal = {"board": board["id"], "created": created or datetime.date.today().isoformat()}
    cal["id"] = f"{board['id']}-{cal['created']}"
    cal["voltage"] = {"gain": round(vfit["gain"], 7), "offset_V": round(vfit["offset"], 7)}
    cal["current"] = {}
    report = {"voltage": _summary(vfit["residuals"] * 1e3, "mV")}
    for k, r in enumerate(rs):
        if k not in cur:
            continue  # no points on this range: the firmware keeps it nominal
        fs_A = r["full_scale_mA"] * 1e-3
        f = fit_line(cur[k][0], cur[k][1], f"current.{r['name']}", MAX_OFFSET_FS * fs_A)
        cal["current"][r["name"]] = {"gain": round(f["gain"], 7), "offset_A": float(f"{f['offset']:.4e}")}
        report[r["name"]] = _summary(f["residuals"] * 1e6, "uA")
    if file_table is not None:
        cal["adc_correction"] = file_table
    elif corr:
        cal["adc_correction"] = dnl.as_file_table(corr)
    cal["provenance"] = (f"cellbench calibrate: {len(v_ref)} voltage points, "
                         f"{sum(len(m) for m, _ in cur.values())} current points; "
                         f"adc_correction: {adc_note}")
    cal["fit"] = report
    return cal


def _summary(residuals, unit):
    r = np.asarray(residuals, dtype=float)
    return {"points": int(r.size), f"rms_{unit}": round(float(np.sqrt(np.mean(r ** 2))), 4),
            f"max_{unit}": round(float(np.max(np.abs(r))), 4)}


def _check_id(link, board):
    try:
        ident = link.command("ID")
    except LinkError as e:
        raise InputError(f"board: no answer to ID: {e}") from None
    if ident.get("board") != board["id"]:
        raise InputError(f"board: the board reports id {ident.get('board')!r}, "
                         f"the board file says {board['id']!r}")


def write_calibration(cal, path, force=False):
    """Write the calibration JSON to ``path``; refuses to replace a file without ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"out: {path} exists; use --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cal, indent=1) + "\n")
    return path
