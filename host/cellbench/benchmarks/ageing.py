"""Benchmark: the paper's 100-cycle ageing tests, simulated and recovered (docs/ageing.md).

Runs protocols/lto-ageing-1C.json and protocols/gr-ageing-1Ag.json on the simulated board
(the real firmware in the unix port, virtual time) with the reference presets, analyses
each log with ``cellbench analyze`` and puts three columns side by side at cycles 1, 25,
50 and 100 of the ageing block: the paper's value (ends only: the reference gives no
others), the simulated truth (the plant's charge counters and its ageing state) and what
analyze recovered from the log alone.

``run_cell``, ``truth_runs``, ``truth_q_dch`` and ``truth_rct_per_cycle`` are also what
tests/test_ageing.py uses to make and read the same runs.
"""

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from ..analyze.reference import PAPER_AGEING
from ..paths import MODELS, PROTOCOLS

MASS_MG = 2.0
CHECKPOINTS = (1, 25, 50, 100)
# protocol, preset, tick (ms), seed: LTO is 167 h of cell time, 2 s ticks keep it short
CELLS = {
    "LTO/Li": ("lto-ageing-1C.json", "lto-li-coin.json", 2000, 3),
    "Gr/Li": ("gr-ageing-1Ag.json", "gr-li-coin.json", 1000, 3),
}


def run_cell(chemistry, workdir):
    """Run the ageing protocol of ``chemistry`` ("LTO/Li" or "Gr/Li") on the simulated
    board in ``workdir`` and analyse it there; returns (AnalysisResult, truth runs)."""
    from .. import session
    from ..analyze import analyze_log
    from ..sim import start_board

    protocol, preset, tick_ms, seed = CELLS[chemistry]
    workdir = Path(workdir)
    board = start_board(str(MODELS / preset), board="sim", workdir=workdir / "work", seed=seed)
    try:
        summary = session.run(PROTOCOLS / protocol, board, workdir / "run.bdf.csv", board="sim",
                              mass_mg=MASS_MG, tick_ms=tick_ms)
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


def _fmt(x, digits=1):
    return "" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


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


def run():
    rows = []
    for chemistry in CELLS:
        with tempfile.TemporaryDirectory(prefix="cellbench-ageing-") as d:
            start = time.perf_counter()
            result, runs = run_cell(chemistry, d)
            wall = time.perf_counter() - start
        rows += rows_for(chemistry, result, runs)
        rows.append({"cell": chemistry, "quantity": "run + analysis wall time", "analyze": f"{wall:.1f}",
                     "unit": "s"})
    return {"columns": ["cell", "quantity", "cycle", "paper", "simulated", "analyze", "unit"], "rows": rows}
