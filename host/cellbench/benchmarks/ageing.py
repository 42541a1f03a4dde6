"""Benchmark: the paper's 100-cycle ageing tests, simulated, recovered and tracked live
(docs/ageing.md).

Runs protocols/lto-ageing-1C.json and protocols/gr-ageing-1Ag.json on the simulated board
(the real firmware in the unix port, virtual time) with the reference presets, the preset
also loaded on the board as its estimator's model, analyses each log with ``cellbench
analyze`` and puts four columns side by side at cycles 1, 25, 50 and 100 of the ageing
block: the paper's value (ends only: the reference gives no others), the simulated truth
(the plant's charge counters and its ageing state), what analyze recovered from the log
alone, and what the board's estimator reported live (its capacity and charge-transfer
resistance states, issue 14). Then the tracking errors: capacity and resistance against
the plant's after block cycle 10, and the SoC error over the whole run beside that of the
same filter told the plant's true capacity at every record (:func:`known_capacity_soc`).

``run_cell``, ``truth_runs``, ``truth_q_dch``, ``truth_rct_per_cycle``, ``tracking`` and
``tracking_errors`` are also what tests/test_ageing.py uses to make and read the same runs.

Last, data we did not make: the host twin over the PyBaMM SEI run (tests/data/pybamm-ageing)
beside PyBaMM's capacity at each check (``pybamm_capacity_tracked``), and over the PyBaMM resistance
reference (tests/data/pybamm-ageing-r, tools/pybamm_ageing.py --pulses) with a model fitted
to its first cycles, beside PyBaMM's pulse resistance at each check (``fit_and_track``,
``pybamm_resistance_pairs``: also tests/test_ageing_tracking.py's).
"""

import gzip
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import bdflog, fw
from ..analyze.reference import PAPER_AGEING
from ..paths import MODELS, PROTOCOLS, ROOT

MASS_MG = 2.0
CHECKPOINTS = (1, 25, 50, 100)
# protocol, preset, tick (ms), seed: LTO is 167 h of cell time, 2 s ticks keep it short
CELLS = {
    "LTO/Li": ("lto-ageing-1C.json", "lto-li-coin.json", 2000, 3),
    "Gr/Li": ("gr-ageing-1Ag.json", "gr-li-coin.json", 1000, 3),
}


TRACK_FROM_CYCLE = 10   # block cycle from which the live estimates must hold their bounds


def run_cell(chemistry, workdir, model_path=None, cycles=None, calibration=None):
    """Run the ageing protocol of ``chemistry`` ("LTO/Li" or "Gr/Li") on the simulated
    board in ``workdir`` with the estimator on (``model_path``, default the preset that
    is also the plant) and analyse it there; returns (AnalysisResult, truth runs). The
    log is ``workdir/run.bdf.csv``, the plant's truth and state files in ``workdir/work``.
    The board runs in lockstep (sim.start_board), so a run repeats bit for bit.
    ``cycles``: the ageing block's cycle count instead of the protocol's 100 (shorter runs
    to iterate on the estimator)."""
    from .. import session
    from ..analyze import analyze_log
    from ..sim import start_board

    protocol, preset, tick_ms, seed = CELLS[chemistry]
    workdir = Path(workdir)
    protocol_path = PROTOCOLS / protocol
    if cycles is not None:
        doc = json.loads(protocol_path.read_text())
        loops = [s for s in doc["method"] if s["step"] == "loop"]
        loops[-1]["cycle_count"] = int(cycles)
        protocol_path = workdir / protocol
        workdir.mkdir(parents=True, exist_ok=True)
        protocol_path.write_text(json.dumps(doc))
    board = start_board(str(MODELS / preset), board="sim", workdir=workdir / "work", seed=seed,
                        calibration=calibration, lockstep=True)
    try:
        summary = session.run(protocol_path, board, workdir / "run.bdf.csv", board="sim",
                              mass_mg=MASS_MG, tick_ms=tick_ms,
                              model_path=model_path or MODELS / preset)
    finally:
        board.close()
    if summary["stop_reason"] != "end":
        raise RuntimeError(f"{chemistry} ageing run stopped: {summary['stop_reason']}")
    model = json.loads((MODELS / preset).read_text())
    result = analyze_log(workdir / "run.bdf.csv", out_dir=workdir / "analysis")
    return result, truth_runs(workdir / "work", model)


