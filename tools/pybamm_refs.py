"""Generate the PyBaMM reference set (tests/data/pybamm/): DFN coin cells seen by the board.

Run it through ``make refdata`` (a separate venv, ``.venv-pybamm``, with the pinned PyBaMM of
tools/requirements-pybamm.txt); the tests only read what it writes and never need PyBaMM.

For each reference cell (CELLS: a published PyBaMM parameter set, electrode area scaled to a
coin cell of a few mAh) and each run (RUNS: characterisation shapes and held-out drive
profiles), it

1. solves PyBaMM's DFN model under the run's protocol (currents in A, cut-offs on the true
   terminal voltage), sampled every 1 s (the board's tick; only PyBaMM's output variables
   are kept, so 30 h at 1 s is cheap);
2. keeps what a board would record (every sample for the first 20 s of a step, then one every
   ``record_s``), and measures it as boards/sim.json's board does: 1 mV rms voltage noise plus
   the oversampled RP2040 ADC's quantisation on the voltage path, the current range's
   quantisation and ADC noise on the current path, and a constant current-sense offset of
   0.2 % of 1C;
3. writes ``<cell>/<run>.bdf.csv.gz`` (the Battery Data Format columns the simulated board
   writes, through cellbench.bdflog.record_row, with the board's step, cycle and charge
   counters computed from the *measured* current), its sidecar ``<run>.bdf.csv.gz.json``,
   and ``<run>.truth.csv.gz`` (time, true current, true terminal voltage, true SoC, true
   charge in/out at each log row: cellbench.sim's TRUTH_COLUMNS);
4. writes ``<cell>/cell.json`` (true capacity, window, 1C, offset, OCV(SoC) table) and the
   set's ``index.json``.

True SoC is PyBaMM's thermodynamic one: 0 where the open-circuit voltage is the window's
lower limit, 1 at its upper limit, linear in charge (from the average stoichiometry of the
electrode that defines the cell's capacity). Current in the files is cellbench's sign:
> 0 charges the cell (PyBaMM's is the opposite). A graphite/Li half cell follows the
cellbench convention for half cells: charge = delithiation of graphite = SoC up.
"""

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "host"))
from cellbench.bdflog import header_columns, record_row  # noqa: E402 (the board's own writer)

OUT = ROOT / "tests" / "data" / "pybamm"
BOARD_FILE = ROOT / "boards" / "sim.json"

VOLTAGE_NOISE_V = 1e-3          # rms, added to the true terminal voltage
CURRENT_OFFSET_OF_1C = 2e-3     # constant sense offset, fraction of the 1C current
SEED = 9                        # noise and drive-profile seed (per cell and run, offset below)
TRUTH_COLUMNS = ("t_s", "i_A", "v_V", "soc", "q_chg_Ah", "q_dch_Ah")  # = cellbench.sim's

# Reference cells. capacity_mAh: the coin cell's thermodynamic capacity between the window
# limits (the electrode area is scaled to give it), so 1C is 1.5-3 mA and 2C stays in the
# board's 20 mA range. soc_electrode: the electrode whose stoichiometry defines SoC.
CELLS = {
    "nmc811-chen2020": dict(
        parameter_set="Chen2020", chemistry="NMC811/graphite-SiOx", half=False,
        window_V=(2.5, 4.2), capacity_mAh=3.0, flat=False,
        citation="C.-H. Chen et al., Development of Experimental Techniques for "
                 "Parameterization of Multi-scale Lithium-ion Battery Models, "
                 "J. Electrochem. Soc. 167 (2020) 080534 (LG M50 cell)"),
    "lfp-prada2013": dict(
        parameter_set="Prada2013", chemistry="LFP/graphite", half=False,
        window_V=(2.5, 3.6), capacity_mAh=2.0, flat=True,
        citation="E. Prada et al., A Simplified Electrochemical and Thermal Aging Model of "
                 "LiFePO4-Graphite Li-ion Batteries, J. Electrochem. Soc. 160 (2013) A616 "
                 "(A123 ANR26650M1; OCVs from M. Lain et al. 2019)"),
    "lco-marquis2019": dict(
        parameter_set="Marquis2019", chemistry="LCO/graphite", half=False,
        window_V=(3.105, 4.1), capacity_mAh=2.5, flat=False,
        citation="S. G. Marquis et al., An asymptotic derivation of a single particle model "
                 "with electrolyte, J. Electrochem. Soc. 166 (2019) A3693 (Kokam SLPB 75106100 "
                 "parameters from Ecker et al. 2015 and Scott Moura's fastDFN)"),
    "gr-li-ecker2015": dict(
        parameter_set="Ecker2015_graphite_halfcell", chemistry="graphite/Li", half=True,
        window_V=(0.01, 1.5), capacity_mAh=1.5, flat=True,
        citation="M. Ecker et al., Parameterization of a physico-chemical model of a lithium-ion "
                 "battery I/II, J. Electrochem. Soc. 162 (2015) A1836/A1849; half-cell set as in "
                 "PyBaMM (graphite working electrode vs Li metal, Richardson et al. 2020)"),
}


