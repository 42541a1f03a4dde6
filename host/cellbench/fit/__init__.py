"""Fit a cell model (models/*.json format) to Battery Data Format logs.

Order of work, each part in its own module:

1. :mod:`.capacity`: capacity and coulombic efficiency from a low-rate full cycle;
2. :mod:`.ocv`: OCV on a uniform SoC grid (slow-branch mean or rest points), monotonic;
3. :mod:`.soc`: SoC along every log, anchored at the window limits;
4. :mod:`.resistance`: R0 from current-step edges, RC pairs from relaxations;
5. :mod:`.refine`: joint refinement (tau grid x NNLS) scored on 5-95 % SoC;
6. :mod:`.report`: parameter table, RMSE, residual and OCV plots.

Everything is a deterministic function of the logs (fixed grids, no random starts).
Units SI; current > 0 charges the cell.
"""

import datetime

import numpy as np

from ..errors import InputError
from ..model import load_model
from . import capacity, ocv, refine, resistance, soc
from .data import load

DEFAULT_MASS_G = 0.002     # the presets' assumption when neither sidecar nor user gives one


R0_KNOTS = np.linspace(0.0, 1.0, 11)   # with r0_soc: R0 piecewise linear, a value every 10 % SoC


def fit_logs(paths, rc: int = 1, hysteresis: bool = False, name: str = "", chemistry: str = "",
             mass_g: float = 0.0, r0_soc: bool = False):
    """Fit a model to the logs at ``paths``; returns (model dict, report dict).

    ``rc``: number of RC pairs (1 or 2); a pair the refinement finds no use for (zero
    resistance) is left out and the report says so. ``hysteresis``: also fit Plett's
    hysteresis (m_V, m0_V, gamma). ``r0_soc``: R0 as a function of SoC (knots every 10 %,
    written on the OCV grid) instead of one value. ``name``/``chemistry``/``mass_g``
    describe the cell (defaults from the first log's sidecar). Raises InputError naming
    the protocol that would provide whatever the logs lack.
    """
    if rc not in (1, 2):
        raise InputError(f"rc: must be 1 or 2, got {rc}")
    if not paths:
        raise InputError("logs: give at least one log")
    logs = [load(p) for p in paths]
    cyc = capacity.find_cycle(logs)
    curve = ocv.from_cycle(logs[cyc["log"]], cyc["charge"], cyc["discharge"])
    grid, ocv_V = curve["soc"], curve["voltage_V"]
    args = (cyc["capacity_Ah"], cyc["coulombic_efficiency"], grid, ocv_V)
    socs = [soc.trace(log, *args, defining=n == cyc["log"])[0] for n, log in enumerate(logs)]
    r0 = resistance.r0_from_edges(logs, socs)
    relax = resistance.rc_from_relaxations(logs, rc)
    # Second pass: anchors corrected for the IR drop at each cut-off.
    r_dc = r0["r0_ohm"] + sum(relax["r_ohm"])
    traces = [soc.trace(log, *args, r_dc_ohm=r_dc, defining=n == cyc["log"]) for n, log in enumerate(logs)]
    socs = [z for z, _ in traces]
    ocv_fn = lambda z: np.interp(z, grid, ocv_V)
    fit_socs = _from_cycle(socs, cyc)
    best = refine.refine(logs, fit_socs, ocv_fn, cyc["capacity_Ah"], relax["tau_s"], hysteresis,
                         R0_KNOTS if r0_soc else None)
    best = _usable(best, grid)
    model = _model(logs, cyc, curve, best, name, chemistry, mass_g)
    report = {"logs": [str(p) for p in paths], "capacity": cyc, "ocv": curve, "soc_anchor":
              [how for _, how in traces], "r0_edges": r0, "relaxations": relax, "refined": best,
              "socs": socs, "fit_socs": fit_socs, "log_data": logs,
              "hysteresis_gap_V": _gap_estimate(curve, best)}
    report["warnings"] = _hints(report, hysteresis, r0_soc)
    return model, report


R0_SPREAD = 1.5            # decile medians of the edge R0 this far apart: R0 depends on SoC
GAP_HINT_V = 0.002         # a branch gap beyond IR this large is hysteresis worth fitting


def _hints(report: dict, hysteresis: bool, r0_soc: bool) -> list:
    """Options the logs say the fit should have used (the defaults stay simple and fast).

    R0: medians of the current-step edges per 10 % SoC bin (5-95 %, bins with at least
    two edges); a spread beyond R0_SPREAD means one R0 cannot describe the cell (the
    LTO preset's R0 varies 30-fold). Hysteresis: half the slow branches' gap less their
    IR drop (V).
    """
    out = []
    edges = report["r0_edges"]
    z, r = np.asarray(edges["edges_soc"]), np.asarray(edges["edges_ohm"])
    bins = np.floor(np.clip(z, 0.0, 0.999) * 10).astype(int)
    inside = (z >= 0.05) & (z <= 0.95)
    medians = [float(np.median(r[inside & (bins == b)])) for b in range(10)
               if np.count_nonzero(inside & (bins == b)) >= 2]
    if not r0_soc and len(medians) >= 3 and min(medians) > 0 and max(medians) / min(medians) > R0_SPREAD:
        out.append(f"R0 at the current-step edges varies {max(medians) / min(medians):.1f}-fold "
                   "with SoC: refit with --r0-soc")
    if not hysteresis and report["hysteresis_gap_V"] > GAP_HINT_V:
        out.append(f"the slow branches are {report['hysteresis_gap_V'] * 1e3:.1f} mV apart beyond "
                   "their IR drop: refit with --hysteresis")
    return out