def _active_runs(i_A):
    """(start, end, sign) truth-row ranges of each run of current in one direction."""
    sign = np.sign(np.where(np.abs(i_A) > 1e-7, i_A, 0.0)).astype(int)
    edges = np.flatnonzero(np.diff(sign) != 0) + 1
    bounds = zip(np.concatenate(([0], edges)), np.concatenate((edges, [len(sign)])))
    return [(a, b, int(sign[a])) for a, b in bounds if sign[a] != 0]


def truth_runs(work, model):
    """Per active run of the plant, in order: {"sign", "q_Ah" (charge passed), "r_ct"
    (ohm: rc[0].r_ohm * r_mult * rct_mult when the current stopped)}, from the truth CSV
    and the state file the plant writes in ``work``."""
    from ..sim import read_truth
    from ..sim.mpy import simcell

    truth = read_truth(Path(work) / "truth.csv")
    states = simcell.read_states(str(Path(work) / "truth.csv") + simcell.STATE_SUFFIX, len(model["rc"]))
    t_state = np.array(states["t_s"])
    rct = model["rc"][0]["r_ohm"] * np.array(states["r_mult"]) * np.array(states["rct_mult"])
    runs = []
    for a, b, sign in _active_runs(truth["i_A"]):
        counter = truth["q_chg_Ah"] if sign > 0 else truth["q_dch_Ah"]
        end = min(b, len(truth["t_s"]) - 1)  # the row where the current stopped
        k = min(int(np.searchsorted(t_state, truth["t_s"][end])), len(t_state) - 1)
        runs.append({"sign": sign, "q_Ah": float(counter[end] - counter[a]), "r_ct": float(rct[k])})
    return runs


def truth_q_dch(runs, mass_mg=MASS_MG):
    """Discharge capacity (mAh/g) of each discharge of the plant, in order: index k is
    block cycle k when one formation cycle precedes the block (index 0)."""
    return np.array([r["q_Ah"] for r in runs if r["sign"] < 0]) * 1e6 / mass_mg


def truth_rct_per_cycle(result, runs):
    """The plant's R_ct (ohm) at the rests analyze found, median per row of its cycle
    table (the rests are those after every active run, in the same order)."""
    relax = result.relaxations
    if len(relax["t_s"]) != len(runs):
        raise ValueError(f"{len(relax['t_s'])} rests in the log, {len(runs)} active runs in the truth")
    rct = np.array([r["r_ct"] for r in runs])
    return np.array([np.median(rct[relax["cycle"] == c]) for c in result.table["cycle"]])


def _plant_rct_ohm(model, z, r_mult, rct_mult):
    """The plant's charge-transfer resistance (ohm): rc[0].r_ohm (a value, or a table on
    the OCV's SoC grid read at z) times its two growth factors (simcell.Cell.step)."""
    r = model["rc"][0]["r_ohm"]
    if isinstance(r, list):
        r = np.interp(z, np.linspace(model["ocv"]["soc"][0], model["ocv"]["soc"][-1], len(r)), r)
    return r * r_mult * rct_mult