# ---------------------------------------------------------------------------------------
# Protocols. A step: dict(kind "rest"|"cc", c (C-rate, > 0 charges), s (duration s),
# until_V (cut-off in the direction of the current; None for none), idx (protocol step
# index), record_s (record interval after the first 20 s), period_s (solver output period)).

def rest(s, idx, record_s=30.0, period_s=1.0):
    return dict(kind="rest", c=0.0, s=float(s), until_V=None, idx=idx, record_s=record_s,
                period_s=period_s)


def cc(c, s, idx, until_V=None, record_s=10.0, period_s=1.0):
    return dict(kind="cc", c=float(c), s=float(s), until_V=until_V, idx=idx, record_s=record_s,
                period_s=period_s)


def slow(c, lim, idx):
    """A C/20-ish constant-current sweep to a window limit (at most 30 h)."""
    return cc(c, 30 * 3600, idx, until_V=lim, record_s=60.0)


def run_c20_charged(cell, rng):
    lo, hi = cell["window_V"]
    return 1.0, [rest(1800, 0), slow(-1 / 20, lo, 1), rest(7200, 2),
                 slow(1 / 20, hi, 3), rest(7200, 4)]


def run_c20_discharged(cell, rng):
    lo, hi = cell["window_V"]
    return 0.0, [rest(1800, 0), slow(1 / 20, hi, 1), rest(7200, 2),
                 slow(-1 / 20, lo, 3), rest(7200, 4)]


def run_gitt(cell, rng):
    """Galvanostatic intermittent titration, discharging: C/10 for 30 min (5 % SoC), 1 h rest."""
    lo, _ = cell["window_V"]
    steps = [rest(1800, 0)]
    for _ in range(21):
        steps += [cc(-0.1, 1800, 1, lo, record_s=30.0), rest(3600, 2)]
    return 1.0, steps


def pulse_block(lo, hi, idx0, pulses):
    """Pulses (C-rate, duration s) each followed by a 60 s rest."""
    steps = []
    for k, (c, s) in enumerate(pulses):
        steps += [cc(c, s, idx0 + 2 * k, lo if c < 0 else hi, record_s=1.0), rest(60, idx0 + 2 * k + 1, record_s=5.0)]
    return steps


def run_hppc(cell, rng):
    """HPPC every 10 % SoC from full: 1C discharge 10 s and 0.75C charge 10 s pulses, then
    10 % at C/2 and a 1 h rest."""
    lo, hi = cell["window_V"]
    steps = [rest(1800, 0)]
    for _ in range(10):
        steps += pulse_block(lo, hi, 1, [(-1.0, 10), (0.75, 10)])
        steps += [cc(-0.5, 720, 5, lo), rest(3600, 6)]
    return 1.0, steps


