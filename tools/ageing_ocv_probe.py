"""Would an OCV that ages with the cell close the PyBaMM run's capacity miss between the
checks? (issue 14; docs/estimator.md "Ageing"). A measurement, not part of the estimator.

The PyBaMM SEI run (tests/data/pybamm-ageing) loses lithium: the electrodes slip and the
cell's OCV(SoC) bends (cell.json check_ocv_V, the true OCV on ocv_soc at each C/10 check).
An ageing OCV (a slow "slip" state, or OCV(z, c) tied to the capacity scale when the fade
is all loss of lithium) can at best know that bend exactly. This runs the board's filter
(firmware/ekf.py, in CPython: the host twin's equations) over the log with a model fitted
to the first three cycles (as tests/test_ageing_tracking.py does), its OCV table offset by
the true bend, in two ways:

* ``time``: the bend known at every moment (check_ocv_V less the first check's, linear in
  time between the checks): the oracle, the best any slip state can do;
* ``cap``: OCV(z, c), the bend as a function of the filter's own capacity scale c (linear
  in c between the checks' OCV window capacities), with dOCV/dc in the measurement's
  Jacobian: the loss-of-lithium-only design, no new state;

beside ``fresh`` (the model's OCV, what the twin holds). Printed per variant and q_cap: the
capacity's largest error from cycle 10 on against PyBaMM's OCV window capacity
(interpolated linearly between the checks, as the test does), that error in the 1C cycles
and inside the C/10 checks, at the checks, and the SoC's RMSE against the true window SoC
(the truth file's SoC, on the fresh electrodes' window, mapped onto each check's window:
its width is the check's OCV capacity, its offset read from the rested top after the
check's C/10 charge).

Also printed, first: per check interval, how far the counted charge moves the SoC beyond the
true window SoC, the part the log's current offset makes (cell.json current_offset_A) and
the SoC random walk q_soc that carries the rest (the SEI's side charge, counted but never
held); and runs with estimator entries over the fit's (the bias state, q_soc): these are
what closes the miss (cellbench.benchmarks.ageing PYBAMM_ESTIMATOR).

Run: ``.venv/bin/python tools/ageing_ocv_probe.py`` (about a minute); ``--rc``, ``--hysteresis``
pin the fit's structure (cellbench.fit.fit_logs).
"""

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
from cellbench import bdflog, fw
from cellbench.benchmarks.ageing import FIT_CYCLES, first_cycles
from cellbench.fit import fit_logs
from cellbench.paths import ROOT

DATA = ROOT / "tests" / "data" / "pybamm-ageing"
TRACK_FROM_CYCLE = 10
CHECK_STEPS = (10, 11, 12, 13, 14, 15)   # the C/10 check's step indices in the log
TOP_REST = 13                            # the rest after the check's C/10 charge
ONE_C_DISCHARGE = 1                      # the 1C cycles' first step
ONE_C_RESTS = ((4, "after a 1C charge"), (2, "after a 1C discharge"))  # step index, what it follows
# The SoC's drift from counting (cellbench.benchmarks.ageing PYBAMM_ESTIMATOR): the log's
# current offset as the bias state (prior std BIAS_OF_1C of 1C), the SEI's side charge as
# the SoC's random walk q_soc (per s).
BIAS_OF_1C = 0.005
DRIFT = {"bias": True, "q_soc": 1e-8}
# (OCV, q_cap, the scale pinned to the truth as the 1C cycles start, model_error's
# look_tau_s (s; None: the fit's), estimator entries over the fit's ("bias": True takes
# p0_bias_A2 from BIAS_OF_1C))
RUNS = (("fresh", 3e-10, False, None, {}), ("fresh", 1e-9, False, None, {}),
        ("fresh", 1e-10, False, None, {}),
        ("time", 3e-10, False, None, {}), ("time", 1e-9, False, None, {}), ("time", 3e-9, False, None, {}),
        ("cap", 3e-10, False, None, {}), ("cap", 1e-9, False, None, {}), ("cap", 3e-9, False, None, {}),
        ("fresh", 3e-10, True, None, {}), ("time", 3e-10, True, None, {}),
        ("fresh", 3e-10, False, 600.0, {}), ("time", 3e-10, False, 600.0, {}),
        ("fresh", 3e-10, False, 1200.0, {}), ("time", 3e-10, False, 1200.0, {}),
        ("fresh", 3e-10, False, None, DRIFT), ("fresh", 3e-10, False, None, {"bias": True}),
        ("fresh", 3e-10, False, None, {"q_soc": 3e-9}), ("fresh", 3e-10, False, None, {"q_soc": 1e-7}),
        ("fresh", 3e-10, False, None, dict(DRIFT, q_soc=3e-9)),
        ("fresh", 3e-10, False, None, dict(DRIFT, q_soc=3e-8)),
        ("fresh", 1e-10, False, None, DRIFT), ("fresh", 1e-9, False, None, DRIFT),
        ("time", 3e-10, False, None, DRIFT))