def tracking(workdir, chemistry):
    """The board's live estimates beside the plant's truth, one entry per logged record.

    Arrays: ``t_s`` (log time), ``cycle`` (log cycle; block cycle = cycle - 1), ``i_A``,
    ``v_V``, ``soc`` / ``soc_truth`` (1), ``cap_Ah`` / ``cap_truth_Ah`` (the plant's capacity
    now), ``r_ohm`` / ``r_truth_ohm`` (charge-transfer resistance at the present SoC);
    NaN where the board had no estimate (a state that is off). The plant's clock is put
    on the log's by the first current step: its truth row is where the current came on,
    which the log has one tick before that step's first record (docs/link.md)."""
    from ..sim import read_truth
    from ..sim.mpy import simcell

    _, preset, tick_ms, _ = CELLS[chemistry]
    model = json.loads((MODELS / preset).read_text())
    workdir = Path(workdir)
    log = bdflog.read_log(workdir / "run.bdf.csv")
    truth = read_truth(workdir / "work" / "truth.csv")
    st = {k: np.array(v) for k, v in simcell.read_states(
        str(workdir / "work" / "truth.csv") + simcell.STATE_SUFFIX, len(model["rc"])).items()}
    t_log, i_log = log["Test Time / s"], log["Current / A"]
    on_log = int(np.flatnonzero(np.abs(i_log) > 1e-7)[0])
    on_truth = int(np.flatnonzero(np.abs(truth["i_A"]) > 1e-7)[0])
    t = t_log + (truth["t_s"][on_truth] - (t_log[on_log] - tick_ms / 1000))
    z = np.interp(t, st["t_s"], st["z"])
    nan = np.full(len(t_log), np.nan)
    return {"t_s": t_log, "cycle": log["Cycle Count / 1"], "i_A": i_log, "v_V": log["Voltage / V"],
            "soc": log.get("SOC / 1", nan), "soc_truth": z,
            "cap_Ah": log.get(bdflog.AGEING_COLUMNS[0][0], nan),
            "cap_truth_Ah": np.interp(t, st["t_s"], st["cap_Ah"]),
            "r_ohm": log.get(bdflog.AGEING_COLUMNS[2][0], nan),
            "r_truth_ohm": _plant_rct_ohm(model, z, np.interp(t, st["t_s"], st["r_mult"]),
                                          np.interp(t, st["t_s"], st["rct_mult"]))}


def known_capacity_soc(track, chemistry):
    """The SoC the board's filter (firmware/ekf.py, the preset's estimator block) gives
    over the same logged records when it is told the plant's true capacity at every
    record instead of estimating it: the "perfectly known capacity" baseline (capacity
    state off, its capacity set to the plant's before each step). It sees the log's
    records, not every tick: fewer voltage corrections than the board had, the same
    charge counting (the current is constant between records in a CC step)."""
    _, preset, _, _ = CELLS[chemistry]
    model = json.loads((MODELS / preset).read_text())
    model["estimator"] = dict(model.get("estimator") or {}, capacity=False)
    f = fw.module("ekf").Ekf(model)
    i_nA = np.round(track["i_A"] * 1e9).astype(np.int64)
    v_uV = np.round(track["v_V"] * 1e6).astype(np.int64)
    t_ms = np.round(track["t_s"] * 1e3).astype(np.int64)
    out = np.empty(len(t_ms))
    f.q_As = 3600.0 * track["cap_truth_Ah"][0]
    f.reset(None, int(v_uV[0]), int(i_nA[0]))
    for k in range(len(t_ms)):
        f.q_As = 3600.0 * float(track["cap_truth_Ah"][k])
        f.step(int(i_nA[k]), int(v_uV[k]), int(t_ms[k] - t_ms[k - 1]) if k else 0)
        out[k] = f.soc
    return out


def _rel_err_max(got, want):
    err = np.abs(got / want - 1)
    return float(np.max(err)) if len(err) and np.all(np.isfinite(err)) else float("nan")


