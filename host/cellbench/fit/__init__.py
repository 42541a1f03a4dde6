"""Fit a cell model (models/*.json format) to Battery Data Format logs.

Order of work, each part in its own module:

1. :mod:`.capacity`: capacity and coulombic efficiency from low-rate full sweeps (a
   charge/discharge pair, or one sweep alone with efficiency 1 assumed; else an HPPC
   traverse, else the slowest full cycle at any rate);
2. :mod:`.ocv`: OCV on a uniform SoC grid (slow-branch mean, one branch less its IR
   drop, or rest points), monotonic;
3. :mod:`.soc`: SoC along every log, anchored at the window limits;
4. :mod:`.resistance`: first estimates: R0 from current-step edges, time constants from
   relaxations;
5. :mod:`.refine` and :mod:`.structure`: every candidate structure (0-2 RC pairs,
   hysteresis, SoC tables, Butler-Volmer) fitted by NNLS and scored on held-out folds;
   the cheapest as good as the best held-out error (within 3 %, or within 10 % and
   not significantly worse by a paired per-segment comparison) is kept;
6. :mod:`.error`: the chosen model's held-out error by SoC and C-rate (``model_error``);
7. :mod:`.report`: parameter table, RMSE, candidates, assumptions, plots.

What the logs do not show is assumed at its least (efficiency 1, no hysteresis, no RC
pair) and listed in ``provenance.assumptions``; only a parameter with no information at
all is refused, naming what to record. Everything is a deterministic function of the
logs (fixed grids, no random starts). Units SI; current > 0 charges the cell.
"""

import datetime

import numpy as np
import threadpoolctl

from ..errors import InputError
from ..model import load_model
from . import capacity, error, ocv, refine, resistance, soc, structure, tracking
from .data import load

# What a fitted model asks of the filter: a capacity-scale state (the fitted capacity is
# known to about 1 %, a std of 0.01). On the PyBaMM reference cells it is what keeps the
# +-3 sigma band honest (graphite/Li 36 % -> 100 % inside, NMC811 37 % -> 100 %) at no cost
# in SoC RMSE; the current-bias state gave no consistent gain there and stays off. The fit
# turns the capacity state off when its own logs say the filter is better without it
# (fit.tracking).
ESTIMATOR = {"capacity": True, "p0_cap": 1e-4}


EDGE_AGREE = 1.25   # the step edges' R0 within this factor of the fit's: its split is known


def estimator(ref: dict, has_rc: bool, edge_ratio: float = 1.0) -> tuple:
    """(the model's ``estimator`` block, what it chose for the assumptions: a list).

    The capacity scale's prior std is at least the largest distance of a full discharge's
    capacity from the model's (``ref["spread"]``, :func:`.capacity.spread`): the logs
    showed the cell holding that much more or less (another rate, fade, formation), and
    the filter meets it with a std the size of the distance. The Arbin half cell's
    discharges count 1.46-1.59 mAh about its 1.500 (std 5.7 %): with the default std of
    1 % 87 % of its estimate lay inside 3 sigma (the C/5 discharges ended up to 5.6 % high),
    with the spread 98.7 % (docs/estimator.md). ``q_cap`` keeps the default ("Ageing"
    there): a walk fast enough for that spread let the scale drift (2.4-4.6 % SoC RMS).

    R0 and R_ct are tracked from the step edges (issue 14) when there is an rc[0] to scale
    and the fit knows the split of its resistance: the tracker starts from the model's R0
    and R_ct with tight priors (``p0_ohm`` 1e-3, ``p0_res`` 1e-2) and follows their growth,
    so its first edges must find the model's R0. ``edge_ratio`` is the edges' R0 over the
    fit's (:func:`.resistance.r0_from_edges`; NaN: no edge, no evidence against); beyond
    EDGE_AGREE either way the tracker would spend its first edges undoing the fit's split,
    not following ageing. On the BioLogic cell (edges 7.9x the fit's R0, whose 50 ms RC
    pair held the rest) it moved R_ct by -90 % in two hours, and 65.8 % of the SoC lay
    inside 3 sigma (100 % without it); batmo (22x) 91.2 % (100 %). Then it is off, and
    said; the PyBaMM ageing runs' fits (1.17x, 0.93x) keep it.
    """
    est, said = dict(ESTIMATOR), []
    if ref["spread"] ** 2 > est["p0_cap"]:
        est["p0_cap"] = float(ref["spread"] ** 2)
        said.append(f"capacity prior std {100 * ref['spread']:.1f} % (estimator.p0_cap {est['p0_cap']:.2g}): "
                    "the largest distance of a full discharge's capacity from the model's")
    agrees = not np.isfinite(edge_ratio) or 1 / EDGE_AGREE <= edge_ratio <= EDGE_AGREE
    if has_rc and agrees:
        est.update({"resistance": True, "p0_ohm": 1e-3, "p0_res": 1e-2})
    elif has_rc:
        said.append(f"resistance not tracked: the step edges' R0 is {edge_ratio:.3g}x the fit's, so the "
                    "split of R0 and R_ct a tracker would start from is not known (set "
                    "estimator.resistance true to track anyway)")
    return est, said