class Bend:
    """The true OCV bend of cell.json: dV(z) on its ocv_soc grid at each check, and the
    checks' capacity scales (OCV window capacity over the first check's) and times."""

    def __init__(self, cell):
        v = np.asarray(cell["check_ocv_V"])
        self.z = np.asarray(cell["ocv_soc"])
        self.dv = v - v[0]
        cap = np.asarray(cell["check_ocv_capacity_Ah"])
        self.c = cap / cap[0]
        self.t_s = np.asarray(cell["check_ocv_time_s"])

    def at(self, z, c):
        """(dV V, d(dV)/dz V, d(dV)/dc V) at SoC z and capacity scale c (held at the ends)."""
        cs = self.c
        cc = min(max(c, cs[-1]), cs[0])
        k = max(0, min(int(np.searchsorted(-cs, -cc, side="right")) - 1, len(cs) - 2))
        w = (cs[k] - cc) / (cs[k] - cs[k + 1])
        row = self.dv[k] + w * (self.dv[k + 1] - self.dv[k])
        dz = self.z[1] - self.z[0]
        j = min(int(min(max(z, 0.0), 1.0) / dz), len(self.z) - 2)
        fr = (min(max(z, 0.0), 1.0) - self.z[j]) / dz
        per_c = (self.dv[k + 1] - self.dv[k]) / (cs[k + 1] - cs[k])
        slope = (row[j + 1] - row[j]) / dz if 0.0 <= z <= 1.0 else 0.0
        d_c = per_c[j] + fr * (per_c[j + 1] - per_c[j]) if cs[-1] < c < cs[0] else 0.0
        return row[j] + fr * (row[j + 1] - row[j]), slope, d_c


def ageing_filter(model, bend, mode):
    """The firmware filter with its OCV bent by ``bend``: "fresh" (not bent), "time" (as
    at the filter's attribute t_now, s) or "cap" (at its capacity scale, with the bend's
    dOCV/dc in the Jacobian's capacity entry)."""
    ekf = fw.module("ekf")

    class Ageing(ekf.Ekf):
        t_now = 0.0

        def _lookup(self, z):
            super()._lookup(z)
            if mode == "fresh":
                return
            c = float(np.interp(self.t_now, bend.t_s, bend.c)) if mode == "time" else self.x[self.ic]
            dv, slope, self._dv_dc = bend.at(z, c)
            self._ocv += dv
            self._slope += slope

        def _measure(self, z, i):
            vm = super()._measure(z, i)
            if mode == "cap":
                self._lookup(z)
                self._h[self.ic] = self._dv_dc
            return vm

    return Ageing(model)