def tracking_errors(track, chemistry):
    """The issue's tracking numbers: largest relative error of the live capacity and
    resistance from block cycle TRACK_FROM_CYCLE on (NaN when the board had no estimate
    there), SoC RMSE over the whole run of the board and of :func:`known_capacity_soc`."""
    late = track["cycle"] - 1 >= TRACK_FROM_CYCLE
    soc_ok = np.isfinite(track["soc"])
    known = known_capacity_soc(track, chemistry)
    return {"cap_err": _rel_err_max(track["cap_Ah"][late], track["cap_truth_Ah"][late]),
            "r_err": _rel_err_max(track["r_ohm"][late], track["r_truth_ohm"][late]),
            "soc_rmse": float(np.sqrt(np.mean((track["soc"][soc_ok] - track["soc_truth"][soc_ok]) ** 2))),
            "soc_rmse_known": float(np.sqrt(np.mean((known - track["soc_truth"]) ** 2))),
            "soc_records": int(soc_ok.sum()), "records": len(soc_ok)}


def _fmt(x, digits=1):
    return "" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _cycle_median(track, key, cycle):
    values = track[key][track["cycle"] == cycle]
    return float(np.median(values)) if len(values) and np.all(np.isfinite(values)) else None


def tracking_rows(chemistry, result, track, err):
    """Table rows for one cell's live estimates: the board's capacity and R_ct beside the
    plant's (medians over the records of each checkpoint cycle; the capacity is the
    cell's whole capacity, what the paper's 1C capacity is a part of), then the errors."""
    first = result.summary["ageing"]["first_cycle"]
    per_g = 1e6 / MASS_MG
    out = []
    for k in CHECKPOINTS:
        c = first + k - 1
        cap, cap_truth = _cycle_median(track, "cap_Ah", c), _cycle_median(track, "cap_truth_Ah", c)
        out.append({"cell": chemistry, "quantity": "capacity (the estimator's state)", "cycle": k,
                    "simulated": _fmt(cap_truth * per_g), "board": _fmt(None if cap is None else cap * per_g),
                    "unit": "mAh/g"})
        out.append({"cell": chemistry, "quantity": "charge-transfer resistance, live", "cycle": k,
                    "simulated": _fmt(_cycle_median(track, "r_truth_ohm", c)),
                    "board": _fmt(_cycle_median(track, "r_ohm", c)), "unit": "ohm"})
    since = f"{TRACK_FROM_CYCLE}-100"
    out += [{"cell": chemistry, "quantity": "live capacity, largest error (bound 3 %)", "cycle": since,
             "board": _fmt(100 * err["cap_err"], 2), "unit": "%"},
            {"cell": chemistry, "quantity": "live R_ct, largest error (bound 10 %)", "cycle": since,
             "board": _fmt(100 * err["r_err"], 2), "unit": "%"},
            {"cell": chemistry, "quantity": "SoC RMSE, whole run (bound: known capacity + 0.5)",
             "cycle": "all", "board": _fmt(100 * err["soc_rmse"], 2),
             "known capacity": _fmt(100 * err["soc_rmse_known"], 2), "unit": "%"}]
    return out


def rows_for(chemistry, result, runs):
    """Table rows (dicts) for one cell: capacity and R_ct at each checkpoint, retention, CE."""
    paper = PAPER_AGEING[chemistry]
    ageing = result.summary["ageing"]
    t = result.table
    q_truth = truth_q_dch(runs)
    r_truth = truth_rct_per_cycle(result, runs)
    out = []
    for k in CHECKPOINTS:
        row = int(np.flatnonzero(t["cycle"] == ageing["first_cycle"] + k - 1)[0])
        out.append({"cell": chemistry, "quantity": f"discharge capacity at {paper['rate']}", "cycle": k,
                    "paper": _fmt(paper["q_mAh_g"].get(k)), "simulated": _fmt(q_truth[k]),
                    "analyze": _fmt(t["q_dch_mAh_g"][row]), "unit": "mAh/g"})
        out.append({"cell": chemistry, "quantity": "charge-transfer resistance", "cycle": k,
                    "paper": _fmt(paper["r_ct_ohm"].get(k)), "simulated": _fmt(r_truth[row]),
                    "analyze": _fmt(t["r_ct_trend_ohm"][row]), "unit": "ohm"})
    paper_ret = 100 * paper["q_mAh_g"][100] / paper["q_mAh_g"][1]
    out.append({"cell": chemistry, "quantity": "retention, cycle 100 / cycle 1", "cycle": "1-100",
                "paper": _fmt(paper_ret), "simulated": _fmt(100 * q_truth[100] / q_truth[1]),
                "analyze": _fmt(ageing["retention_pct"]), "unit": "%"})
    ce = t["ce_pct"][(t["cycle"] > ageing["first_cycle"]) & (t["cycle"] <= ageing["last_cycle"])]
    out.append({"cell": chemistry, "quantity": "least CE (cycles 2-100)", "cycle": "2-100",
                "paper": f"> {paper['ce_min_pct']:g}", "analyze": _fmt(np.nanmin(ce)), "unit": "%"})
    return out


