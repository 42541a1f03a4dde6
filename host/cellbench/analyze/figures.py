"""The paper figures, drawn on matplotlib Figure objects (Agg, no pyplot state).

Each ``plot_*`` function returns the Figure (or None when the log lacks what it shows) so tests can inspect axes, series and data;
:func:`save_figures` writes them as PNG. Specific capacity is used when the mass is known.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .soc import coulomb_soc

# Lines drawn per series at most; longer series are thinned by a stride (figures only).
MAX_POINTS = 5000


def _thin(n):
    return slice(None, None, max(1, n // MAX_POINTS))


def _cap_unit(result):
    return ("mAh/g", 1e3 / result.mass_g) if result.mass_g else ("mAh", 1e3)


def default_plot_cycles(table, ref):
    """Up to 5 complete cycles spread evenly from the first to the last, plus the reference."""
    done = table["cycle"][np.isfinite(table["ce_pct"])]
    pool = done if len(done) else table["cycle"]
    picks = pool[np.unique(np.linspace(0, len(pool) - 1, min(5, len(pool))).round().astype(int))]
    return sorted(set(int(c) for c in picks) | ({int(ref)} if ref in set(pool.tolist()) else set()))


def plot_voltage_capacity(result, cycles):
    """Voltage vs (specific) capacity: one line per branch (charge, discharge) per cycle."""
    s = result.series
    unit, scale = _cap_unit(result)
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.add_subplot()
    handles = []
    for k, cyc in enumerate(cycles):
        colour = f"C{k % 10}"
        for want, cum, style in ((1, s.q_chg_Ah, "-"), (-1, s.q_dch_Ah, "--")):
            idx = np.flatnonzero((s.cycle == cyc) & (s.sign == want))
            if len(idx) == 0:
                continue
            idx = idx[_thin(len(idx))]
            label = f"cycle {cyc} {'charge' if want > 0 else 'discharge'}"
            (line,) = ax.plot((cum[idx] - cum[idx[0]]) * scale, s.v_V[idx], style, color=colour, label=label)
            if not handles or handles[-1][1] != f"cycle {cyc}":
                handles.append((line, f"cycle {cyc}"))
    ax.set_xlabel(f"capacity / {unit}")
    ax.set_ylabel("voltage / V")
    ax.set_title("voltage profiles (solid: charge, dashed: discharge)")
    if handles:
        # One legend entry per cycle (its colour); the line style tells the branch.
        ax.legend([h for h, _ in handles], [t for _, t in handles], fontsize="small",
                  loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _outside_legend(ax, handles=None, labels=None):
    """A legend right of the axes, so it never covers data."""
    args = (handles, labels) if handles is not None else ()
    ax.legend(*args, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _from_zero(ax):
    """Y from 0 with headroom above the highest point, so no marker is clipped."""
    top = ax.dataLim.y1 if np.isfinite(ax.dataLim.y1) else 1.0
    ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)


def plot_rate_capability(result):
    """Discharge capacity per cycle: one colour and one legend entry per rate (a rate
    repeated later keeps its colour), labelled by rate, legend beside the axes."""
    from .rates import rate_label
    t = result.table
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    spec = result.mass_g is not None
    q = t["q_dch_mAh_g"] if spec else t["q_dch_mAh"]
    colours = {}
    for b in result.rate_blocks:
        label = rate_label(b["rate"], b["rate_unit"])
        first = label not in colours
        colours.setdefault(label, f"C{len(colours) % 10}")
        sel = (t["cycle"] >= b["first_cycle"]) & (t["cycle"] <= b["last_cycle"])
        ax.plot(t["cycle"][sel], q[sel], "o", color=colours[label], label=label if first else None)
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"discharge capacity / {'mAh/g' if spec else 'mAh'}")
    _from_zero(ax)  # as papers draw it: the fall with rate at its true scale
    ax.set_title("rate capability")
    if result.rate_blocks:
        _outside_legend(ax)
    return fig


def plot_cycling(result):
    """Charge and discharge capacity vs cycle (left axis) and CE (right axis, %)."""
    t = result.table
    spec = result.mass_g is not None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    for col, label, mark in (("q_chg", "charge", "^"), ("q_dch", "discharge", "v")):
        ax.plot(t["cycle"], t[f"{col}_mAh_g" if spec else f"{col}_mAh"], mark, label=label)
    ax.set_xlabel("cycle")
    ax.set_ylabel(f"capacity / {'mAh/g' if spec else 'mAh'}")
    _from_zero(ax)
    ax2 = ax.twinx()
    (ce_line,) = ax2.plot(t["cycle"], t["ce_pct"], "k.-", label="CE (complete cycles)")
    ax2.set_ylabel("coulombic efficiency / %")
    ce = t["ce_pct"][np.isfinite(t["ce_pct"])]
    if len(ce):
        # Without this a constant CE is drawn as an offset axis around 1e-10 wiggles.
        ax2.ticklabel_format(axis="y", useOffset=False)
        lo, hi = min(float(ce.min()), 100.0), max(float(ce.max()), 100.0)
        pad = max(2.0, 0.05 * (hi - lo))        # markers at the extremes stay whole
        ax2.set_ylim(lo - pad, hi + pad)
    ax.set_zorder(ax2.get_zorder() + 1)   # capacity markers above the CE line
    ax.patch.set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    ax2.legend(handles + [ce_line], labels + [ce_line.get_label()], fontsize="small",
               loc="upper left", bbox_to_anchor=(1.15, 1.0), borderaxespad=0.0)
    ax.set_title("capacity and coulombic efficiency")
    return fig


def plot_resistance(result):
    """Median DC resistance per cycle (ohm): resistance growth without EIS. None when no
    cycle has a usable step edge."""
    t = result.table
    ok = np.isfinite(t["r_dc_ohm"])
    if not ok.any():
        return None
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(t["cycle"][ok], t["r_dc_ohm"][ok], "o-", label="median |dV/dI| at step edges")
    ax.set_xlabel("cycle")
    ax.set_ylabel("DC resistance / ohm")
    ax.set_title("resistance from current steps")
    _outside_legend(ax)
    return fig


def plot_ageing(result):
    """The ageing test as papers show it: discharge and charge capacity with CE over the
    cycles (top), and the resistances from the rests (bottom, log scale): charge transfer
    per cycle and its trend, ohmic part after charges and after discharges. None when the
    log holds no ageing block (analyze/ageing.py)."""
    from .ageing import ageing_block
    block = ageing_block(result.rate_blocks)
    if block is None:
        return None
    t = result.table
    sel = (t["cycle"] >= block["first_cycle"]) & (t["cycle"] <= block["last_cycle"])
    cyc = t["cycle"][sel]
    unit, key = ("mAh/g", "mAh_g") if result.mass_g else ("mAh", "mAh")
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(cyc, t[f"q_dch_{key}"][sel], "v", ms=4, label="discharge")
    top.plot(cyc, t[f"q_chg_{key}"][sel], "^", ms=4, mfc="none", label="charge")
    top.set_ylabel(f"capacity / {unit}")
    _from_zero(top)
    ce_ax = top.twinx()
    (ce_line,) = ce_ax.plot(cyc, t["ce_pct"][sel], "k.", ms=3, label="CE")
    ce_ax.set_ylabel("coulombic efficiency / %")
    ce_ax.ticklabel_format(axis="y", useOffset=False)
    ce = t["ce_pct"][sel]
    ce = ce[np.isfinite(ce)]
    if len(ce):
        ce_ax.set_ylim(min(90.0, float(ce.min()) - 1.0), max(102.0, float(ce.max()) + 1.0))
    handles, labels = top.get_legend_handles_labels()
    ce_ax.legend(handles + [ce_line], labels + ["CE"], fontsize="small", loc="upper left",
                 bbox_to_anchor=(1.15, 1.0), borderaxespad=0.0)
    top.set_title(f"ageing at {rate_label_of(block)}: {block['n_cycles']} cycles")
    for name, style, label in (("r_ct_ohm", ".", "charge transfer, per cycle"),
                               ("r_ct_trend_ohm", "-", "charge transfer, trend"),
                               ("r_ohm_chg_ohm", "--", "ohmic, after charge"),
                               ("r_ohm_dch_ohm", ":", "ohmic, after discharge")):
        y = t[name][sel]
        if np.isfinite(y).any():
            bottom.plot(cyc, y, style, label=label)
    bottom.set_yscale("log")  # an LTO cell's ohmic part after discharge is 40x its R_ct
    lo, hi = bottom.dataLim.y0, bottom.dataLim.y1
    if 0 < lo < hi < np.inf:
        bottom.set_ylim(lo / 1.2, hi * 1.2)  # room for a labelled tick above the top point
    plain = FuncFormatter(lambda y, _: f"{y:g}")
    bottom.yaxis.set_major_formatter(plain)
    bottom.yaxis.set_minor_formatter(plain)
    bottom.set_xlabel("cycle")
    bottom.set_ylabel("resistance from rests / ohm")
    _outside_legend(bottom)
    return fig


def rate_label_of(block):
    from .rates import rate_label
    return rate_label(block["rate"], block["rate_unit"])


def plot_dqdv(result):
    """dQ/dV vs voltage, one line per (cycle, branch): a colour per cycle, solid charge,
    dashed discharge."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    colours = {}
    for c in result.dqdv:
        style = "-" if c["branch"] == "charge" else "--"
        colour = colours.setdefault(c["cycle"], f"C{len(colours) % 10}")   # one colour per cycle
        ax.plot(c["v_V"], c["dqdv"], style, color=colour, label=f"cycle {c['cycle']} {c['branch']}")
    ax.set_xlabel("voltage / V")
    ax.set_ylabel(f"dQ/dV / ({result.dqdv[0]['unit'] if result.dqdv else 'mAh/V'})")
    ax.set_title("differential capacity")
    if result.dqdv:
        _outside_legend(ax)
    return fig


