"""summary.json: the headline numbers of an analysis, with the conventions that define them."""

import math

import numpy as np

from . import ageing, relaxation
from .cycles import COLUMNS, conventions, first_row


def jsonable(value):
    """Plain JSON types; NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if hasattr(value, "item") else value
    if isinstance(value, (float, np.floating)):
        x = float(value)
        return x if math.isfinite(x) else None
    return value


def table_row(table, k):
    """Row ``k`` of the cycle table as a dict."""
    extra = ["r_dc_ohm", "r_edges", *relaxation.COLUMNS, "r_ct_trend_ohm"]
    return {name: table[name][k] for name in list(COLUMNS) + extra if name in table}


def _complete(table):
    """Indices of cycles with both a charge and a discharge (those with a CE)."""
    return np.flatnonzero(np.isfinite(table["ce_pct"]))


def build_summary(result, ref, sources, settings):
    """The summary dict (JSON-ready) of an AnalysisResult."""
    table, series = result.table, result.series
    cyc = table["cycle"]
    done = _complete(table)
    ce = table["ce_pct"][done]
    r = table["r_dc_ohm"]
    r_ok = np.flatnonzero(np.isfinite(r))
    summary = {
        "log": {"records": len(series), "duration_s": float(series.t_s[-1] - series.t_s[0]),
                "columns_used": series.sources, "notes": series.notes},
        "conventions": dict(conventions(result.mode), mode_source=sources["mode"],
                            cycle_pairing=sources["cycles"]),
        "mass_mg": None if result.mass_g is None else 1e3 * result.mass_g,
        "mass_source": sources["mass"],
        "nominal_capacity_mAh": None if result.nominal_Ah is None else 1e3 * result.nominal_Ah,
        "nominal_capacity_source": sources["nominal_capacity"],
        "cycles": len(cyc),
        "complete_cycles": len(done),
        "first_cycle": table_row(table, first_row(cyc)),
        "ref_cycle": int(ref),
        "reference": table_row(table, int(np.flatnonzero(cyc == ref)[0])),
        "last_cycle": table_row(table, len(cyc) - 1),
        "ce_mean_pct": float(np.mean(ce)) if len(ce) else None,
        "ce_min_after_first_pct": float(np.min(ce[1:])) if len(ce) > 1 else None,
        "rate_blocks": result.rate_blocks,
        "dqdv_peaks": [{"cycle": c["cycle"], "branch": c["branch"], "peaks_V": c["peaks_V"],
                        "heights": c["peak_heights"], "unit": c["unit"]} for c in result.dqdv],
        "resistance": {
            "method": "|dV/dI| across each current step edge, median per cycle",
            "caveat": "includes the polarisation that grows during the record interval across the edge",
            "edges": int(len(result.edges["r_ohm"])),
            "first_ohm": float(r[r_ok[0]]) if len(r_ok) else None,
            "last_ohm": float(r[r_ok[-1]]) if len(r_ok) else None,
            "relaxation": {
                "method": "each rest after a current step fitted as a + b*exp(-t/tau) + c*t: "
                          "R_ohm = jump extrapolated to the switch / I, R_ct = b / I (relaxation.py)",
                "assumption": "the current switched off at the last record under current",
                "rests": int(len(result.relaxations.get("r_ct", []))),
                "fitted": int(np.isfinite(result.relaxations.get("r_ct", np.array([]))).sum()),
            },
        },
        "ageing": ageing.summary(table, result.rate_blocks),
        "settings": settings,
    }
    return jsonable(summary)