def run_char_log(cell, rng):
    """The issue's ordinary characterisation log: from charged, C/20 discharge to the bottom
    limit, 1 h rest, C/20 charge to the top, 1 h rest, then every 10 % SoC a pulse train
    (1C and 0.5C pulses both ways) and a C/2 step of 10 %, each followed by a rest."""
    lo, hi = cell["window_V"]
    steps = [slow(-1 / 20, lo, 0), rest(3600, 1), slow(1 / 20, hi, 2), rest(3600, 3)]
    for _ in range(10):
        steps += pulse_block(lo, hi, 4, [(-1.0, 10), (1.0, 10), (-0.5, 30), (0.5, 30)])
        steps += [cc(-0.5, 720, 12, lo), rest(1800, 13)]
    return 1.0, steps


class Drive:
    """Held-out drive profile: seeded random segments of 10-300 s at -2C..+1C or rest (about a
    quarter of them), steered by the cell's true SoC along a line from soc0 to soc_end over
    ``hours`` (planned 20 min at a time, each chunk from the state the last one left), so that
    it ends below 10 % SoC; every segment also stops at the window limits."""

    chunk_s = 1200.0

    def __init__(self, cell, rng, hours=6.0, soc0=0.95, soc_end=0.03, via=None, c_up_min=-0.6):
        self.lo, self.hi = cell["window_V"]
        self.rng, self.total, self.soc0, self.soc_end = rng, hours * 3600.0, soc0, soc_end
        self.via = via              # (hours, SoC) waypoint between the start and the end
        self.c_up_min = c_up_min    # lowest rate drawn when below the path (C)
        self.t = 0.0

    def target(self):
        """The SoC the path asks for now."""
        if self.via is None:
            return self.soc0 + (self.soc_end - self.soc0) * self.t / self.total
        return float(np.interp(self.t, [0.0, self.via[0] * 3600.0, self.total],
                               [self.soc0, self.via[1], self.soc_end]))

    def first(self):
        self.t = 300.0
        return [rest(300, 0, record_s=1.0)]

    def next(self, soc):
        """The next chunk's steps from the true SoC now ([] when the profile is done)."""
        if self.t >= self.total:
            return []
        rng, steps, end = self.rng, [], min(self.total, self.t + self.chunk_s)
        while self.t < end:
            s = float(np.exp(rng.uniform(np.log(10.0), np.log(300.0))))
            s = max(10.0, min(s, end - self.t)) if end - self.t >= 10.0 else s
            target = self.target()
            if rng.uniform() < 0.25:
                steps.append(rest(s, 1, record_s=1.0))
            else:
                # discharge up to 2C, less near empty where a 2C pulse only meets the limit
                c_min = -float(np.clip((soc - 0.05) / 0.1, 0.25, 2.0))
                if soc > target + 0.02:
                    c = rng.uniform(c_min, 0.15 * -c_min)
                elif soc < target - 0.02:
                    c = rng.uniform(self.c_up_min, 1.0)
                else:
                    c = rng.uniform(c_min, min(1.0, -c_min))
                # keep the planned SoC inside 1-98 % (the voltage limits stop the rest)
                room = (soc - 0.01) if c < 0 else (0.98 - soc)
                s = min(s, max(10.0, room * 3600 / abs(c)))
                soc += c * s / 3600.0
                steps.append(cc(c, s, 2 if c < 0 else 3, self.lo if c < 0 else self.hi, record_s=1.0))
            self.t += s
        if self.t >= self.total:
            steps.append(rest(600, 4, record_s=1.0))
        return steps


def run_drive(cell, rng):
    return 0.95, Drive(cell, rng)


def run_drive_b(cell, rng):
    """A second held-out profile: from a rested SoC 0.5 up to 0.9 in 2 h, then down below 10 %."""
    return 0.5, Drive(cell, rng, via=(2.0, 0.9), soc_end=0.04, c_up_min=-0.3)