DEFAULT_MASS_G = 0.002     # the presets' assumption when neither sidecar nor user gives one
HELD_OUT = ("interleaved blocks of the logs between long rests (pulse levels, slow sweeps) in "
            f"{refine.FOLDS} folds, each predicted by the fit on the others (blocks_rmse_V); the "
            "low-rate full sweeps predicted by the fit on the rest (sweeps_rmse_V); and the samples "
            f"above {refine.HIGH_SHARE:.0%} of the largest current predicted by the fit on the rest "
            "(high_current_rmse_V; the larger of it and the blocks' residual enters model_error); "
            "structures ranked by held_out_rmse_V, the RMS of the blocks' and the sweeps' (time "
            "constants, gamma and i0 from all data)")
FLOOR_SHARE = 1e-3         # a table knot NNLS set to 0 gets this share of the table's largest


def fit_logs(paths, rc=None, hysteresis=None, name: str = "", chemistry: str = "",
             mass_g: float = 0.0, r0_soc=None, butler_volmer=None):
    """Fit a model to the logs at ``paths``; returns (model dict, report dict).

    ``rc`` (0, 1, 2), ``hysteresis``, ``r0_soc`` (R0 and RC resistances as SoC tables) and
    ``butler_volmer``: None lets the held-out error decide, a value pins that part of
    the structure. ``name``/``chemistry``/``mass_g`` describe the cell (defaults from the
    first log's sidecar). Raises InputError naming what to record when a parameter has
    no information at all in the logs.
    """
    # Thousands of small matrix products: BLAS threads only contend (4x slower on 2 busy cores).
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        return _fit(paths, rc, hysteresis, name, chemistry, mass_g, r0_soc, butler_volmer)


