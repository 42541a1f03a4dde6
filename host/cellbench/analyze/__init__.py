"""Results the way battery papers report them, from any Battery Data Format log.

``analyze_log(log, mass_mg, mode, out_dir)`` builds the per-cycle table (cycles.py), the
rate-capability blocks (rates.py), dQ/dV of selected cycles (dqdv.py) and DC resistance
per cycle (resistance.py), ohmic and charge-transfer resistance from the rests
(relaxation.py) and the ageing test's summary (ageing.py); with ``out_dir`` it writes
cycles.csv, summary.json, rates.txt, dqdv.csv, edges.csv, relaxations.csv and the figures
(figures.py). ``format_rate_table``
prints the rate blocks as a plain text table.

Units: capacities in mAh (mAh/g with a mass), energies in mWh, voltages in V, currents in
mA (mA/g), resistance in ohm, time in s. Current > 0 charges the cell.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import ageing
from . import cycles as cycles_mod
from . import dqdv as dqdv_mod
from . import kind
from . import relaxation, resistance
from .output import write_outputs
from .rates import DEFAULT_TOL, format_rate_table, rate_blocks
from .reference import PAPER_RATES
from .series import prepare
from .summary import build_summary

__all__ = ["AnalysisResult", "PAPER_RATES", "analyze_log", "format_rate_table"]


@dataclass
class AnalysisResult:
    """Everything one analysis produced.

    series: the prepared log (series.Series); table: per-cycle columns (dict of arrays,
    cycles.COLUMNS plus r_dc_ohm and r_edges); rate_blocks: list of block dicts;
    dqdv: list of dQ/dV dicts (dqdv.dqdv); edges: resistance step edges; summary: the
    summary.json contents; files: paths written (empty without out_dir).
    """

    series: object
    table: dict
    rate_blocks: list
    dqdv: list
    edges: dict
    summary: dict
    mass_g: float | None
    mode: str
    nominal_Ah: float | None
    model_capacity_Ah: float | None
    files: list = field(default_factory=list)
    relaxations: dict = field(default_factory=dict)  # relaxation.relaxations: one row per rest


def _positive(value, name):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name}: not a number: {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise InputError(f"{name}: must be a positive number, not {value!r}")
    return x


def _dig(doc, *keys, scale=1.0):
    """doc[k1][k2]... times scale, or None where any level is missing."""
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return None if doc is None else doc * scale if isinstance(doc, (int, float)) else doc


def _pick(candidates, name):
    """First candidate (value, source) that is set, validated positive; else (None, None)."""
    for value, source in candidates:
        if value is not None:
            return _positive(value, name), source
    return None, None


def _mass_g(mass_mg, sidecar):
    """(active mass in g or None, where it came from)."""
    mg, source = _pick([(mass_mg, "--mass-mg"),
                        (sidecar.get("mass_mg"), "sidecar mass_mg"),
                        (_dig(sidecar, "model", "cell", "active_mass_g", scale=1e3),
                         "sidecar model cell.active_mass_g (a preset assumption)")], "mass_mg")
    return (None if mg is None else mg / 1e3), source


def _nominal_Ah(capacity_mAh, sidecar):
    """(capacity that defines 1C in Ah or None, where it came from)."""
    mAh, source = _pick([(capacity_mAh, "--capacity-mAh"),
                         (_dig(sidecar, "protocol", "sample", "capacity_mAh"), "sidecar protocol sample.capacity_mAh"),
                         (_dig(sidecar, "model", "capacity_Ah", scale=1e3), "sidecar model capacity_Ah")],
                        "capacity_mAh")
    return (None if mAh is None else mAh / 1e3), source


def _model_capacity_Ah(sidecar):
    """The loaded model's capacity (the estimator's SoC scale), None if absent or not valid."""
    value = _dig(sidecar, "model", "capacity_Ah")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def _check_cycles(table, chosen, name):
    """The chosen cycle numbers as ints; InputError naming the first not in the log."""
    present = set(table["cycle"].tolist())
    missing = [c for c in chosen if c not in present]
    if missing:
        raise InputError(f"{name}: cycle {missing[0]} is not in the log")
    return [int(c) for c in chosen]


def _dqdv_cycles(table, chosen, ref):
    """The chosen cycles, or by default the first and last complete cycles and the reference."""
    cyc = table["cycle"]
    if chosen:
        return _check_cycles(table, chosen, "dqdv_cycles")
    full = cyc[np.isfinite(table["ce_pct"])]
    pool = full if len(full) else cyc
    return sorted({int(pool[0]), int(ref), int(pool[-1])} & set(cyc.tolist()))


def _load(log):
    if isinstance(log, (str, Path)):
        from ..bdflog import read_log, read_sidecar
        return read_log(log), read_sidecar(log)
    if not isinstance(log, dict):
        raise InputError("log: expected a path or a dict of columns")
    return log, {}


def _curves(series, table, chosen, ref, dv_V, sigma_V, mass_g):
    """dQ/dV of both branches of each chosen cycle (branches without data are skipped)."""
    out = []
    for cycle in _dqdv_cycles(table, chosen, ref):
        for branch in dqdv_mod.BRANCHES:
            curve = dqdv_mod.dqdv(series, cycle, branch, dv_V, sigma_V, mass_g)
            if curve is not None:
                out.append(curve)
    return out


def analyze_log(log, mass_mg=None, mode=None, out_dir=None, ref_cycle=None, capacity_mAh=None,
                dqdv_cycles=None, plot_cycles=None, dv_V=0.001, sigma_V=0.005, rate_tol=DEFAULT_TOL,
                max_gap_s=60.0, sidecar=None, figures=True, rate_unit=None):
    """Analyse one log (a path, or a dict of BDF column name -> array) and return an
    :class:`AnalysisResult`; with ``out_dir`` also write the tables and figures there.

    mass_mg: active mass (default: the sidecar's); mode: "half" or "full" (default:
    inferred); ref_cycle: cycle for retention (default 2, else 1); capacity_mAh: the
    capacity that defines 1C (default: the sidecar protocol's or model's); dqdv_cycles:
    cycles for dQ/dV (default: first, reference, last); plot_cycles: cycles for the
    voltage-capacity figure; dv_V / sigma_V: dQ/dV grid step and Gaussian width (V);
    rate_tol: relative rate tolerance of a rate block; rate_unit: "C", "mA/g" or "mA" for
    the rate blocks (default: C when a capacity is known, else mA/g, else mA); max_gap_s: widest record interval
    across a step edge used for resistance; sidecar: overrides the log's sidecar dict.
    """
    columns, found_sidecar = _load(log)
    sidecar = found_sidecar if sidecar is None else sidecar
    series = prepare(columns)
    mass_g, mass_source = _mass_g(mass_mg, sidecar)
    nominal_Ah, nominal_source = _nominal_Ah(capacity_mAh, sidecar)
    mode, mode_source = kind.decide(mode, series, sidecar)
    series.cycle, pairing = kind.pair(series, mode)
    table, ref = cycles_mod.cycle_table(series, mass_g, mode, ref_cycle, nominal_Ah)
    edge = resistance.edges(series, max_gap_s=max_gap_s)
    table["r_dc_ohm"], table["r_edges"] = resistance.per_cycle(edge, table["cycle"])
    relax = relaxation.relaxations(series, max_gap_s=max_gap_s)
    table.update(relaxation.per_cycle(relax, table["cycle"]))
    table["r_ct_trend_ohm"] = ageing.trend(relax, table["cycle"])
    result = AnalysisResult(series=series, table=table, rate_blocks=rate_blocks(table, rate_tol, rate_unit),
                            dqdv=_curves(series, table, dqdv_cycles, ref, dv_V, sigma_V, mass_g),
                            edges=edge, summary={}, mass_g=mass_g, mode=mode, nominal_Ah=nominal_Ah,
                            model_capacity_Ah=_model_capacity_Ah(sidecar), relaxations=relax)
    sources = {"mass": mass_source, "nominal_capacity": nominal_source, "mode": mode_source,
               "cycles": pairing}
    settings = {"dv_V": dv_V, "sigma_V": sigma_V, "rate_tol": rate_tol, "rate_unit": rate_unit,
                "max_gap_s": max_gap_s}
    result.summary = build_summary(result, ref, sources, settings)
    if out_dir is not None:
        plot_cycles = _check_cycles(table, plot_cycles, "plot_cycles") if plot_cycles else None
        result.files = write_outputs(result, Path(out_dir), figures=figures, plot_cycles=plot_cycles)
    return result
