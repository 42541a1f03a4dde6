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
SEI_ACCELERATION = 10000.0
BLOCKS = 4
CYCLES_PER_BLOCK = 25
REST_S = 600.0
SEED = 21
OCV_SOC = [round(0.05 * k, 2) for k in range(21)]  # SoC grid of cell.json's check_ocv_V
SOC0 = 0.5   # every check, the first too, starts from the C/10 top-up charge


def check_cycle(lo, hi):
    """A C/10 top-up charge (after a 1C charge the cell is not full), then a C/10
    discharge and charge between the window limits (idx 14, 15, 10-13)."""
    return [refs.cc(0.1, 15 * 3600, 14, until_V=hi, record_s=120.0, period_s=10.0),
            refs.rest(REST_S, 15),
            refs.cc(-0.1, 15 * 3600, 10, until_V=lo, record_s=120.0, period_s=10.0),
            refs.rest(REST_S, 11),
            refs.cc(0.1, 15 * 3600, 12, until_V=hi, record_s=120.0, period_s=10.0),
            refs.rest(REST_S, 13)]


def fast_cycle(lo, hi):
    """A 1C discharge and charge between the window limits (idx 1-4)."""
    return [refs.cc(-1.0, 2 * 3600, 1, until_V=lo, record_s=30.0, period_s=5.0),
            refs.rest(REST_S, 2),
            refs.cc(1.0, 2 * 3600, 3, until_V=hi, record_s=30.0, period_s=5.0),
            refs.rest(REST_S, 4)]


def plan(blocks, per_block):
    lo, hi = CELL["window_V"]
    steps = [refs.rest(REST_S, 0)] + check_cycle(lo, hi)
    for _ in range(blocks):
        for _ in range(per_block):
            steps += fast_cycle(lo, hi)
        steps += check_cycle(lo, hi)
    return steps


def model_and_parameters():
    """(SPMe with SEI growth, the coin-scaled ParameterValues, info) via pybamm_refs."""
    import pybamm

    _, pv, info = refs.parameters(CELL)
    pv.update({"SEI solvent diffusivity [m2.s-1]": pv["SEI solvent diffusivity [m2.s-1]"] * SEI_ACCELERATION})
    return pybamm.lithium_ion.SPMe(dict(OPTIONS)), pv, info  # PyBaMM rewrites the dict it gets


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


def generate(out, blocks, per_block):
    import pybamm

    board_cfg = json.loads(refs.BOARD_FILE.read_text())
    model, pv, info = model_and_parameters()
    one_c_A = info["capacity_Ah"]
    steps = plan(blocks, per_block)
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
    meta = refs.sidecar("okane2022-sei", CELL, info, "ageing", what, SOC0, board_cfg, start_unix, recs)
    meta["source"] = "PyBaMM SPMe + SEI ageing reference (tools/pybamm_ageing.py); not run through the firmware"
    (out / "ageing.bdf.csv.gz.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    checks = check_capacities(steps, parts)
    t_ocv, q_li, ocv_cap, ocv = aged_ocv(pv, info, steps, parts)
    desc = dict(name="okane2022-sei", parameter_set=CELL["parameter_set"], chemistry=CELL["chemistry"],
                citation=CELL["citation"], pybamm_version=pybamm.__version__,
                model=f"pybamm.lithium_ion.SPMe({OPTIONS})", sei_acceleration=SEI_ACCELERATION,
                window_V=list(CELL["window_V"]), capacity_Ah=info["capacity_Ah"], one_c_A=one_c_A,
                current_offset_A=refs.CURRENT_OFFSET_OF_1C * one_c_A, voltage_noise_V=refs.VOLTAGE_NOISE_V,
                protocol=what, fast_cycles=blocks * per_block,
                check_capacity_Ah=checks,
                check_after_fast_cycles=[k * per_block for k in range(blocks + 1)],
                check_ocv_time_s=t_ocv, check_lithium_Ah=q_li, check_ocv_capacity_Ah=ocv_cap,
                ocv_soc=OCV_SOC,
                check_ocv_V=ocv,
                rows=len(recs), hours=round(float(truth[-1, 0]) / 3600.0, 2))
    (out / "cell.json").write_text(json.dumps(desc, indent=1) + "\n")
    print(f"{len(recs)} rows, {truth[-1, 0] / 3600:.0f} h, C/10 capacity "
          f"{', '.join(f'{c * 1e3:.3f}' for c in checks)} mAh, {time.time() - t_wall:.0f} s", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--blocks", type=int, default=BLOCKS)
    ap.add_argument("--cycles-per-block", type=int, default=CYCLES_PER_BLOCK)
    args = ap.parse_args(argv)
    generate(args.out, args.blocks, args.cycles_per_block)


if __name__ == "__main__":
    main()