def _fit(paths, rc, hysteresis, name, chemistry, mass_g, r0_soc, butler_volmer):
    if rc not in (None, 0, 1, 2):
        raise InputError(f"rc: must be 0, 1 or 2, got {rc}")
    if not paths:
        raise InputError("logs: give at least one log")
    logs = [load(p) for p in paths]
    ref = capacity.find_reference(logs)
    assumptions = list(ref["assumptions"])
    both = ref["charge"] is not None and ref["discharge"] is not None
    d = logs[ref["log"]]
    one = ref["discharge"] or ref["charge"]
    curve = ocv.from_cycle(d, ref["charge"], ref["discharge"]) if both else ocv.from_one_branch(d, one, 0.0)
    socs = _traces(logs, ref, curve)[0]
    r0 = resistance.r0_from_edges(logs, socs)
    relax = {n: resistance.rc_from_relaxations(logs, n) for n in (1, 2)}
    r_dc = r0["r0_ohm"] + sum(relax[1]["r_ohm"])
    if not both:
        curve = _one_branch_curve(d, one, r_dc, socs[ref["log"]], assumptions)
    socs, anchors = _traces(logs, ref, curve, r_dc)
    fit_socs = _from_cycle(socs, ref)
    usable = [np.isfinite(z) for z in fit_socs]
    grid, ocv_V = curve["soc"], curve["voltage_V"]
    rows = refine.rows(logs, socs, usable, lambda z: np.interp(z, grid, ocv_V), _slow_masks(logs, ref))
    if not np.any(rows.fit):
        raise InputError("logs: no samples between 5 % and 95 % SoC to fit the dynamics on; "
                         "run protocols/hppc.json after the low-rate cycle")
    seeds = {0: [], 1: relax[1]["tau_s"] or _default_taus(logs, 1), 2: relax[2]["tau_s"] or _default_taus(logs, 2)}
    if not relax[1]["tau_s"]:
        assumptions.append("no rest after a current step: RC time constants only from the current steps")
    chosen, results = structure.search(rows, seeds, ref["capacity_Ah"], rc=rc, hysteresis=hysteresis,
                                       r_soc=r0_soc, butler_volmer=butler_volmer)
    params = _usable(chosen["params"], grid, r0["r0_ohm"])
    if params.get("r0_from_edges"):
        assumptions.append("R0 from the current-step edges (the fit found no series resistance)")
    assumptions += _structure_assumptions(params, chosen["spec"], both)
    noise = error.voltage_noise_V(logs)
    steady_ohm = _r0_typical(params) + sum(float(np.median(p["r_ohm"])) for p in params["rc"])
    fast = both and ref["rate_C"] > capacity.MAX_RATE_C      # the OCV from a fast cycle's branches
    # the error a load leaves in the states lasts as long as the slowest RC pair: the table
    # is binned (and the filter looks it up) at that decayed current, not the present one
    look_tau_s = max((float(p["tau_s"]) for p in params["rc"]), default=0.0)
    model_error = error.table(rows.z, rows.i_A, rows.w, chosen["fit"].held_out_V, ref["capacity_Ah"],
                              noise, "blocks between long rests, 3 folds", steady_ohm,
                              _unswept_floor_V(chosen["fit"]),
                              error.ocv_doubt_V(curve, steady_ohm) if fast else None,
                              _slow_ohm(steady_ohm, r0["r0_ohm"]),
                              error.look_rows_A(rows, look_tau_s), look_tau_s)
    est, said = estimator(ref, bool(params["rc"]), r0["r0_ohm"] / _r0_typical(params))
    assumptions += said
    model = _model(logs, ref, curve, params, chosen, results, assumptions, model_error, est,
                   name, chemistry, mass_g)
    model["estimator"], said = tracking.keep_capacity(model, logs, fit_socs)
    model["provenance"]["assumptions"] += said
    report = {"logs": [str(p) for p in paths], "capacity": ref, "ocv": curve, "soc_anchor": anchors,
              "r0_edges": r0, "relaxations": relax[len(params["rc"])] if params["rc"] else relax[1],
              "refined": params, "socs": socs, "fit_socs": fit_socs, "log_data": logs,
              "hysteresis_gap_V": _gap_estimate(curve, params) if both else 0.0, "candidates": results,
              "chosen": chosen, "assumptions": model["provenance"]["assumptions"], "noise_V": noise}
    report["warnings"] = []
    return model, report


def _one_branch_curve(log, sweep, r_dc_ohm: float, soc, assumptions: list) -> dict:
    """The OCV from one slow branch less its IR drop (``r_dc_ohm``: step edges plus the
    relaxations' RC pairs), moved through the log's relaxed rests when it has some
    (:func:`.ocv.through_rests`), else as it is and said in the assumptions."""
    curve = ocv.from_one_branch(log, sweep, r_dc_ohm)
    if ocv.n_rests(log, sweep) >= ocv.MIN_RESTS:
        return curve
    moved = ocv.through_rests(curve, ocv.relaxed_rests(log, soc))
    if moved is curve:
        assumptions.append("OCV: one slow branch less its step-edge IR drop, no relaxed rest to check it "
                           "against (its diffusion drop stays in the OCV)")
    return moved