# ------------------------------------------------------- the PyBaMM capacity reference

PYBAMM = ROOT / "tests" / "data" / "pybamm-ageing"
PYBAMM_CELL = "PyBaMM OKane2022 SEI (host twin)"
# An ageing cell's capacity walks: the PyBaMM cell loses 13 % in 187 h, 2e-7 per second of
# its capacity. Between two checks (25 cycles, ~52 h) the only SoC information is the 1C
# half swings and the 600 s rests after them, read through an OCV that the lost lithium
# bends (docs/estimator.md "Ageing"): a random walk of 3e-10/s (0.75 % per 52 h, 1 sigma)
# lets each C/10 check pull the scale back, and gives the 1C cycles' bias less hold than
# 1e-9 does; 1e-10 pulls back more slowly.
PYBAMM_Q_CAP = 3e-10
# The SoC walks away from the counted charge too, and the capacity scale must not take it:
# the log's current reads 6 uA high (cell.json current_offset_A, 0.2 % of 1C: 7-9 % of SoC
# between two checks) and the SEI's side reaction takes counted charge the window never
# holds (1-4 % of SoC between two checks after the offset; tools/ageing_ocv_probe.py
# "counting"). With the default walk (1e-10/s, 0.4 % per 40 h) the 1C cycles leave the SoC
# 2-3 % high, and each check's top-up charge hands that to the scale (+1.2-2.3 %, then 5.6 %
# inside the checks). The offset is the bias state's (prior std 0.5 % of 1C); the side
# reaction's drift d over a check interval T is the SoC walk's, q_soc >= d^2/T (1.2e-9 to
# 9.5e-9/s measured): 1e-8 (largest error between the checks 2.3 %; without the bias state
# q_soc 2e-9..1e-7 gives 2.5-3.0 %).
PYBAMM_ESTIMATOR = {"capacity": True, "q_cap": PYBAMM_Q_CAP, "bias": True, "q_soc": 1e-8}
PYBAMM_BIAS_OF_1C = 0.005
# The twin's capacity is the charge between the window's limits at rest (the model's SoC 0
# and 1; fit.capacity counts the charge beyond a sweep's loaded cut-off), so its truth is
# PyBaMM's OCV window capacity at each check: from the electrodes' stoichiometries and OCPs
# at the rest after the check's C/10 charge (tools/pybamm_ageing.py aged_ocv). The C/10
# discharge itself (cell.json check_capacity_Ah) stops at the loaded cut-off, 2-5 % short.
PYBAMM_TRUTH = "check_ocv_capacity_Ah"


def pybamm_capacity_tracked(workdir):
    """The twin over the whole PyBaMM SEI run with a model fitted to its first FIT_CYCLES
    cycles and PYBAMM_ESTIMATOR's settings: (model, log columns, the twin's outputs)."""
    one_c_A = json.loads((PYBAMM / "cell.json").read_text())["one_c_A"]
    return fit_and_track(PYBAMM / "ageing.bdf.csv.gz", workdir,
                         dict(PYBAMM_ESTIMATOR, p0_bias_A2=(PYBAMM_BIAS_OF_1C * one_c_A) ** 2))


