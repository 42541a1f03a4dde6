"""The fit report: parameter table, RMSE on 5-95 % SoC, residual plot and OCV plot.

The residuals come from replaying every log's current through the fitted model with
:func:`cellbench.ecm.simulate` (open loop, from the SoC the fit anchored the log at), so
they show what a user of the model file will see, not the refinement's internal numbers.
"""

from pathlib import Path

import numpy as np

from .. import ecm
from ..errors import InputError
from .capacity import beyond_note, describe_rate
from .refine import SOC_RANGE


def replay(model: dict, report: dict) -> list:
    """Per log: dict(t_s, residual_V (model - measured), mask (5-95 % SoC), rmse_V).

    Each replay starts at the first sample the refinement used (the defining log's
    low-rate cycle; see :func:`cellbench.fit._from_cycle`); residuals before it are NaN.
    """
    out = []
    for log, z in zip(report["log_data"], report.get("fit_socs", report["socs"])):
        k0 = int(np.argmax(np.isfinite(z)))
        counter = None if log.counter_Ah is None else log.counter_Ah[k0:]   # an import's: as the fit counted
        sim = ecm.simulate(model, log.t_s[k0:], log.i_A[k0:], float(np.clip(z[k0], 0.0, 1.0)), counter_Ah=counter)
        resid = np.full(log.t_s.size, np.nan)
        resid[k0:] = sim["v_V"] - log.v_V[k0:]
        with np.errstate(invalid="ignore"):
            mask = (z >= SOC_RANGE[0]) & (z <= SOC_RANGE[1])
        rmse = float(np.sqrt(np.mean(resid[mask] ** 2))) if mask.any() else float("nan")
        out.append({"name": log.name, "t_s": log.t_s, "residual_V": resid, "mask": mask, "rmse_V": rmse})
    return out


def summary(model: dict) -> str:
    """One line: capacity, structure, fit and held-out RMSE."""
    prov = model["provenance"]
    chosen = prov["structure"]["chosen"]
    return (f"capacity {model['capacity_Ah'] * 1e3:.5f} mAh, {len(model['rc'])} RC, "
            f"hysteresis {'yes' if chosen['hysteresis'] else 'no'}, SoC tables "
            f"{'yes' if chosen['r_soc'] else 'no'}, Butler-Volmer {'yes' if chosen['butler_volmer'] else 'no'}; "
            f"fit RMSE {prov['fit_rmse_V'] * 1e3:.3f} mV, held-out {prov['held_out_rmse_V'] * 1e3:.3f} mV")


def _table_text(value, unit: str, scale: float = 1.0) -> str:
    v = np.asarray(value, dtype=float) * scale
    return f"{float(v):.3f} {unit}" if v.ndim == 0 else f"{v.min():.3g}-{v.max():.3g} {unit}"