RUNS = {
    "c20-charged": (run_c20_charged, "characterisation: from charged (rested at SoC 1), C/20 "
                    "discharge to the lower limit, 2 h rest, C/20 charge to the upper limit, 2 h rest"),
    "c20-discharged": (run_c20_discharged, "characterisation: from discharged (rested at SoC 0), "
                       "C/20 charge to the upper limit, 2 h rest, C/20 discharge to the lower limit, 2 h rest"),
    "gitt": (run_gitt, "characterisation: GITT from charged, C/10 for 30 min then 1 h rest, "
             "until the lower limit"),
    "hppc": (run_hppc, "characterisation: HPPC from charged, every 10 % SoC a 1C 10 s discharge "
             "and a 0.75C 10 s charge pulse (60 s rests), then 10 % at C/2 and 1 h rest"),
    "char-log": (run_char_log, "characterisation (the issue's ordinary log): from charged, C/20 "
                 "discharge to the lower limit, 1 h rest, C/20 charge to the upper limit, 1 h rest, "
                 "then every 10 % SoC pulses of 1C and 0.5C both ways (10 s / 30 s, 60 s rests) "
                 "and a C/2 step of 10 % with 30 min rest, until the lower limit"),
    "drive": (run_drive, "held out: seeded random drive profile, 6 h of 10-300 s segments at "
              "-2C..+1C or rest, from a rested SoC 0.95 down to about 0.05"),
    "drive-b": (run_drive_b, "held out: a second seeded random drive profile like drive, from a "
                "rested SoC 0.5 up to about 0.9 in 2 h, then down to about 0.05 at 6 h"),
}
HELD_OUT = ("drive", "drive-b")
HELD_OUT_SOC_BELOW = 0.10


# ---------------------------------------------------------------------------------------
# PyBaMM

def parameters(cell):
    """(pybamm model, ParameterValues scaled to the coin cell, info dict)."""
    import pybamm

    opts = {"working electrode": "positive"} if cell["half"] else {}
    model = pybamm.lithium_ion.DFN(opts)
    pv = pybamm.ParameterValues(cell["parameter_set"])
    lo, hi = cell["window_V"]
    # The window defines SoC 0 and 1 (OCV); the model's own cut-offs sit outside it so that
    # only the protocol's limits (on the terminal voltage) end a step.
    pv.update({"Open-circuit voltage at 0% SOC [V]": lo, "Open-circuit voltage at 100% SOC [V]": hi,
               "Lower voltage cut-off [V]": max(lo - 0.5, -0.2) if not cell["half"] else -0.3,
               "Upper voltage cut-off [V]": hi + 0.5}, check_already_exists=False)
    el = "Positive" if cell["half"] else "Negative"
    s0, s1 = stoichiometry_window(pv, cell, opts)
    q_full = electrode_capacity_Ah(pv, el) * abs(s1 - s0)
    scale = cell["capacity_mAh"] * 1e-3 / q_full
    pv.update({"Electrode width [m]": pv["Electrode width [m]"] * scale})
    q_Ah = electrode_capacity_Ah(pv, el) * abs(s1 - s0)
    pv.update({"Nominal cell capacity [A.h]": q_Ah})
    area = pv["Electrode width [m]"] * pv["Electrode height [m]"]
    info = dict(capacity_Ah=q_Ah, soc_electrode=el.lower(), stoich_soc0=s0, stoich_soc1=s1,
                electrode_area_m2=area, options=opts)
    return model, pv, info


def stoichiometry_window(pv, cell, opts):
    """Average stoichiometry of the SoC-defining electrode at SoC 0 and SoC 1."""
    import pybamm

    if cell["half"]:
        s0 = pybamm.lithium_ion.get_initial_stoichiometry_half_cell(0.0, pv, options=opts)["x"]
        s1 = pybamm.lithium_ion.get_initial_stoichiometry_half_cell(1.0, pv, options=opts)["x"]
        return float(s0), float(s1)
    x0, x100, _, _ = pybamm.lithium_ion.get_min_max_stoichiometries(pv)
    return float(x0), float(x100)


def electrode_capacity_Ah(pv, el):
    """Lithium capacity of an electrode's active material (Ah): c_max eps L A F / 3600."""
    F = 96485.33212
    eps = pv[f"{el} electrode active material volume fraction"]
    c_max = pv[f"Maximum concentration in {el.lower()} electrode [mol.m-3]"]
    L = pv[f"{el} electrode thickness [m]"]
    area = pv["Electrode width [m]"] * pv["Electrode height [m]"]
    return float(c_max * eps * L * area * F / 3600.0)