def pybamm_capacity_rows():
    """Table rows: PyBaMM's capacity beside the twin's at each check, and the twin's
    largest error against PyBaMM's interpolated between the checks from cycle 10 on."""
    with tempfile.TemporaryDirectory(prefix="cellbench-pybamm-cap-") as d:
        _, log, est = pybamm_capacity_tracked(Path(d))
    cell = json.loads((PYBAMM / "cell.json").read_text())
    t_s = log["Test Time / s"]
    rows = np.searchsorted(t_s, np.asarray(cell["check_ocv_time_s"]) - 1e-3)
    out = [{"cell": PYBAMM_CELL, "quantity": "capacity after the C/10 check", "cycle": after,
            "simulated": _fmt(1e3 * truth, 4), "board": _fmt(1e3 * est["cap_Ah"][k], 4), "unit": "mAh"}
           for after, k, truth in zip(cell["check_after_fast_cycles"], rows, cell[PYBAMM_TRUTH])]
    truth = np.interp(t_s, t_s[rows], cell[PYBAMM_TRUTH])
    late = log["Cycle Count / 1"] - 1 >= TRACK_FROM_CYCLE
    err = np.max(np.abs(est["cap_Ah"][late] / truth[late] - 1))
    out.append({"cell": PYBAMM_CELL, "quantity": "capacity, largest error between the checks (bound 3 %)",
                "cycle": f"{TRACK_FROM_CYCLE}-100", "board": _fmt(100 * err, 2), "unit": "%"})
    return out


# ------------------------------------------------------- the PyBaMM resistance reference

PYBAMM_R = ROOT / "tests" / "data" / "pybamm-ageing-r"
PYBAMM_R_CELL = "PyBaMM OKane2022 (host twin)"
FIT_CYCLES = 3  # what a user has before the fade: the first check and a 1C cycle or two


def first_cycles(path, out, cycles):
    """The log's rows of its first ``cycles`` cycles, as a new log with its sidecar."""
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    cycle = lines[0].split(",").index("Cycle Count / 1")
    keep = [lines[0]] + [line for line in lines[1:] if int(line.split(",")[cycle]) <= cycles]
    out.write_text("\n".join(keep) + "\n")
    side = json.loads(path.with_name(path.name + ".json").read_text())
    side.pop("truth", None)
    out.with_name(out.name + ".json").write_text(json.dumps(side))
    return out


def fit_and_track(log_path, workdir, estimator=None):
    """A model fitted (cellbench.fit) to the log's first FIT_CYCLES cycles, its estimator
    block updated by ``estimator``, and the host twin over the whole log: (model, log
    columns, the twin's outputs)."""
    from ..estimate import estimate
    from ..fit import fit_logs

    first = first_cycles(Path(log_path), Path(workdir) / "first.bdf.csv", FIT_CYCLES)
    model, _ = fit_logs([str(first)])
    model["estimator"].update(estimator or {})
    log = bdflog.read_log(log_path)
    return model, log, estimate(model, log["Test Time / s"], log["Current / A"], log["Voltage / V"])


def step_response_ohm(model, est, k, t_s):
    """The twin's resistance t_s seconds after a current step, at sample k (ohm): its R0
    and R_ct (the estimator's scales on the model's R0 and rc[0]) plus the model's slower
    RC pairs, which it holds at their fitted values; each pair charged by 1 - exp(-t/tau)."""
    grid = np.asarray(model["ocv"]["soc"])
    rc = model["rc"]
    out = est["r0_ohm"][k] + est["rct_ohm"][k] * -np.expm1(-t_s / rc[0]["tau_s"])
    for pair in rc[1:]:
        r_ohm = np.interp(est["soc"][k], grid, np.broadcast_to(pair["r_ohm"], grid.shape))
        out += r_ohm * -np.expm1(-t_s / pair["tau_s"])
    return float(out)