def text(model: dict, report: dict, replays: list) -> str:
    """A plain-text report (parameter table, how each part was found, candidates, RMSE per log)."""
    cyc, edges = report["capacity"], report["r0_edges"]
    lines = [f"cellbench fit: {model['cell']['name']}",
             f"logs: {', '.join(report['logs'])}", "",
             f"{'parameter':<26}{'value':>16}  from"]
    row = lambda name, value, how: lines.append(f"{name:<26}{value:>16}  {how}")
    row("capacity", f"{model['capacity_Ah'] * 1e3:.5f} mAh", describe_rate(cyc["rate_C"]))
    if beyond_note(cyc):
        lines.append(f"{'':<26}{'':>16}  + {beyond_note(cyc)}")
    row("coulombic efficiency", f"{model['coulombic_efficiency']:.5f}",
        "discharge / charge of the slow pair" if cyc["charge"] is not None and cyc["discharge"] is not None
        else "assumed")
    row("window", f"{model['window_V'][0]:.3f}-{model['window_V'][1]:.3f} V", "the slow sweeps' limits")
    row("R0", _table_text(model["r0_ohm"], "ohm"), f"fitted (edges: median {edges['r0_ohm']:.3g} ohm "
        f"over {len(edges['edges_ohm'])})")
    for k, pair in enumerate(model["rc"]):
        row(f"RC{k + 1} R", _table_text(pair["r_ohm"], "ohm"), "fitted (NNLS)")
        row(f"RC{k + 1} tau", f"{pair['tau_s']:.3f} s", "grid")
    hyst = model["hysteresis"]
    if hyst["m_V"] or hyst["m0_V"]:
        row("hysteresis M", f"{hyst['m_V'] * 1e3:.3f} mV", f"fitted (branch gap: "
            f"{report['hysteresis_gap_V'] * 1e3:.3f} mV)")
        row("hysteresis M0", f"{hyst['m0_V'] * 1e3:.3f} mV", "fitted")
        row("hysteresis gamma", f"{hyst['gamma']:.3g}", "grid")
    if "butler_volmer" in model:
        bv = model["butler_volmer"]
        row("Butler-Volmer i0", f"{bv['i0_A'] * 1e3:.4g} mA", "grid")
        row("Butler-Volmer v_T", f"{bv['v_T'] * 1e3:.3f} mV", "fitted")
    prov = model["provenance"]
    lines += ["", f"OCV: {report['ocv']['method']}, {len(model['ocv']['soc'])} points, "
              f"{model['ocv']['voltage_V'][0]:.4f}-{model['ocv']['voltage_V'][-1]:.4f} V", "",
              f"structure by held-out error ({prov['structure']['held_out']}):",
              f"  {'RC':>3} {'hyst':>5} {'tables':>6} {'BV':>5} {'held-out mV':>12} {'behind (se)':>11} {'fit mV':>8}"]
    for cand in prov["structure"]["candidates"]:
        mark = " <- chosen" if all(cand[k] == prov["structure"]["chosen"][k]
                                   for k in ("rc", "hysteresis", "r_soc", "butler_volmer")) else ""
        lines.append(f"  {cand['rc']:>3} {str(cand['hysteresis'])[0]:>5} {str(cand['r_soc'])[0]:>6} "
                     f"{str(cand['butler_volmer'])[0]:>5} {cand['held_out_rmse_V'] * 1e3:>12.3f} "
                     f"{_se(cand.get('behind_best_se')):>11} {cand['fit_rmse_V'] * 1e3:>8.3f}{mark}")
    err = model["model_error"]
    sigma = np.asarray(err["sigma_V"]).reshape(len(err["soc"]), len(err["c_rate"]))
    lines += ["", "model error (held-out sigma, mV) by SoC (rows) and C-rate (columns):",
              "  soc  " + "".join(f"{c:>7g}C" for c in err["c_rate"])]
    lines += [f"  {z:4.2f} " + "".join(f"{v * 1e3:>8.2f}" for v in r) for z, r in zip(err["soc"], sigma)]
    lines += ["", f"voltage RMSE on {SOC_RANGE[0]:.0%}-{SOC_RANGE[1]:.0%} SoC:"]
    for rep, how in zip(replays, report["soc_anchor"]):
        lines.append(f"  {rep['name']}: {rep['rmse_V'] * 1e3:.3f} mV replayed open loop (SoC from {how})")
    lines += [f"assumed: {a}" for a in prov.get("assumptions", [])]
    lines += [f"warning: {w}" for w in report.get("warnings", [])]
    return "\n".join(lines) + "\n"


def figures(model: dict, report: dict, replays: list, out_dir: Path) -> list:
    """residuals.png, ocv.png and r0.png in ``out_dir``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [out_dir / "residuals.png", out_dir / "ocv.png", out_dir / "r0.png"]
    fig, axes = plt.subplots(len(replays), 1, figsize=(9, 2.6 * len(replays)), squeeze=False)
    for ax, rep in zip(axes[:, 0], replays):
        hours = rep["t_s"] / 3600.0
        ax.plot(hours, rep["residual_V"] * 1e3, lw=0.4, color="0.7", label="all")
        ax.plot(hours[rep["mask"]], rep["residual_V"][rep["mask"]] * 1e3, ".", ms=0.8, label="5-95 % SoC")
        ax.set_ylabel("model - measured / mV")
        ax.set_title(f"{rep['name']}: RMSE {rep['rmse_V'] * 1e3:.2f} mV on 5-95 % SoC", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("test time / h")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)

    curve = report["ocv"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(curve["soc"], curve["charge_V"], lw=0.8, label="charge branch")
    ax.plot(curve["soc"], curve["discharge_V"], lw=0.8, label="discharge branch")
    ax.plot(model["ocv"]["soc"], model["ocv"]["voltage_V"], "k", lw=1.4, label="OCV (fitted)")
    ax.set_xlabel("SoC / 1")
    ax.set_ylabel("voltage / V")
    ax.set_title(curve["method"], fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)

    edges = report["r0_edges"]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(edges["edges_soc"], edges["edges_ohm"], "o", ms=3, alpha=0.6, label="current-step edges (dV/dI)")
    soc = np.asarray(model["ocv"]["soc"])
    ax.plot(soc, np.broadcast_to(np.asarray(model["r0_ohm"], dtype=float), soc.shape), "k", label="R0 (refined)")
    ax.set_xlabel("SoC / 1")
    ax.set_ylabel("R0 / ohm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths[2], dpi=110)
    plt.close(fig)
    return paths


def write(model: dict, report: dict, out_dir) -> list:
    """Write report.txt and the PNGs to ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--report: cannot create {out_dir}: {exc.strerror or exc}") from None
    replays = replay(model, report)
    path = out_dir / "report.txt"
    path.write_text(text(model, report, replays))
    return [path] + figures(model, report, replays, out_dir)


def _se(value) -> str:
    """Standard errors behind the best candidate (structure.paired); '-' when unscored or
    beyond judging (a single held-out segment)."""
    return "-" if value is None else f"{value:.2f}"