def simulate(model, pv, info, soc0, plan, one_c_A):
    """Solve the DFN from a rested ``soc0`` through ``plan``: a list of steps, or a planner
    (``first()``, then ``next(true_soc)`` until it returns []) run chunk by chunk from the
    state the last chunk left. Returns (steps run, one tuple per step: start time s, then
    arrays t_s, i_A (cellbench sign), v_V, soc of the samples after the start)."""
    import pybamm

    solver = pybamm.IDAKLUSolver(output_variables=[
        "Time [s]", "Current [A]", "Voltage [V]",
        f"Average {info['soc_electrode']} particle stoichiometry"])
    chunk = plan if isinstance(plan, list) else plan.first()
    steps, out, sol, done = [], [], None, 0
    while chunk:
        sim = pybamm.Simulation(model, parameter_values=pv, experiment=experiment(chunk, one_c_A),
                                solver=solver)
        sol = sim.solve(initial_soc=soc0) if sol is None else sim.solve(starting_solution=sol)
        subs = [s for cyc in sol.cycles if cyc is not None for s in cyc.steps][done:]
        done += len(subs)
        out += _align(chunk, subs, info, one_c_A)
        steps += chunk
        if not isinstance(plan, list):
            chunk = plan.next(float(next(p[4][-1] for p in reversed(out) if p[4].size)))
        else:
            chunk = []
    return steps, out


def _align(chunk, subs, info, one_c_A):
    """Samples per step of ``chunk`` from PyBaMM's step solutions ``subs``. PyBaMM skips a
    step whose cut-off holds already at its start (a pulse at the limit): that step gets
    no samples, the board would have ended it at once."""
    out, k = [], 0
    for st in chunk:
        if k < len(subs):
            t0, t, i, v, z = _samples(subs[k], info)
            if t.size and abs(float(np.median(i)) - st["c"] * one_c_A) <= 1e-6 * one_c_A + 1e-12:
                out.append((t0, t, i, v, z))
                k += 1
                continue
        if st["kind"] == "rest":
            raise RuntimeError("PyBaMM skipped a rest step")
        last = out[-1][1][-1] if out else 0.0
        out.append((last, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)))
    if k != len(subs):
        raise RuntimeError(f"PyBaMM ran {len(subs)} steps, {k} of them matched ours")
    return out


def experiment(steps, one_c_A):
    """The PyBaMM Experiment of our steps (its current is > 0 on discharge)."""
    import pybamm

    pstep = []
    for st in steps:
        if st["kind"] == "rest":
            pstep.append(pybamm.step.rest(st["s"], period=st["period_s"]))
            continue
        term = None
        if st["until_V"] is not None:
            term = f"{'<' if st['c'] < 0 else '>'} {st['until_V']} V"
        pstep.append(pybamm.step.current(-st["c"] * one_c_A, duration=st["s"], termination=term,
                                         period=st["period_s"]))
    return pybamm.Experiment(pstep)


def _samples(sub, info):
    t = sub["Time [s]"].entries
    i = -sub["Current [A]"].entries
    v = sub["Voltage [V]"].entries
    s = sub[f"Average {info['soc_electrode']} particle stoichiometry"].entries
    z = (s - info["stoich_soc0"]) / (info["stoich_soc1"] - info["stoich_soc0"])
    keep = t > t[0]
    return (t[0], t[keep], i[keep], v[keep], z[keep])


# ---------------------------------------------------------------------------------------
# The board: what it records and how it measures (boards/sim.json)

