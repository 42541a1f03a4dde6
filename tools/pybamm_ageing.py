"""Generate the PyBaMM ageing reference (tests/data/pybamm-ageing/): a coin-size cell whose
SEI grows over 100 cycles, as the board would log it.

Run it in the PyBaMM venv of tools/requirements-pybamm.txt (``.venv-pybamm/bin/python
tools/pybamm_ageing.py``); tests and the host twin only read what it writes.

The cell is PyBaMM's ``OKane2022`` set (LG M50, NMC811 / graphite-SiOx, with SEI and
plating parameters; O'Kane et al., Phys. Chem. Chem. Phys. 24 (2022) 7909) scaled to a
coin cell of 3 mAh between 2.5 and 4.2 V by the electrode area, solved with the single
particle model with electrolyte (SPMe) and the solvent-diffusion-limited SEI submodel.
SEI growth is accelerated (``SEI_ACCELERATION`` times the set's solvent diffusivity) so
that 100 cycles lose about 15 % of the capacity, fast at first, then slower (the scale and
shape of the paper's cells).

Protocol: a C/10 capacity check (charge to 4.2 V, rest, discharge to 2.5 V, rest, charge to
4.2 V, rest), then
``BLOCKS`` blocks of ``CYCLES_PER_BLOCK`` cycles at 1C (CC discharge to 2.5 V, rest, CC
charge to 4.2 V, rest), each followed by another C/10 check. Everything else (what the
board records and how it measures, the file formats) is tools/pybamm_refs.py's.

Writes ``ageing.bdf.csv.gz`` (BDF log), its sidecar, ``ageing.truth.csv.gz`` (TRUTH_COLUMNS
at each log row) and ``cell.json`` (the cell, and per C/10 check the true discharge
capacity, Ah: the capacity the host twin should track; and per check the cell's lithium
inventory, the OCV window's capacity and its true OCV on ``ocv_soc``: aged_ocv, how far
the lost lithium bends the OCV(SoC) a fresh cell's model holds).

``--pulses`` writes the resistance reference instead (tests/data/pybamm-ageing-r/): the
same cell and SEI (its film resistance, distributed through the electrode, stated
explicitly), every step sampled at the board's 1 s tick, RESISTANCE_REST_S rests after the
1C halves (the resistance estimator needs 4 time constants of the model's rc[0] held
before an edge and 4 after it, firmware/resistance.py: enough for a tau up to 300 s; the
fit finds 40 s), and after each C/10 check a pulse block
(PULSE_STEPS): to a set depth below the top at 1C, a rest, a 1C discharge pulse, a rest, a
1C charge pulse back, a rest. Its cell.json adds, per check, PyBaMM's resistance from the
noise-free pulses (pulse_resistance): what the board's resistance estimate is checked
against.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pybamm_refs as refs  # noqa: E402  (the reference set's board, files and solver glue)

OUT = refs.ROOT / "tests" / "data" / "pybamm-ageing"
CELL = dict(parameter_set="OKane2022", chemistry="NMC811/graphite-SiOx", half=False,
            window_V=(2.5, 4.2), capacity_mAh=3.0, flat=False,
            citation="S. E. J. O'Kane et al., Lithium-ion battery degradation: how to model it, "
                     "Phys. Chem. Chem. Phys. 24 (2022) 7909 (LG M50; Chen et al. 2020 base set)")
OPTIONS = {"SEI": "solvent-diffusion limited"}
# The resistance reference: the SEI's film resistance (its ionic resistivity times its
# thickness, distributed over the electrode's surface) is PyBaMM's default with an SEI
# model; named here because it is what makes the resistance grow.
OPTIONS_R = {"SEI": "solvent-diffusion limited", "SEI film resistance": "distributed"}
OUT_R = refs.ROOT / "tests" / "data" / "pybamm-ageing-r"
RESISTANCE_REST_S = 1200.0
# The pulse block after each check (idx 16-21): (C-rate, duration s), 0 a rest. 1440 s at
# 1C from the top is 40 % of the fresh capacity; the pulses are at the cycling's 1C (the
# cell's charge transfer is Butler-Volmer, its resistance depends on the current).
PULSE_STEPS = ((-1.0, 1440.0), (0.0, 3600.0), (-1.0, 900.0), (0.0, 3600.0), (1.0, 900.0),
               (0.0, 3600.0))
PULSE_IDX = 16
# Times after a pulse's edge (s) at which pulse_resistance reports dV/dI.
PULSE_T_S = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 800)
SEI_ACCELERATION = 10000.0
BLOCKS = 4
CYCLES_PER_BLOCK = 25
REST_S = 600.0
SEED = 21
OCV_SOC = [round(0.05 * k, 2) for k in range(21)]  # SoC grid of cell.json's check_ocv_V
SOC0 = 0.5   # every check, the first too, starts from the C/10 top-up charge


def check_cycle(lo, hi, period_s=10.0):
    """A C/10 top-up charge (after a 1C charge the cell is not full), then a C/10
    discharge and charge between the window limits (idx 14, 15, 10-13)."""
    return [refs.cc(0.1, 15 * 3600, 14, until_V=hi, record_s=120.0, period_s=period_s),
            refs.rest(REST_S, 15),
            refs.cc(-0.1, 15 * 3600, 10, until_V=lo, record_s=120.0, period_s=period_s),
            refs.rest(REST_S, 11),
            refs.cc(0.1, 15 * 3600, 12, until_V=hi, record_s=120.0, period_s=period_s),
            refs.rest(REST_S, 13)]


def fast_cycle(lo, hi, rest_s=REST_S, period_s=5.0):
    """A 1C discharge and charge between the window limits (idx 1-4)."""
    return [refs.cc(-1.0, 2 * 3600, 1, until_V=lo, record_s=30.0, period_s=period_s),
            refs.rest(rest_s, 2),
            refs.cc(1.0, 2 * 3600, 3, until_V=hi, record_s=30.0, period_s=period_s),
            refs.rest(rest_s, 4)]


def pulse_block(lo, hi):
    """PULSE_STEPS at the board's 1 s tick (idx PULSE_IDX on)."""
    return [refs.rest(s, PULSE_IDX + k, period_s=1.0) if c == 0 else
            refs.cc(c, s, PULSE_IDX + k, until_V=lo if c < 0 else hi, record_s=30.0, period_s=1.0)
            for k, (c, s) in enumerate(PULSE_STEPS)]