def _slow_masks(logs, ref) -> list:
    """Per log: the samples of the low-rate full sweep(s) the capacity and OCV came from."""
    masks = [np.zeros(log.t_s.size, dtype=bool) for log in logs]
    for sweep in (ref["charge"], ref["discharge"]):
        if sweep is not None:
            masks[ref["log"]][sweep.start:sweep.stop] = True
    return masks


def _traces(logs, ref, curve, r_dc=None):
    """(SoC traces, how each was anchored) of every log."""
    args = (ref["capacity_Ah"], ref["coulombic_efficiency"], curve["soc"], curve["voltage_V"])
    window = capacity.window_V(logs[ref["log"]])
    out = [soc.trace(log, *args, r_dc_ohm=r_dc, defining=n == ref["log"], window_V=window,
                     max_rate_C=capacity.anchor_rate_C(ref["rate_C"], soc.MAX_ANCHOR_RATE_C))
           for n, log in enumerate(logs)]
    return [z for z, _ in out], [how for _, how in out]


def _default_taus(logs, n: int) -> list:
    """Time-constant seeds without relaxations: 10 and 200 sample spacings (at least 10 s
    and 300 s), the range a pulse's RC response shows."""
    dt = float(np.median([np.median(np.diff(log.t_s)) for log in logs]))
    fast, slow = max(10.0 * dt, 10.0), max(200.0 * dt, 300.0)
    return [float(np.sqrt(fast * slow))] if n == 1 else [fast, slow]


def _structure_assumptions(params: dict, spec, both: bool) -> list:
    out = []
    if not params["rc"]:
        out.append("no RC pair" + (" (the fitted pairs had zero resistance)" if spec.rc else ""))
    if not spec.hysteresis:
        out.append("no hysteresis" + ("" if both else " (one slow branch)"))
    return out


def _from_cycle(socs: list, ref: dict) -> list:
    """SoC traces for the fit: the defining log's samples before its first clean low-rate
    sweep (``ref["fit_from"]``, capacity.find_reference) become NaN (not used).

    Its SoC is counted back from the sweeps' limits, and before them a fresh cell's
    first (formation) discharge spends charge on side reactions that coulomb counting
    cannot see (first-cycle irreversible capacity): there the count can be off by that
    charge over the capacity (0.5 SoC on the LTO preset), which would bias everything.
    From the first clean sweep (two full sweeps before it) on, every cycle counts: the
    reference pair alone may be the log's last (yadg GCPL issue 175: five C/8 cycles whose
    rates differ by under 3 %, a curve that moves 160 mV from the first to the fourth,
    and a fit of the last one only replayed the first at 128 mV).
    """
    out = list(socs)
    z = np.array(out[ref["log"]], dtype=float)
    z[:ref["fit_from"]] = np.nan
    out[ref["log"]] = z
    return out


def _on_grid(values, grid):
    """A parameter from the fit (scalar, or per refine.KNOTS) onto the OCV grid, every
    value > 0 (a knot NNLS set to 0 gets FLOOR_SHARE of the largest)."""
    v = np.atleast_1d(np.asarray(values, dtype=float))
    v = np.maximum(v, FLOOR_SHARE * float(v.max()))
    if v.size == 1:
        return float(v[0])
    return np.interp(grid, refine.KNOTS, v).tolist()


def _usable(params: dict, grid, r0_edges_ohm: float) -> dict:
    """Drop RC pairs NNLS set to zero and a zero Butler-Volmer term; tables onto the OCV
    grid. No series resistance left at all: R0 from the step edges (``r0_edges_ohm``),
    InputError if those are not positive either."""
    params = dict(params)
    kept = [p for p in params["rc"] if np.max(p["r_ohm"]) > 0]
    params["rc_dropped"] = len(params["rc"]) - len(kept)
    r0 = np.atleast_1d(np.asarray(params["r0_ohm"], dtype=float))
    bv = params["bv"] if params["bv"] and params["bv"]["v_T"] > 0 else None
    if not np.any(r0 > 0) and not kept and bv is None:
        if not r0_edges_ohm > 0:
            raise InputError("r0: the logs show no series resistance; run protocols/hppc.json")
        r0 = np.array([r0_edges_ohm])
        params["r0_from_edges"] = True
    if not np.any(r0 > 0):
        r0 = np.array([1e-6])      # all of it in the RC pairs or the charge transfer
    params["r0_knots_ohm"] = r0.tolist()
    params["r0_ohm"] = _on_grid(r0, grid)
    params["rc"] = [{"r_ohm": _on_grid(p["r_ohm"], grid), "tau_s": p["tau_s"]} for p in kept]
    params["bv"] = bv
    return params