def true_window_soc(log, cell, bend):
    """The true SoC on each check's OCV window (linear between the checks), from the truth
    file's SoC (on the fresh electrodes' window): the window's width is the check's OCV
    capacity over the cell's; its offset is where the rested top after the check's C/10
    charge sits on that check's true OCV."""
    with gzip.open(DATA / "ageing.truth.csv.gz", "rt") as f:
        soc = np.loadtxt(f, delimiter=",", skiprows=1, usecols=3)
    t_s, v_V, step = log["Test Time / s"], log["Voltage / V"], log["Step Index / 1"]
    width = np.asarray(cell["check_ocv_capacity_Ah"]) / cell["capacity_Ah"]
    offset = []
    for k, t_k in enumerate(bend.t_s):
        rest = np.flatnonzero((t_s > t_k) & (step == TOP_REST))
        gaps = np.flatnonzero(np.diff(rest) > 1)
        end = rest[gaps[0]] if gaps.size else rest[-1]
        z_end = np.interp(v_V[end], np.asarray(cell["check_ocv_V"][k]), bend.z)
        offset.append(soc[end] - z_end * width[k])
    return (soc - np.interp(t_s, bend.t_s, offset)) / np.interp(t_s, bend.t_s, width)


def track(model, log, bend, mode, q_cap, pin_Ah=None, look_tau_s=None, estimator=None):
    """(capacity Ah, SoC, model voltage V) of the bent filter at every log row. ``pin_Ah``:
    the capacity to set the scale to as the first 1C cycle starts, after the first check
    (None: not pinned); ``look_tau_s``: model_error's look_tau_s instead of the fit's;
    ``estimator``: entries over the fit's estimator section."""
    model = dict(model, estimator=dict(model["estimator"], q_cap=q_cap, **(estimator or {})))
    if look_tau_s is not None:
        model["model_error"] = dict(model["model_error"], look_tau_s=look_tau_s)
    f = ageing_filter(model, bend, mode)
    t_s, i_A, v_V = log["Test Time / s"], log["Current / A"], log["Voltage / V"]
    f.reset(v_uV=v_V[0] * 1e6, i_nA=i_A[0] * 1e9)
    pin_at = int(np.argmax(log["Step Index / 1"] == ONE_C_DISCHARGE)) if pin_Ah is not None else -1
    cap, soc, vm = np.empty(t_s.size), np.empty(t_s.size), np.empty(t_s.size)
    for s in range(t_s.size):
        f.t_now = t_s[s]
        if s == pin_at:
            f.x[f.ic] = pin_Ah / (f.q_As / 3600.0)
        f.step(i_A[s] * 1e9, v_V[s] * 1e6, (t_s[s] - t_s[s - 1]) * 1e3 if s else 0)
        cap[s], soc[s], vm[s] = f.q_As / 3600.0 * f.x[f.ic], f.soc, f.v_model
    return cap, soc, vm


def counting_drift(log, cell, bend, z_true, eta):
    """Per interval from a check's rested top to the next check's top-up charge: (hours,
    the counted SoC change less the true one, the part the log's current offset makes,
    (the rest)^2 / the interval's seconds: the SoC random walk that carries it). Counted
    with the model's charge efficiency ``eta`` on the window capacity (linear between the
    checks)."""
    t_s, i_A, step = log["Test Time / s"], log["Current / A"], log["Step Index / 1"]
    at = np.searchsorted(t_s, bend.t_s - 1e-3)
    width_Ah = np.interp(t_s, t_s[at], cell["check_ocv_capacity_Ah"])
    dt = np.diff(t_s, prepend=t_s[0])
    starts = np.flatnonzero(np.r_[True, step[1:] != step[:-1]] & (step == CHECK_STEPS[-2]))
    out = []
    for a in at[:-1]:
        e = starts[starts > a][0]
        sl = slice(a + 1, e + 1)
        counted = np.sum(np.where(i_A[sl] > 0, eta, 1.0) * i_A[sl] * dt[sl] / 3600 / width_Ah[sl])
        offset = np.sum(cell["current_offset_A"] * dt[sl] / 3600 / width_Ah[sl])
        drift, span_s = counted - (z_true[e] - z_true[a]), t_s[e] - t_s[a]
        out.append((span_s / 3600, drift, offset, (drift - offset) ** 2 / span_s))
    return out