def plan(blocks, per_block, pulses=False):
    """The run's steps; ``pulses``: the resistance reference's (module docstring)."""
    lo, hi = CELL["window_V"]
    if pulses:
        def check():
            return check_cycle(lo, hi, period_s=1.0) + pulse_block(lo, hi)

        def fast():
            return fast_cycle(lo, hi, RESISTANCE_REST_S, period_s=1.0)
    else:
        def check():
            return check_cycle(lo, hi)

        def fast():
            return fast_cycle(lo, hi)
    steps = [refs.rest(REST_S, 0)] + check()
    for _ in range(blocks):
        for _ in range(per_block):
            steps += fast()
        steps += check()
    return steps


def model_and_parameters(options=None):
    """(SPMe with SEI growth, the coin-scaled ParameterValues, info) via pybamm_refs."""
    import pybamm

    _, pv, info = refs.parameters(CELL)
    pv.update({"SEI solvent diffusivity [m2.s-1]": pv["SEI solvent diffusivity [m2.s-1]"] * SEI_ACCELERATION})
    return pybamm.lithium_ion.SPMe(dict(options or OPTIONS)), pv, info  # PyBaMM rewrites the dict it gets


def check_capacities(steps, parts):
    """True discharge capacity (Ah) of each C/10 check (from the solver's current)."""
    out = []
    for st, (t0, t, i, _, _) in zip(steps, parts):
        if st["idx"] == 10 and t.size:
            dt = np.diff(np.concatenate(([t0], t)))
            out.append(float(-np.sum(i * dt) / 3600.0))
    return out


def _ocp(pv, el, sto):
    """An electrode's OCP (V) at stoichiometry ``sto`` (the set's function, at its
    reference temperature)."""
    import pybamm

    fn = pv[f"{el} electrode OCP [V]"]
    args = [pybamm.Scalar(float(sto))]
    if fn.__code__.co_argcount > 1:
        args.append(pybamm.Scalar(pv["Reference temperature [K]"]))
    return float(np.ravel(pv.process_symbol(fn(*args)).evaluate())[0])