def plot_soc(result):
    """Estimated SoC with its +-1 sigma band against coulomb-counted SoC, vs time (h).
    None when the log has no estimator SoC or no capacity to count against."""
    s = result.series
    cap = result.model_capacity_Ah or result.nominal_Ah
    counted = coulomb_soc(s, cap)
    if counted is None:
        return None
    k = _thin(len(s))
    t_h = s.t_s[k] / 3600.0
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    est = s.soc[k]
    std = s.soc_std[k] if s.soc_std is not None else np.zeros_like(est)
    ax.fill_between(t_h, est - std, est + std, alpha=0.3, label="estimate +-1 sigma")
    ax.plot(t_h, est, label="estimated SoC")
    ax.plot(t_h, counted[k], "--", label="coulomb-counted SoC")
    ax.set_xlabel("time / h")
    ax.set_ylabel("SoC / 1")
    ax.set_title("state of charge")
    ax.legend(fontsize="small")
    return fig


def save_figures(result, out_dir, plot_cycles=None, dpi=110):
    """Write the PNGs; returns their paths."""
    cycles = plot_cycles or default_plot_cycles(result.table, result.summary.get("ref_cycle", 1))
    figs = {"voltage_capacity.png": plot_voltage_capacity(result, cycles),
            "rate_capability.png": plot_rate_capability(result),
            "cycling.png": plot_cycling(result),
            "dqdv.png": plot_dqdv(result),
            "resistance.png": plot_resistance(result),
            "ageing.png": plot_ageing(result),
            "soc.png": plot_soc(result)}
    paths = []
    for name, fig in figs.items():
        if fig is not None:
            fig.savefig(out_dir / name, dpi=dpi)
            paths.append(out_dir / name)
    return paths