class Board:
    """Measurement path of boards/sim.json: oversampled 12-bit RP2040 ADC on both channels."""

    def __init__(self, board):
        adc = board["adc"]
        n = int(board["oversample"])
        lsb_V = adc["vref_V"] / 4096.0
        self.v_step_V = lsb_V / n / board["voltage"]["divider"]   # the summed codes' LSB
        self.noise_lsb = float(board["sim"]["adc_noise_lsb"]) / np.sqrt(n)  # rms of the mean
        cur = board["current"]
        self.ranges = [(r["full_scale_mA"] * 1e-3, lsb_V / (r["sense_ohm"] * r["gain"]) / n)
                       for r in cur["ranges"]]
        self.margin = float(cur["range_margin"])

    def voltage(self, v_V, rng):
        """Measured voltage: 1 mV rms noise, then the oversampled ADC's LSB, in integer uV."""
        v = v_V + rng.normal(0.0, VOLTAGE_NOISE_V, v_V.size)
        return np.round(np.round(v / self.v_step_V) * self.v_step_V * 1e6).astype(np.int64)

    def current(self, i_A, offset_A, rng):
        """Measured current in integer nA: the range the setpoint selects, its ADC noise and
        LSB, plus the sense offset."""
        out = np.empty(i_A.size, dtype=np.int64)
        fs = np.array([r[0] for r in self.ranges])
        for k, i in enumerate(i_A):
            ok = np.flatnonzero(abs(i) <= self.margin * fs)
            step = self.ranges[ok[0] if ok.size else len(fs) - 1][1]
            x = i + offset_A + rng.normal(0.0, self.noise_lsb * step)
            out[k] = int(round(round(x / step) * step * 1e9))
        return out


def thin(t_rel, record_s):
    """Indices a board recording every ``record_s`` keeps: every sample in a step's first
    20 s, then one per record interval, and always the step's last sample."""
    if t_rel.size == 0:
        return np.zeros(0, dtype=int)
    slot = np.floor((t_rel - 20.0) / record_s + 1e-9)
    keep = (t_rel <= 20.0) | np.concatenate(([True], np.diff(slot) > 0))
    keep[-1] = True
    return np.flatnonzero(keep)


STEP_TYPE = {0: 0, 1: 1, -1: 2}   # sign -> board step_type (REST, CC_CHG, CC_DCH)


def board_rows(parts, steps, one_c_A, board, rng, start_unix_s):
    """The log rows (board record dicts) and truth rows of a run."""
    offset_A = CURRENT_OFFSET_OF_1C * one_c_A
    recs, truth = [], []
    t_prev = 0.0
    q_chg = q_dch = e_chg = e_dch = 0.0       # measured counters (Ah, Wh)
    tq_chg = tq_dch = 0.0                     # true counters (Ah)
    t_true_prev = 0.0
    cycle, first_sign, last_sign = 1, 0, 0
    seq = 0
    for count, ((t_start, t, i, v, z), st) in enumerate(zip(parts, steps), start=1):
        if t.size == 0:
            continue
        sign = int(np.sign(st["c"]))
        if sign:
            if first_sign == 0:
                first_sign = sign
            elif sign == first_sign and last_sign == -first_sign:
                cycle += 1
            last_sign = sign
        # true charge counters from the solver's dense output (every sample, before thinning)
        dt_all = np.diff(np.concatenate(([t_true_prev], t)))
        dq_true = i * dt_all / 3600.0   # constant within the step, so the interval ending at t
        tq_chg_all = tq_chg + np.cumsum(np.where(dq_true > 0, dq_true, 0.0))
        tq_dch_all = tq_dch - np.cumsum(np.where(dq_true < 0, dq_true, 0.0))
        tq_chg, tq_dch = tq_chg_all[-1], tq_dch_all[-1]
        t_true_prev = t[-1]
        idx = thin(t - t_start, st["record_s"])
        tk, ik, vk, zk = t[idx], i[idx], v[idx], z[idx]
        v_uV = board.voltage(vk, rng)
        i_nA = board.current(ik, offset_A, rng)
        q_step = 0.0
        for m in range(tk.size):
            dt = tk[m] - t_prev
            # the board integrates its measured current over each interval
            dq = i_nA[m] * 1e-9 * dt / 3600.0
            de = dq * v_uV[m] * 1e-6
            if dq > 0:
                q_chg += dq
                e_chg += de
            else:
                q_dch -= dq
                e_dch -= de
            q_step += abs(dq)
            t_prev = tk[m]
            recs.append(dict(t_ms=int(round(tk[m] * 1000)), v_uV=int(v_uV[m]), i_nA=int(i_nA[m]),
                             cycle=cycle, step_count=count, step_index=st["idx"],
                             step_type=STEP_TYPE[sign], q_chg_nAh=int(round(q_chg * 1e9)),
                             q_dch_nAh=int(round(q_dch * 1e9)), q_step_nAh=int(round(q_step * 1e9)),
                             e_chg_uWh=int(round(e_chg * 1e6)), e_dch_uWh=int(round(e_dch * 1e6)),
                             fault=0, seq=seq))
            seq += 1
        truth.append(np.column_stack([tk, ik, vk, zk, tq_chg_all[idx], tq_dch_all[idx]]))
    return recs, np.concatenate(truth)