def aged_ocv(pv, info, steps, parts):
    """The cell's true OCV on OCV_SOC at each C/10 check, from PyBaMM's own state.

    SEI growth takes cyclable lithium (loss of lithium inventory, LLI): the electrodes
    slip against each other, so the window's capacity shrinks and the OCV between its
    ends changes shape. The cell's lithium Q_Li = x Q_n + y Q_p (Ah; x, y the electrodes'
    average stoichiometries) fixes both window ends, x0 at the lower limit and x100 at the
    upper (U_p((Q_Li - x Q_n)/Q_p) - U_n(x) = limit). It is read at the end of the rest
    after each check's C/10 charge to the top (a rest that relaxes to ~1 mV there: x from
    the truth's SoC, y solving U_p(y) - U_n(x) = the rested voltage), and carried back to
    the end of the rest after the check's C/10 discharge (the moment the board has just
    measured the capacity; that rest does not relax at the bottom) by adding the lithium
    the SEI took in between: the charge passed less Q_n times x's rise. Returns (the time
    of the bottom rest's end s, Q_Li Ah, the OCV window's capacity (x100 - x0) Q_n Ah, OCV
    V on OCV_SOC), each a list with one entry per check."""
    from scipy.optimize import brentq

    q_n, q_p = refs.electrode_capacity_Ah(pv, "Negative"), refs.electrode_capacity_Ah(pv, "Positive")
    s0, s1 = info["stoich_soc0"], info["stoich_soc1"]

    def cell_V(q_li, x):
        return _ocp(pv, "Positive", (q_li - x * q_n) / q_p) - _ocp(pv, "Negative", x)

    out = ([], [], [], [])
    for k, st in enumerate(steps):
        if st["idx"] != 11:
            continue
        (_, t_lo, _, _, z_lo), (t0, t, i, _, _), (_, _, _, v_hi, z_hi) = parts[k:k + 3]
        x_lo, x_hi = (s0 + z[-1] * (s1 - s0) for z in (z_lo, z_hi))
        u_hi = _ocp(pv, "Negative", x_hi) + float(v_hi[-1])   # U_p at the rested top
        y_hi = brentq(lambda y, u=u_hi: _ocp(pv, "Positive", y) - u, 1e-3, 0.999)
        charged_Ah = float(np.sum(i * np.diff(np.concatenate(([t0], t)))) / 3600.0)
        q_li = x_hi * q_n + y_hi * q_p + (charged_Ah - (x_hi - x_lo) * q_n)
        x_max = min(0.9999, q_li / q_n - 1e-6)
        x0, x100 = (brentq(lambda x, q=q_li, lim=lim: cell_V(q, x) - lim, 1e-4, x_max)
                    for lim in CELL["window_V"])
        out[0].append(float(t_lo[-1]))
        out[1].append(q_li)
        out[2].append((x100 - x0) * q_n)
        out[3].append([round(cell_V(q_li, x0 + u * (x100 - x0)), 5) for u in OCV_SOC])
    return out


def pulse_resistance(pv, info, steps, parts):
    """PyBaMM's resistance at each check, from the noise-free samples of the check's 1C
    pulses (PULSE_STEPS, each after a rest of 3600 s).

    For a pulse of current I (A, > 0 charges) after a rest ending at voltage v_ref, its
    resistance at t s after the edge is the overpotential's change over the current:
    R(t) = (eta(t) - eta_ref) / I, eta = v - OCV(x), the terminal voltage less the cell's
    open-circuit voltage at its electrodes' average stoichiometries (a single-particle
    model relaxes to them), so the OCV's own change with the charge passed is not counted.
    The lithium inventory that ties the positive electrode's stoichiometry to the negative
    one's is read at the rest's end (as aged_ocv does at the top; eta_ref = 0 so).
    Also the raw dV/dI = (v(t) - v_ref) / I. Returns {"discharge"|"charge": dict of
    per-check lists: time_s (the edge's time), soc (the true SoC then), ohm and dvdi_ohm
    (each a list on PULSE_T_S)}, and per check the time the pulse block ends (s)."""
    from scipy.optimize import brentq

    q_n, q_p = refs.electrode_capacity_Ah(pv, "Negative"), refs.electrode_capacity_Ah(pv, "Positive")
    s0, s1 = info["stoich_soc0"], info["stoich_soc1"]
    out = {name: dict(time_s=[], soc=[], ohm=[], dvdi_ohm=[]) for name in ("discharge", "charge")}
    ends = []
    for k, st in enumerate(steps):
        if st["idx"] == PULSE_IDX + len(PULSE_STEPS) - 1:
            ends.append(float(parts[k][1][-1]))
        name = {PULSE_IDX + 2: "discharge", PULSE_IDX + 4: "charge"}.get(st["idx"])
        if name is None:
            continue
        (_, t_r, _, v_r, z_r), (t0, t, i, v, z) = parts[k - 1:k + 1]
        x_ref, v_ref = s0 + z_r[-1] * (s1 - s0), float(v_r[-1])
        u_p = _ocp(pv, "Negative", x_ref) + v_ref
        q_li = x_ref * q_n + brentq(lambda y, u=u_p: _ocp(pv, "Positive", y) - u, 1e-3, 0.999) * q_p
        at = np.asarray(PULSE_T_S, dtype=float)
        x_at = s0 + np.interp(at, t - t0, z) * (s1 - s0)
        v_at = np.interp(at, t - t0, v)
        i_A = float(np.median(i))
        ocv_at = np.array([_ocp(pv, "Positive", (q_li - x * q_n) / q_p) - _ocp(pv, "Negative", x)
                           for x in x_at])
        rec = out[name]
        rec["time_s"].append(float(t_r[-1]))
        rec["soc"].append(float(z_r[-1]))
        rec["ohm"].append([round(float(r), 4) for r in (v_at - ocv_at) / i_A])
        rec["dvdi_ohm"].append([round(float(r), 4) for r in (v_at - v_ref) / i_A])
    return out, ends


