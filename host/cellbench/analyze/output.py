"""Write an analysis to a folder: cycles.csv, summary.json, rates.txt, dqdv.csv, edges.csv,
relaxations.csv and the figures."""

import csv
import json
import math

import numpy as np

from ..errors import InputError
from .rates import format_rate_table


def _cell(x):
    """CSV text of one value: integers as such, floats to 10 significant digits, NaN empty."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    return f"{x:.10g}" if math.isfinite(x) else ""


def write_table(table, path):
    """One row per cycle, columns in the table's order."""
    names = list(table)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for k in range(len(table["cycle"])):
            w.writerow([_cell(table[name][k]) for name in names])


def write_dqdv(curves, path):
    """Long format: cycle, branch, voltage_V, dqdv (unit in the header)."""
    unit = curves[0]["unit"] if curves else "mAh/V"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cycle", "branch", "voltage_V", f"dqdv_{unit.replace('/', '_per_').replace(' ', '_')}"])
        for c in curves:
            for v, d in zip(c["v_V"], c["dqdv"]):
                w.writerow([c["cycle"], c["branch"], f"{v:.6f}", _cell(d)])


def write_rows(rows, names, path):
    """Columns ``names`` of a dict of equal-length arrays, one CSV row per element."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(names)
        for row in zip(*(rows[n] for n in names)):
            w.writerow([_cell(x) for x in row])


def write_edges(edge, path):
    """The step edges the resistance came from, one row each."""
    write_rows(edge, ["t_s", "cycle", "di_A", "dt_s", "r_ohm"], path)


RELAXATION_COLUMNS = ["t_s", "cycle", "branch", "i_A", "r_ohm", "r_ct", "tau_s", "rms_V", "points"]


def write_outputs(result, out_dir, figures=True, plot_cycles=None):
    """Write everything; returns the list of paths written. Raises InputError if the
    folder cannot be created or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [out_dir / "cycles.csv", out_dir / "rates.txt", out_dir / "dqdv.csv", out_dir / "edges.csv",
                 out_dir / "relaxations.csv"]
        write_table(result.table, files[0])
        files[1].write_text(format_rate_table(result.rate_blocks) + "\n")
        write_dqdv(result.dqdv, files[2])
        write_edges(result.edges, files[3])
        write_rows(result.relaxations, RELAXATION_COLUMNS, files[4])
        if figures:
            from .figures import save_figures
            files += save_figures(result, out_dir, plot_cycles)
        summary_path = out_dir / "summary.json"
        result.summary["files"] = [p.name for p in files]
        summary_path.write_text(json.dumps(result.summary, indent=1, allow_nan=False) + "\n")
    except OSError as exc:
        raise InputError(f"out: cannot write to {out_dir}: {exc}") from None
    return [summary_path] + files
