"""A cell with exactly known answers, for tests and benchmarks of the analysis.

The cell: open-circuit voltage from plateaus placed at chosen voltages, a series
resistance R0 and optionally one RC pair. Its OCV is defined through its inverse,
SoC z(V) = sum of logistic steps centred on the plateau voltages plus a small linear
background, so dz/dV (hence dQ/dV at rest) peaks exactly at the plateau voltages; the
terminal voltage is ``OCV(z) + R0*i + v_rc`` with i > 0 charging.

The protocol: time-limited constant-current steps (so the charge of each step is exactly
|I| * duration), each recorded every ``dt_s`` plus a record at its first and last instant,
separated by optional rests. Half cells discharge first, full cells charge first.
"""

import numpy as np

from .series import CYCLE, I, Q_CHG, Q_DCH, SOC, SOC_STD, STEP, T, V


def _logistic(v, centre_V, width_V):
    return 1.0 / (1.0 + np.exp(-(v - centre_V) / width_V))


class PlateauCell:
    """OCV with plateaus at ``plateaus_V`` holding ``weights`` of the capacity each.

    capacity_Ah: charge between z=0 and z=1; window_V: (V at z=0, V at z=1);
    width_V: logistic width of each plateau; r0_ohm; rc: (r_ohm, tau_s) or None.
    """

    def __init__(self, capacity_Ah, plateaus_V, weights, window_V=(1.0, 2.5), width_V=0.008,
                 r0_ohm=50.0, rc=None):
        self.capacity_Ah = capacity_Ah
        self.r0_ohm, self.rc = r0_ohm, rc
        lo, hi = window_V
        v = np.linspace(lo, hi, 30001)
        background = 1.0 - sum(weights)
        z = background * (v - lo) / (hi - lo)
        for centre, w in zip(plateaus_V, weights):
            step = [_logistic(x, centre, width_V) for x in (v, lo, hi)]
            z = z + w * (step[0] - step[1]) / (step[2] - step[1])
        self._z, self._v = z, v

    def ocv(self, z):
        """Open-circuit voltage (V) at SoC z (fraction; clamped to the window)."""
        return np.interp(z, self._z, self._v)


def _step_times(t0, duration_s, dt_s, delay_s):
    """Record times of a step: from ``delay_s`` after its start every dt_s, and its end."""
    t = t0 + np.arange(min(delay_s, duration_s), duration_s, dt_s)
    return np.append(t, t0 + duration_s)


def _run_step(cell, state, i_A, duration_s, dt_s, delay_s):
    """Records of one CC step; advances ``state`` (t, z, v_rc, q_chg, q_dch)."""
    # With delay_s the first record comes that long after the current changed (a slow tester).
    t = _step_times(state["t"], duration_s, dt_s, delay_s)
    tau = t - state["t"]
    z = state["z"] + i_A * tau / (3600.0 * cell.capacity_Ah)
    v_rc = np.zeros_like(tau)
    if cell.rc:
        r1, tau1 = cell.rc
        v_rc = i_A * r1 + (state["v_rc"] - i_A * r1) * np.exp(-tau / tau1)
    q = abs(i_A) * tau / 3600.0
    rec = {T: t, V: cell.ocv(z) + state["r0_ohm"] * i_A + v_rc, I: np.full(len(t), float(i_A)),
           Q_CHG: state["q_chg"] + (q if i_A > 0 else 0.0 * q), Q_DCH: state["q_dch"] + (q if i_A < 0 else 0.0 * q),
           SOC: z}
    end = duration_s
    state["t"] += end
    state["z"] += i_A * end / (3600.0 * cell.capacity_Ah)
    if cell.rc:
        r1, tau1 = cell.rc
        state["v_rc"] = i_A * r1 + (state["v_rc"] - i_A * r1) * np.exp(-end / tau1)
    state["q_chg" if i_A > 0 else "q_dch"] += abs(i_A) * end / 3600.0 if i_A else 0.0
    return rec