def generate(out, blocks, per_block, pulses=False):
    import pybamm

    board_cfg = json.loads(refs.BOARD_FILE.read_text())
    options = OPTIONS_R if pulses else OPTIONS
    model, pv, info = model_and_parameters(options)
    one_c_A = info["capacity_Ah"]
    steps = plan(blocks, per_block, pulses)
    t_wall = time.time()
    steps, parts = refs.simulate(model, pv, info, SOC0, steps, one_c_A)
    rng = np.random.default_rng(SEED)
    start_unix = 1.9e9
    recs, truth = refs.board_rows(parts, steps, one_c_A, refs.Board(board_cfg), rng, start_unix)
    out.mkdir(parents=True, exist_ok=True)
    refs.write_log(out / "ageing.bdf.csv.gz", recs, start_unix)
    refs.write_truth(out / "ageing.truth.csv.gz", truth)
    what = (f"C/10 check, then {blocks} x ({per_block} cycles at 1C + C/10 check), "
            f"{CELL['window_V'][0]}-{CELL['window_V'][1]} V, {REST_S:g} s rests")
    if pulses:
        what = (f"C/10 check and 1C pulse block, then {blocks} x ({per_block} cycles at 1C "
                f"with {RESISTANCE_REST_S:g} s rests + C/10 check and pulse block), "
                f"{CELL['window_V'][0]}-{CELL['window_V'][1]} V, 1 s samples; pulse block "
                "(C-rate, s; 0 a rest): " + ", ".join(f"({c:g}, {s:g})" for c, s in PULSE_STEPS))
    meta = refs.sidecar("okane2022-sei", CELL, info, "ageing", what, SOC0, board_cfg, start_unix, recs)
    meta["source"] = "PyBaMM SPMe + SEI ageing reference (tools/pybamm_ageing.py); not run through the firmware"
    (out / "ageing.bdf.csv.gz.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    checks = check_capacities(steps, parts)
    t_ocv, q_li, ocv_cap, ocv = aged_ocv(pv, info, steps, parts)
    desc = dict(name="okane2022-sei", parameter_set=CELL["parameter_set"], chemistry=CELL["chemistry"],
                citation=CELL["citation"], pybamm_version=pybamm.__version__,
                model=f"pybamm.lithium_ion.SPMe({options})", sei_acceleration=SEI_ACCELERATION,
                window_V=list(CELL["window_V"]), capacity_Ah=info["capacity_Ah"], one_c_A=one_c_A,
                current_offset_A=refs.CURRENT_OFFSET_OF_1C * one_c_A, voltage_noise_V=refs.VOLTAGE_NOISE_V,
                protocol=what, fast_cycles=blocks * per_block,
                check_capacity_Ah=checks,
                check_after_fast_cycles=[k * per_block for k in range(blocks + 1)],
                check_ocv_time_s=t_ocv, check_lithium_Ah=q_li, check_ocv_capacity_Ah=ocv_cap,
                ocv_soc=OCV_SOC,
                check_ocv_V=ocv,
                rows=len(recs), hours=round(float(truth[-1, 0]) / 3600.0, 2))
    if pulses:
        res, ends = pulse_resistance(pv, info, steps, parts)
        desc.update(pulse_t_s=list(PULSE_T_S), check_pulse_end_time_s=ends,
                    **{f"check_pulse_{name}_{key}": val for name, rec in res.items()
                       for key, val in rec.items()})
    (out / "cell.json").write_text(json.dumps(desc, indent=1) + "\n")
    print(f"{len(recs)} rows, {truth[-1, 0] / 3600:.0f} h, C/10 capacity "
          f"{', '.join(f'{c * 1e3:.3f}' for c in checks)} mAh, {time.time() - t_wall:.0f} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help=f"default {OUT} ({OUT_R} with --pulses)")
    ap.add_argument("--pulses", action="store_true",
                    help="the resistance reference: 1 s samples, longer rests, pulses at the checks")
    ap.add_argument("--blocks", type=int, default=BLOCKS)
    ap.add_argument("--cycles-per-block", type=int, default=CYCLES_PER_BLOCK)
    args = ap.parse_args(argv)
    out = args.out or (OUT_R if args.pulses else OUT)
    generate(out, args.blocks, args.cycles_per_block, args.pulses)


if __name__ == "__main__":
    main()