def rest_ends(log, late):
    """Per ONE_C_RESTS entry, the rows that end such a rest from TRACK_FROM_CYCLE on."""
    step = log["Step Index / 1"]
    ends = np.flatnonzero(step[:-1] != step[1:])
    return [ends[(step[ends] == idx) & late[ends]] for idx, _ in ONE_C_RESTS]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rc", type=int, choices=(0, 1, 2), help="pin the fit's RC pairs (default: its choice)")
    ap.add_argument("--hysteresis", choices=("on", "off"), help="pin the fit's hysteresis (default: its choice)")
    args = ap.parse_args()
    cell = json.loads((DATA / "cell.json").read_text())
    log = bdflog.read_log(DATA / "ageing.bdf.csv.gz")
    with tempfile.TemporaryDirectory() as tmp:
        first = first_cycles(DATA / "ageing.bdf.csv.gz", Path(tmp) / "first.bdf.csv", FIT_CYCLES)
        model, _ = fit_logs([str(first)], rc=args.rc,
                            hysteresis=None if args.hysteresis is None else args.hysteresis == "on")
    bend = Bend(cell)
    t_s = log["Test Time / s"]
    at = np.searchsorted(t_s, bend.t_s - 1e-3)
    truth_Ah = np.interp(t_s, t_s[at], cell["check_ocv_capacity_Ah"])
    late = log["Cycle Count / 1"] - 1 >= TRACK_FROM_CYCLE
    check = np.isin(log["Step Index / 1"], CHECK_STEPS)
    z_true = true_window_soc(log, cell, bend)
    ends = rest_ends(log, late)
    print("counting against the true window SoC, per check interval (cellbench.benchmarks.ageing "
          "PYBAMM_ESTIMATOR):")
    for hours, drift, offset, q_soc in counting_drift(log, cell, bend, z_true, model["coulombic_efficiency"]):
        print(f"  {hours:5.1f} h: counted - true {100 * drift:+.1f} % of SoC, the current offset's "
              f"{100 * offset:+.1f} %, the rest (SEI's side charge) needs q_soc >= {q_soc:.1e}/s")
    print("OCV    q_cap  pinned look_s estimator | cap err max %: all  1C cycles  checks | at the checks %"
          "           | SoC RMSE | cell - model at the 1C rests' ends (mV): "
          + ", ".join(what for _, what in ONE_C_RESTS))
    for mode, q_cap, pin, look_tau_s, extra in RUNS:
        if extra.get("bias"):
            extra = dict(extra, p0_bias_A2=(BIAS_OF_1C * cell["one_c_A"]) ** 2)
        cap, soc, vm = track(model, log, bend, mode, q_cap, truth_Ah[at[0]] if pin else None, look_tau_s,
                             extra)
        err = np.abs(cap / truth_Ah - 1) * 100
        print(f"{mode:6s} {q_cap:.0e} {pin!s:6s} {look_tau_s or model['model_error']['look_tau_s']:6.0f} "
              f"{' '.join(f'{k}={v}' for k, v in extra.items() if k != 'p0_bias_A2') or '-'} | "
              f"{err[late].max():16.2f} {err[late & ~check].max():10.2f} {err[late & check].max():7.2f} | "
              + " ".join(f"{100 * (cap[k] / q - 1):+.1f}" for k, q in zip(at, cell["check_ocv_capacity_Ah"]))
              + f" | {100 * np.sqrt(np.mean((soc - z_true)[late] ** 2)):6.2f} % | "
              + ", ".join(f"{1e3 * np.mean(log['Voltage / V'][e] - vm[e]):+.1f}" for e in ends))
    # what the cell itself holds there: its voltage less its true OCV at the true SoC
    ocv_V = np.asarray(cell["check_ocv_V"])
    for e, (_, what) in zip(ends, ONE_C_RESTS):
        w = np.interp(t_s[e], bend.t_s, np.arange(bend.t_s.size))
        k = np.minimum(w.astype(int), bend.t_s.size - 2)
        true_V = [np.interp(z, bend.z, ocv_V[j] + (w_j - j) * (ocv_V[j + 1] - ocv_V[j]))
                  for z, j, w_j in zip(z_true[e], k, w)]
        print(f"the cell at the end of a rest {what}: {1e3 * np.mean(log['Voltage / V'][e] - true_V):+.1f} mV "
              "from its true OCV")


if __name__ == "__main__":
    main()