def pulse_truth_ohm(cell, pulse, check, t_s):
    """PyBaMM's resistance t_s after the edge of a check's pulse ("discharge" or
    "charge"), interpolated in log time between cell.json's pulse_t_s (ohm)."""
    return float(np.interp(np.log(t_s), np.log(cell["pulse_t_s"]),
                           cell[f"check_pulse_{pulse}_ohm"][check]))


def pybamm_resistance_pairs(model, log, est, cell):
    """The twin beside PyBaMM at the end of each check's pulse block: a dict per check,
    pulse and time, {"after" (1C cycles before the check), "pulse", "t_s" (1 s: the
    board's tick, compared with the twin's R0; rc[0]'s tau: with its step response),
    "truth", "twin" (ohm)}."""
    tau_s = model["rc"][0]["tau_s"]
    ends = np.searchsorted(log["Test Time / s"], np.asarray(cell["check_pulse_end_time_s"]) - 1e-3)
    out = []
    for check, (after, k) in enumerate(zip(cell["check_after_fast_cycles"], ends)):
        for pulse in ("discharge", "charge"):
            for t_s, twin in ((1.0, float(est["r0_ohm"][k])),
                              (tau_s, step_response_ohm(model, est, k, tau_s))):
                out.append({"after": after, "pulse": pulse, "t_s": t_s, "twin": twin,
                            "truth": pulse_truth_ohm(cell, pulse, check, t_s)})
    return out


def pybamm_resistance_rows():
    """Table rows: the discharge pulse's resistance at 1 s and at tau per check, PyBaMM's
    beside the twin's, and the largest error over both pulses after cycle 10."""
    with tempfile.TemporaryDirectory(prefix="cellbench-pybamm-r-") as d:
        model, log, est = fit_and_track(PYBAMM_R / "ageing.bdf.csv.gz", d)
    cell = json.loads((PYBAMM_R / "cell.json").read_text())
    pairs = pybamm_resistance_pairs(model, log, est, cell)
    out = [{"cell": PYBAMM_R_CELL, "quantity": f"resistance {p['t_s']:.0f} s into the 1C discharge pulse "
            f"({'R0' if p['t_s'] == 1.0 else 'step response at tau'})", "cycle": p["after"],
            "simulated": _fmt(p["truth"]), "board": _fmt(p["twin"]), "unit": "ohm"}
           for p in pairs if p["pulse"] == "discharge"]
    err = max(abs(p["twin"] / p["truth"] - 1) for p in pairs if p["after"] >= TRACK_FROM_CYCLE)
    out.append({"cell": PYBAMM_R_CELL, "quantity": "resistance, largest error, both pulses (bound 10 %)",
                "cycle": f"{TRACK_FROM_CYCLE}-100", "board": _fmt(100 * err, 2), "unit": "%"})
    return out


def run():
    rows = []
    for chemistry in CELLS:
        with tempfile.TemporaryDirectory(prefix="cellbench-ageing-") as d:
            start = time.perf_counter()
            result, runs = run_cell(chemistry, d)
            wall = time.perf_counter() - start
            track = tracking(d, chemistry)
            err = tracking_errors(track, chemistry)
        rows += rows_for(chemistry, result, runs)
        rows += tracking_rows(chemistry, result, track, err)
        rows.append({"cell": chemistry, "quantity": "run (estimator on) + analysis wall time",
                     "analyze": f"{wall:.1f}", "unit": "s"})
    rows += pybamm_capacity_rows()
    rows += pybamm_resistance_rows()
    return {"columns": ["cell", "quantity", "cycle", "paper", "simulated", "analyze", "board",
                        "known capacity", "unit"], "rows": rows}