# ---------------------------------------------------------------------------------------
# Files

def write_gz_text(path, lines):
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:
        f.write("".join(lines).encode())


def write_log(path, recs, start_unix_s):
    header = ",".join(header_columns(False)) + "\n"
    write_gz_text(path, [header] + [",".join(record_row(r, start_unix_s, False)) + "\n" for r in recs])


def write_truth(path, truth):
    fmt = ("{:.3f}", "{:.9e}", "{:.6f}", "{:.6f}", "{:.9e}", "{:.9e}")
    truth = truth + 0.0   # no "-0" in the file
    lines = [",".join(TRUTH_COLUMNS) + "\n"]
    lines += [",".join(f.format(x) for f, x in zip(fmt, row)) + "\n" for row in truth]
    write_gz_text(path, lines)


def ocv_table(pv, info, cell, n=101):
    """True OCV (V) on a uniform SoC grid: the electrodes' OCPs at the rested stoichiometries."""
    import pybamm

    soc = np.linspace(0.0, 1.0, n)
    ocv = []
    for z in soc:
        if cell["half"]:
            y = info["stoich_soc0"] + z * (info["stoich_soc1"] - info["stoich_soc0"])
            ocv.append(_ocp(pv, "Positive", y))
        else:
            x, y = pybamm.lithium_ion.get_initial_stoichiometries(float(z), pv)
            ocv.append(_ocp(pv, "Positive", y) - _ocp(pv, "Negative", x))
    return soc, np.array(ocv)


def _ocp(pv, el, sto):
    import pybamm

    T = pv["Reference temperature [K]"]
    fn = pv[f"{el} electrode OCP [V]"]
    if callable(fn):
        expr = fn(pybamm.Scalar(float(sto))) if fn.__code__.co_argcount == 1 else \
            fn(pybamm.Scalar(float(sto)), pybamm.Scalar(T))
        return float(pv.process_symbol(expr).evaluate())
    return float(fn)


