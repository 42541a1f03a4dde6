"""Model structure chosen by held-out error: RC pairs, hysteresis, SoC tables, Butler-Volmer.

Every candidate structure (0-2 RC pairs x hysteresis x R0/RC as SoC tables x a
Butler-Volmer charge-transfer term) is fitted by :mod:`.refine` and scored by how well
it predicts the folds it was not fitted on. The time constants of n pairs come from one
grid search with scalar resistances (shared by every candidate with n pairs); gamma and
i0 from grids per candidate. Among the candidates whose held-out RMSE is within
``TOLERANCE`` of the best, the cheapest on the board wins (every RC pair is a filter
state, a table a lookup per tick, the hysteresis a state, Butler-Volmer an asinh).
A user override (``--rc``, ``--hysteresis``, ``--r0-soc``, ``--butler-volmer``) pins that
part of the structure. Beside the cell's structure, :func:`search` decides by the same
held-out error whether the log's SoC count drifted after its last anchor
(fit.drift): the log's error, fitted so it does not bend the cell's parameters.
"""

import itertools
from dataclasses import asdict, dataclass, replace

import numpy as np

from . import refine

TOLERANCE = 0.03            # relative held-out RMSE within which a cheaper structure wins
TOLERANCE_V = 2e-4          # ... or absolute (V): differences below noise do not count
PROBE_GAIN = 0.2            # held-out share the count's drift must take off before a second search
V_T_TYPICAL = 0.0257


@dataclass(frozen=True)
class Spec:
    rc: int
    hysteresis: bool
    r_soc: bool
    butler_volmer: bool

    def cost(self) -> float:
        """Board cost, in rough units of one filter state (the covariance grows with states)."""
        return 2.0 * self.rc + 1.5 * self.hysteresis + 1.0 * self.r_soc + 0.5 * self.butler_volmer


def specs(rc=None, hysteresis=None, r_soc=None, butler_volmer=None) -> list:
    """Candidate structures; an argument that is not None pins that part."""
    pick = lambda value, options: options if value is None else [value]
    return [Spec(*combo) for combo in itertools.product(
        pick(rc, [0, 1, 2]), pick(hysteresis, [False, True]), pick(r_soc, [False, True]),
        pick(butler_volmer, [False, True]))]


def fit_spec(rows: refine.Rows, spec: Spec, taus_s: list, capacity_Ah: float, drift: list = ()) -> dict:
    """Fit one structure, with the count's ``drift`` columns (drift.columns) beside
    it or not; returns {"spec", "fit" (refine.Fit), "params", "held_out_rmse_V", "drift"}."""
    fixed, blocks = [], []

    def add(cols):
        start = len(fixed)
        fixed.extend(cols)
        if len(cols) > 1:
            blocks.append(list(range(start, start + len(cols))))

    add(refine.r0_columns(rows, spec.r_soc))
    for tau in taus_s:
        add(refine.rc_columns(rows, tau, spec.r_soc))
    if spec.hysteresis:
        fixed.append(refine.sign_column(rows))
    pools, names = [], []
    if spec.hysteresis:
        pools.append([refine.hysteresis_column(rows, g, capacity_Ah) for g in refine.GAMMAS])
        names.append("gamma")
    if spec.butler_volmer:
        pools.append([refine.bv_column(rows, f * capacity_Ah) for f in refine.I0_PER_C])
        names.append("i0")
    # the drift columns last: _unpack reads the cell's parameters from the front
    chosen = refine.best_of_grid(rows, fixed + list(drift), blocks, pools)
    columns = fixed + [pool[k] for pool, k in zip(pools, chosen)] + list(drift)
    fit = refine.solve(rows, columns, blocks)
    grid = dict(zip(names, chosen))
    params = _unpack(fit.coef, spec, taus_s, grid, capacity_Ah)
    return {"spec": spec, "fit": fit, "params": params, "held_out_rmse_V": fit.held_out_rmse_V,
            "drift": bool(len(drift))}


def _unpack(x: np.ndarray, spec: Spec, taus_s: list, grid: dict, capacity_Ah: float) -> dict:
    """Coefficients to parameters (tables on refine.KNOTS)."""
    width = refine.KNOTS.size if spec.r_soc else 1
    take = lambda k: (x[k:k + width].tolist() if spec.r_soc else float(x[k]))
    out = {"r0_ohm": take(0), "rc": [], "m_V": 0.0, "m0_V": 0.0, "gamma": 0.0, "bv": None}
    k = width
    for tau in taus_s:
        out["rc"].append({"r_ohm": take(k), "tau_s": float(tau)})
        k += width
    if spec.hysteresis:
        out["m0_V"] = float(x[k])
        out["m_V"] = float(x[k + 1])
        out["gamma"] = float(refine.GAMMAS[grid["gamma"]])
        k += 2
    if spec.butler_volmer:
        out["bv"] = {"i0_A": float(refine.I0_PER_C[grid["i0"]] * capacity_Ah), "v_T": float(x[k])}
    return out