def _unswept_floor_V(fit) -> float:
    """The blocks' held-out RMS (V) when no low-rate sweep was held out, else 0 (fit.error)."""
    if np.isfinite(fit.sweep_rmse_V) or not np.isfinite(fit.block_rmse_V):
        return 0.0
    return float(fit.block_rmse_V)


def _slow_ohm(steady_ohm: float, r0_edges_ohm: float) -> float:
    """The part of the model's steady resistance the step edges do not show at once (ohm;
    all of it when the logs have no usable edge)."""
    if not np.isfinite(r0_edges_ohm) or r0_edges_ohm <= 0:
        return steady_ohm
    return max(steady_ohm - r0_edges_ohm, 0.0)


def _r0_typical(params: dict) -> float:
    return float(np.median(params["r0_ohm"]))


def _gap_estimate(curve: dict, params: dict) -> float:
    """Hysteresis from the slow branches: half their gap less the IR part |I| * R_dc (V)."""
    half_gap = 0.5 * (curve["charge_V"] - curve["discharge_V"])
    inside = (curve["soc"] >= 0.05) & (curve["soc"] <= 0.95)
    r_dc = _r0_typical(params) + sum(float(np.median(p["r_ohm"])) for p in params["rc"])
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


def _model(logs, ref, curve, params, chosen, results, assumptions, model_error, est,
           name, chemistry, mass_g) -> dict:
    ocv_V = curve["voltage_V"]
    log = logs[ref["log"]]
    window = [max(float(log.v_V.min()), float(ocv_V[0])), min(float(log.v_V.max()), float(ocv_V[-1]))]
    doc = {
        "schema_version": 1,
        "cell": _cell(logs, name, chemistry, mass_g),
        "capacity_Ah": ref["capacity_Ah"],
        "window_V": window,
        "ocv": {"soc": [round(float(z), 6) for z in curve["soc"]], "voltage_V": ocv_V.tolist()},
        "r0_ohm": params["r0_ohm"],
        "rc": params["rc"],
        "hysteresis": {"m_V": params["m_V"], "m0_V": params["m0_V"], "gamma": params["gamma"]},
        "coulombic_efficiency": ref["coulombic_efficiency"],
        "model_error": model_error,
        "estimator": est,
        "provenance": {
            "source": ", ".join(log.name for log in logs),
            "fit_rmse_V": chosen["fit"].train_rmse_V,
            "held_out_rmse_V": chosen["held_out_rmse_V"],
            "created": datetime.datetime.now(datetime.timezone.utc).date().isoformat(),
            "method": (f"cellbench fit: capacity from {capacity.describe_rate(ref['rate_C'])}"
                       f"{'; ' + capacity.beyond_note(ref) if capacity.beyond_note(ref) else ''}; "
                       f"OCV {curve['method']}, isotonic; R0 from "
                       "current-step edges, RC from relaxations as seeds; structure and parameters "
                       "by NNLS (tau/gamma/i0 grids) chosen by held-out error, scored on 5-95 % SoC"),
            "rmse_soc_range": list(refine.SOC_RANGE),
            "assumptions": assumptions,
            "structure": {"chosen": structure.describe(chosen),
                          "candidates": [structure.describe(r) for r in results],
                          "held_out": HELD_OUT},
        },
    }
    if params["bv"]:
        doc["butler_volmer"] = params["bv"]
    if params["rc_dropped"]:
        doc["provenance"]["rc_dropped"] = (f"{params['rc_dropped']} RC pair(s) had zero "
                                           "resistance in the fit and were left out")
    return load_model(doc)