def _step_energy_Wh(cell, z0, i_A, duration_s, v_rc0, r0_ohm):
    """Reference energy of a CC step by fine trapezoid quadrature (for truth tables)."""
    tau = np.linspace(0.0, duration_s, 4001)
    z = z0 + i_A * tau / (3600.0 * cell.capacity_Ah)
    v = cell.ocv(z) + r0_ohm * i_A
    if cell.rc:
        r1, tau1 = cell.rc
        v = v + i_A * r1 + (v_rc0 - i_A * r1) * np.exp(-tau / tau1)
    return abs(i_A) * float(np.trapezoid(v, tau)) / 3600.0


def make_log(cell, cycles, mode="half", dt_s=10.0, rest_s=0.0, z0=None, delay_s=0.0,
             columns=("cycle", "step", "capacity")):
    """Simulate ``cycles`` (list of dicts i_dch_A > 0, t_dch_s, i_chg_A > 0, t_chg_s, and
    optionally r0_ohm for that cycle).

    Returns (log, truth): log maps BDF column names to arrays (with the optional columns
    named in ``columns``: "cycle", "step", "capacity", "soc"); truth maps
    q_chg_Ah, q_dch_Ah, e_chg_Wh, e_dch_Wh (per cycle) and cycle numbers to arrays.
    """
    state = {"t": 0.0, "z": (0.95 if mode == "half" else 0.05) if z0 is None else z0,
             "v_rc": 0.0, "q_chg": 0.0, "q_dch": 0.0}
    parts, truth = [], {k: [] for k in ("q_chg_Ah", "q_dch_Ah", "e_chg_Wh", "e_dch_Wh")}
    step = 0
    for n, c in enumerate(cycles, start=1):
        state["r0_ohm"] = c.get("r0_ohm", cell.r0_ohm)  # resistance growth over cycles
        order = [(-c["i_dch_A"], c["t_dch_s"]), (c["i_chg_A"], c["t_chg_s"])]
        if mode == "full":
            order.reverse()
        energy = {}
        for i_A, dur in order:
            energy[i_A > 0] = _step_energy_Wh(cell, state["z"], i_A, dur, state["v_rc"], state["r0_ohm"])
            for cur, d in ((i_A, dur), (0.0, rest_s)):
                if d > 0:
                    rec = _run_step(cell, state, cur, d, dt_s, delay_s if parts else 0.0)
                    rec[CYCLE] = np.full(len(rec[T]), n)
                    rec[STEP] = np.full(len(rec[T]), step)
                    step += 1
                    parts.append(rec)
        truth["q_chg_Ah"].append(c["i_chg_A"] * c["t_chg_s"] / 3600.0)
        truth["q_dch_Ah"].append(c["i_dch_A"] * c["t_dch_s"] / 3600.0)
        truth["e_chg_Wh"].append(energy[True])
        truth["e_dch_Wh"].append(energy[False])
    log = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    keep = {T, V, I}
    keep |= {CYCLE} if "cycle" in columns else set()
    keep |= {STEP} if "step" in columns else set()
    keep |= {Q_CHG, Q_DCH} if "capacity" in columns else set()
    if "soc" in columns:
        keep |= {SOC, SOC_STD}
        log[SOC_STD] = np.full(len(log[T]), 0.01)
    out = {k: log[k] for k in log if k in keep}
    truth = {k: np.array(v) for k, v in truth.items()}
    truth["cycle"] = np.arange(1, len(cycles) + 1)
    return out, truth


def rate_test(capacity_Ah, rates_C, per_rate, depth, cell_kwargs=None, **kwargs):
    """A rate-capability log: ``per_rate`` cycles at each C-rate in ``rates_C``; each cycle
    moves ``depth(rate)`` of the capacity (fraction) out and back in. Returns
    (cell, log, truth) with truth also holding the per-cycle ``rate_C``."""
    cell = PlateauCell(capacity_Ah, **(cell_kwargs or {"plateaus_V": (1.55,), "weights": (0.9,)}))
    cycles, rates = [], []
    for rate in rates_C:
        i_A = rate * capacity_Ah
        t_s = depth(rate) * 3600.0 / rate
        cycles += [{"i_dch_A": i_A, "t_dch_s": t_s, "i_chg_A": i_A, "t_chg_s": t_s}] * per_rate
        rates += [rate] * per_rate
    log, truth = make_log(cell, cycles, **kwargs)
    truth["rate_C"] = np.array(rates)
    return cell, log, truth