def choose(results: list) -> dict:
    """The cheapest candidate whose held-out RMSE is within TOLERANCE of the best, or its
    Butler-Volmer twin when that one is within TOLERANCE too and fits the log better by
    more than TOLERANCE and TOLERANCE_V (the curvature is in the data, not in the noise:
    on a linear cell the twin's fit RMSE is the same to 0.1 %).

    Why the twin: within the tolerance the held-out blocks cannot tell a linear
    resistance from a charge-transfer term, but beyond the log's largest current the
    two part: a linear resistance fitted to a sub-linear response overshoots there. On
    the PyBaMM cells (tests/data/pybamm: fitted on 1C pulses, replayed on 2C drives)
    the twin cut the held-out drive error from 26-27 to 16-18 mV (NMC811) and from 15 to
    13-15 mV (LFP).
    """
    scored = [r for r in results if np.isfinite(r["held_out_rmse_V"])]
    if not scored:
        return min(results, key=lambda r: r["fit"].train_rmse_V)
    best = min(r["held_out_rmse_V"] for r in scored)
    limit = max(best * (1.0 + TOLERANCE), best + TOLERANCE_V)
    near = [r for r in scored if r["held_out_rmse_V"] <= limit]
    cheapest = min(near, key=lambda r: (r["spec"].cost(), r["held_out_rmse_V"]))
    twin = replace(cheapest["spec"], butler_volmer=True)
    better = min(cheapest["fit"].train_rmse_V * (1.0 - TOLERANCE), cheapest["fit"].train_rmse_V - TOLERANCE_V)
    return next((r for r in near if r["spec"] == twin and r["fit"].train_rmse_V < better), cheapest)


def search(rows: refine.Rows, seeds_s: dict, capacity_Ah: float, **pins) -> tuple:
    """(chosen result, all results): every candidate of :func:`specs` fitted and scored.

    ``seeds_s``: {n_rc: [tau seeds]} for the pair counts to try.

    When the logs have a stretch the SoC count runs free in (``rows.drift``), the count's
    drift columns are tried too: first beside the chosen candidate and beside the
    richest one (their time constants kept; a drift the plain pass bent its choice to can
    leave the chosen one too poor for them to help), and only when that takes PROBE_GAIN
    off the held-out error of either (the count clearly off: a second search doubles the
    fit's time), the whole search again with them (time constants and all). That pass
    wins when its chosen candidate predicts the held-out data better than the first
    pass's by the tolerance (four more coefficients must earn their place; they cost the
    board nothing, the model leaves them out). On the PyBaMM NMC811 char-log, before the fit counted the charge beyond
    the C/20 cut-offs (soc.py), the count was 1 % SoC off over the pulse train: the probe
    halved the held-out error, the drift pass took it from 8.7 to 4.1 mV (two RC pairs
    instead of one) and the held-out drives from 12.8/13.8 to 7.2/8.3 mV. With that
    count the probe finds no drift on any of the four PyBaMM cells (two candidates more).
    """
    plain = _search(rows, seeds_s, capacity_Ah, [], pins)
    if not rows.drift:
        return plain
    best = plain[0]
    if not any(_drift_helps(rows, r, capacity_Ah) for r in (best, max(plain[1], key=lambda r: r["spec"].cost()))):
        return plain
    drifted = _search(rows, seeds_s, capacity_Ah, rows.drift, pins)
    return drifted if _better(drifted[0], best) else plain


def _drift_helps(rows: refine.Rows, result: dict, capacity_Ah: float) -> bool:
    """The count's drift columns beside ``result``'s structure and time constants take
    PROBE_GAIN off its held-out error."""
    taus = [p["tau_s"] for p in result["params"]["rc"]]
    probe = fit_spec(rows, result["spec"], taus, capacity_Ah, rows.drift)
    return bool(probe["held_out_rmse_V"] < (1.0 - PROBE_GAIN) * result["held_out_rmse_V"])


def _better(result: dict, than: dict) -> bool:
    """``result`` predicts the held-out data better than ``than`` by TOLERANCE (relative)
    and TOLERANCE_V (absolute)."""
    a, b = than["held_out_rmse_V"], result["held_out_rmse_V"]
    return bool(np.isfinite(b) and (not np.isfinite(a) or b < min(a * (1.0 - TOLERANCE), a - TOLERANCE_V)))


def _search(rows, seeds_s, capacity_Ah, drift, pins) -> tuple:
    taus = {n: refine.search_taus(rows, seeds_s[n], drift) for n in sorted({s.rc for s in specs(**pins)})}
    results = [fit_spec(rows, spec, taus[spec.rc], capacity_Ah, drift) for spec in specs(**pins)]
    return choose(results), results


def describe(result: dict) -> dict:
    """A candidate for provenance.structure: its switches, whether the count's drift was
    fitted beside it (:func:`search`), and its held-out RMSE (V)."""
    fit = result["fit"]
    num = lambda x: None if not np.isfinite(x) else round(float(x), 7)
    return {**asdict(result["spec"]), "count_drift": bool(result.get("drift")),
            "held_out_rmse_V": num(result["held_out_rmse_V"]),
            "blocks_rmse_V": num(fit.block_rmse_V), "sweeps_rmse_V": num(fit.sweep_rmse_V),
            "high_current_rmse_V": num(fit.rate_rmse_V),
            "fit_rmse_V": num(fit.train_rmse_V)}