def _from_cycle(socs: list, cyc: dict) -> list:
    """SoC traces for the refinement: the defining log's samples before its low-rate cycle
    become NaN (outside every SoC mask).

    Its SoC is counted back from the cycle's limits, and before the cycle a fresh cell's
    first (formation) discharge spends charge on side reactions that coulomb counting
    cannot see (first-cycle irreversible capacity): there the count can be off by that
    charge over the capacity (0.5 SoC on the LTO preset), which would bias everything.
    """
    out = list(socs)
    z = np.array(out[cyc["log"]], dtype=float)
    z[:min(cyc["charge"].start, cyc["discharge"].start)] = np.nan
    out[cyc["log"]] = z
    return out


def _usable(best: dict, grid) -> dict:
    """Drop RC pairs NNLS set to zero; R0 knots it set to zero (no data) take their
    neighbours' values; R0 per knot goes onto the OCV grid. InputError if nothing is left."""
    best = dict(best)
    kept = [p for p in best["rc"] if p["r_ohm"] > 0]
    best["rc_dropped"] = len(best["rc"]) - len(kept)
    if not kept:
        raise InputError("rc: the logs show no RC relaxation the refinement can use; "
                         "run protocols/hppc.json (pulses with long rests)")
    best["rc"] = kept
    r0 = np.atleast_1d(np.asarray(best["r0_ohm"], dtype=float))
    if not np.any(r0 > 0):
        raise InputError("r0: the refinement found no series resistance; run protocols/hppc.json")
    if r0.size > 1:
        good = r0 > 0
        r0 = np.interp(R0_KNOTS, R0_KNOTS[good], r0[good])
        best["r0_knots_ohm"] = r0.tolist()
        best["r0_ohm"] = np.interp(grid, R0_KNOTS, r0).tolist()
    return best


def _r0_typical(best: dict) -> float:
    return float(np.median(best["r0_ohm"]))


def _gap_estimate(curve: dict, best: dict) -> float:
    """Hysteresis from the slow branches: half their gap less the IR part |I| * R_dc (V)."""
    half_gap = 0.5 * (curve["charge_V"] - curve["discharge_V"])
    inside = (curve["soc"] >= 0.05) & (curve["soc"] <= 0.95)
    r_dc = _r0_typical(best) + sum(p["r_ohm"] for p in best["rc"])
    return max(0.0, float(np.median(half_gap[inside])) - curve["branch_A"] * r_dc)


def _cell(logs, name, chemistry, mass_g) -> dict:
    side = logs[0].sidecar
    side_cell = (side.get("model") or {}).get("cell", {}) if isinstance(side.get("model"), dict) else {}
    notes = []
    if not mass_g:
        if side.get("mass_mg"):
            mass_g = float(side["mass_mg"]) / 1000.0
        elif side_cell.get("active_mass_g"):
            mass_g = float(side_cell["active_mass_g"])
        else:
            mass_g = DEFAULT_MASS_G
            notes.append(f"active mass not given: {DEFAULT_MASS_G * 1000:g} mg assumed")
    if mass_g <= 0:
        raise InputError(f"mass: must be > 0 g, got {mass_g}")
    return {"name": name or side_cell.get("name") or f"fitted from {logs[0].name}",
            "chemistry": chemistry or side_cell.get("chemistry", ""),
            "active_mass_g": mass_g, "notes": "; ".join(notes)}


def _model(logs, cyc, curve, best, name, chemistry, mass_g) -> dict:
    ocv_V = curve["voltage_V"]
    log = logs[cyc["log"]]
    window = [max(float(log.v_V.min()), float(ocv_V[0])), min(float(log.v_V.max()), float(ocv_V[-1]))]
    doc = {
        "schema_version": 1,
        "cell": _cell(logs, name, chemistry, mass_g),
        "capacity_Ah": cyc["capacity_Ah"],
        "window_V": window,
        "ocv": {"soc": [round(float(z), 6) for z in curve["soc"]], "voltage_V": ocv_V.tolist()},
        "r0_ohm": best["r0_ohm"],
        "rc": best["rc"],
        "hysteresis": {"m_V": best["m_V"], "m0_V": best["m0_V"], "gamma": best["gamma"]},
        "coulombic_efficiency": cyc["coulombic_efficiency"],
        "provenance": {
            "source": ", ".join(log.name for log in logs),
            "fit_rmse_V": best["rmse_V"],
            "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            "method": ("cellbench fit: capacity from a low-rate full cycle at "
                       f"C/{1 / cyc['rate_C']:.0f}; OCV {curve['method']}, isotonic; R0 from "
                       "current-step edges; RC from relaxations; joint refinement (tau grid x NNLS) "
                       "scored on 5-95 % SoC"),
            "rmse_soc_range": list(refine.SOC_RANGE),
        },
    }
    if best["rc_dropped"]:
        doc["provenance"]["rc_dropped"] = (f"{best['rc_dropped']} RC pair(s) asked for had zero "
                                           "resistance in the refinement and were left out")
    return load_model(doc)
