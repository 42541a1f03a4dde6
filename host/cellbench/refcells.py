"""The PyBaMM reference cells of tests/data/pybamm/ (made by tools/pybamm_refs.py).

Each cell folder holds ``cell.json`` (parameter set, chemistry, true capacity in Ah, window in V,
1C in A, the board's current offset in A, whether the OCV is flat, the true OCV table, and
what each run is) and per run ``<run>.bdf.csv.gz`` (the log as the board records it: BDF
columns, measured voltage and current), its sidecar ``<run>.bdf.csv.gz.json``, and
``<run>.truth.csv.gz`` (one row per log row: ``t_s``, true current ``i_A`` (> 0 charges),
true terminal voltage ``v_V``, true SoC ``soc`` (PyBaMM's thermodynamic SoC: 0 and 1 where the
OCV is at the window's limits), true charge in/out ``q_chg_Ah``/``q_dch_Ah``).
Reading them needs numpy only, never PyBaMM.
"""

import gzip
import json
from pathlib import Path

import numpy as np

from .errors import InputError
from .paths import ROOT

REFDIR = ROOT / "tests" / "data" / "pybamm"
CHARACTERISATION = ("c20-charged", "c20-discharged", "gitt", "hppc", "char-log")
HELD_OUT = ("drive", "drive-b")
TRUTH_COLUMNS = ("t_s", "i_A", "v_V", "soc", "q_chg_Ah", "q_dch_Ah")


def cells(refdir=REFDIR) -> list:
    """Names of the reference cells present (folders with a cell.json), sorted."""
    return sorted(p.parent.name for p in Path(refdir).glob("*/cell.json"))


def cell(name, refdir=REFDIR) -> dict:
    """The cell's facts (cell.json)."""
    path = Path(refdir) / name / "cell.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"refcells: cannot read {path}: {exc}") from None


def held_out_runs(name, refdir=REFDIR) -> list:
    """The cell's held-out drive profiles present in the set, in the generator's order."""
    return [r for r, what in cell(name, refdir)["runs"].items() if what.get("held_out")]


def log_path(name, run, refdir=REFDIR) -> Path:
    """The run's BDF log (gzip CSV; cellbench.bdflog.read_log reads it as it is)."""
    return Path(refdir) / name / f"{run}.bdf.csv.gz"


def truth(name, run, refdir=REFDIR) -> dict:
    """The run's truth as a dict of float arrays (TRUTH_COLUMNS), one row per log row."""
    path = Path(refdir) / name / f"{run}.truth.csv.gz"
    try:
        with gzip.open(path, "rt") as f:
            header = f.readline().strip().split(",")
            data = np.loadtxt(f, delimiter=",", ndmin=2)
    except (OSError, ValueError) as exc:
        raise InputError(f"refcells: cannot read {path}: {exc}") from None
    if header != list(TRUTH_COLUMNS):
        raise InputError(f"refcells: {path} is not a truth file")
    return {k: data[:, n] for n, k in enumerate(TRUTH_COLUMNS)}