def generate(cell_names, run_names, out):
    import pybamm

    board_cfg = json.loads(BOARD_FILE.read_text())
    board = Board(board_cfg)
    index = {"pybamm_version": pybamm.__version__, "cells": {}}
    for name in cell_names:
        ci = list(CELLS).index(name)   # seeds and start times do not depend on the selection
        cell = CELLS[name]
        model, pv, info = parameters(cell)
        one_c_A = info["capacity_Ah"]          # 1C = the true capacity in one hour
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        soc, ocv = ocv_table(pv, info, cell)
        desc = dict(name=name, parameter_set=cell["parameter_set"], chemistry=cell["chemistry"],
                    half_cell=cell["half"], flat=cell["flat"], citation=cell["citation"],
                    window_V=list(cell["window_V"]), capacity_Ah=info["capacity_Ah"],
                    one_c_A=one_c_A, current_offset_A=CURRENT_OFFSET_OF_1C * one_c_A,
                    voltage_noise_V=VOLTAGE_NOISE_V, electrode_area_m2=info["electrode_area_m2"],
                    soc_electrode=info["soc_electrode"],
                    stoichiometry_soc0_soc1=[info["stoich_soc0"], info["stoich_soc1"]],
                    model="pybamm.lithium_ion.DFN" + (" (working electrode: positive)" if cell["half"] else ""),
                    ocv={"soc": soc.round(4).tolist(), "voltage_V": ocv.round(6).tolist()},
                    runs={})
        skipped = set()
        for run in run_names:
            ri = list(RUNS).index(run)
            make, what = RUNS[run]
            rng = np.random.default_rng([SEED, ci, ri])
            soc0, plan = make(cell, rng)
            t0 = time.time()
            steps, parts = simulate(model, pv, info, soc0, plan, one_c_A)
            start_unix = 1.8e9 + 1e6 * ci + 1e5 * ri
            recs, truth = board_rows(parts, steps, one_c_A, board, rng, start_unix)
            if run in HELD_OUT and truth[:, 3].min() >= HELD_OUT_SOC_BELOW:
                # the held-out profiles reach below 10 % SoC; one that the cell's
                # limits kept higher is left out of the set
                print(f"{name} {run}: true SoC stays above {HELD_OUT_SOC_BELOW:g}; not written")
                skipped.add(run)
                continue
            log = folder / f"{run}.bdf.csv.gz"
            write_log(log, recs, start_unix)
            write_truth(folder / f"{run}.truth.csv.gz", truth)
            meta = sidecar(name, cell, info, run, what, soc0, board_cfg, start_unix, recs)
            (folder / f"{run}.bdf.csv.gz.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            desc["runs"][run] = dict(what=what, held_out=run in HELD_OUT, soc0=soc0, rows=len(recs),
                                     hours=round(truth[-1, 0] / 3600.0, 3),
                                     soc_min=float(truth[:, 3].min()), soc_max=float(truth[:, 3].max()))
            print(f"{name} {run}: {len(recs)} rows, {truth[-1, 0] / 3600:.1f} h, SoC "
                  f"{truth[:, 3].min():.3f}..{truth[:, 3].max():.3f}, {time.time() - t0:.1f} s",
                  flush=True)
        # runs not made this time keep their entries (a partial regeneration, --runs)
        before = json.loads((folder / "cell.json").read_text())["runs"] if (folder / "cell.json").is_file() else {}
        desc["runs"] = {r: desc["runs"].get(r) or before[r] for r in RUNS
                        if (r in desc["runs"] or r in before) and r not in skipped}
        for r in skipped:
            for f in (f"{r}.bdf.csv.gz", f"{r}.bdf.csv.gz.json", f"{r}.truth.csv.gz"):
                (folder / f).unlink(missing_ok=True)
        (folder / "cell.json").write_text(json.dumps(desc, indent=1) + "\n")
        index["cells"][name] = {k: desc[k] for k in ("parameter_set", "chemistry", "half_cell", "flat",
                                                    "capacity_Ah", "window_V")}
    return index


def sidecar(name, cell, info, run, what, soc0, board_cfg, start_unix, recs):
    """The log's sidecar: what a simulated-board run writes, plus where it came from."""
    return {
        "board": board_cfg["id"],
        "firmware": None,
        "source": "PyBaMM DFN reference (tools/pybamm_refs.py); not run through the firmware",
        "protocol": {"sample": {"name": f"{name} ({cell['chemistry']}, PyBaMM {cell['parameter_set']})",
                                "capacity_mAh": round(info["capacity_Ah"] * 1e3, 6)},
                     "description": what},
        "model": {"cell": {"name": name, "chemistry": cell["chemistry"]}},
        "truth": f"{run}.truth.csv.gz",
        "soc0": soc0,
        "started_unix_s": start_unix,
        "ended_unix_s": start_unix + recs[-1]["t_ms"] / 1000.0,
        "rows": len(recs),
        "events": [],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--cells", nargs="*", default=list(CELLS), choices=list(CELLS))
    ap.add_argument("--runs", nargs="*", default=list(RUNS), choices=list(RUNS))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    index = generate(args.cells, args.runs, args.out)
    if args.cells == list(CELLS):
        (args.out / "index.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    main()
