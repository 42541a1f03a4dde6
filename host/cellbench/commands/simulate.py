"""``cellbench simulate LOG --model MODEL.json --soc0 S --out SIM.csv``.

Replays the current of a BDF log through a cell model, open loop (no correction from
the measured voltage), and writes the model's voltage and SoC at the log's times (a log
imported with its tester's charge counters: each interval's charge as the tester counted
it, as the fit does): columns ``Test Time / s``, ``Voltage Model / V``, ``SOC / 1``.
Comparing that voltage with the log's shows how well a model describes a cell.
"""

import csv
import math
from pathlib import Path

import numpy as np

from .. import ecm
from ..bdflog import log_files, read_log, read_sidecar
from ..errors import InputError
from ..fit.data import tester_counter_Ah
from ..model import load_model
from ..outputs import check_output

NAME = "simulate"
HELP = "replay a log's current through a cell model (open loop) and write its voltage and SoC"

TIME = "Test Time / s"
CURRENT = "Current / A"


def add_arguments(parser) -> None:
    parser.add_argument("log", help="BDF log (.bdf.csv, .csv or .parquet)")
    parser.add_argument("--model", required=True, help="cell model file (models/*.json)")
    parser.add_argument("--soc0", type=float, required=True, help="SoC at the log's first sample, 0..1")
    parser.add_argument("--h0", type=float, default=0.0, help="initial hysteresis state, -1..1 (default 0)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def run(args) -> int:
    if not (math.isfinite(args.soc0) and 0.0 <= args.soc0 <= 1.0):
        raise InputError(f"soc0: must be within [0, 1], got {args.soc0}")
    if not (math.isfinite(args.h0) and -1.0 <= args.h0 <= 1.0):
        raise InputError(f"h0: must be within [-1, 1], got {args.h0}")
    check_output(args.out, args.force, inputs=log_files(args.log) + [args.model])
    model = load_model(args.model)
    t_s, i_A, counter_Ah = _time_and_current(read_log(args.log), _sidecar(args.log))
    result = ecm.simulate(model, t_s, i_A, args.soc0, h0=args.h0, counter_Ah=counter_Ah)
    _write(Path(args.out), t_s, result["v_V"], result["soc"])
    return 0


def _sidecar(path) -> dict:
    try:
        return read_sidecar(path)
    except InputError:
        return {}   # it only says whether the log kept a tester's counters


def _time_and_current(log: dict, sidecar: dict):
    """(time, current, the tester's own charge counter or None) of the log's complete rows:
    an import that kept its tester's counters is replayed with each interval's charge as
    the tester counted it (cellbench.fit.data.tester_counter_Ah)."""
    for name in (TIME, CURRENT):
        if name not in log:
            raise InputError(f"log: has no '{name}' column")
    t_s = np.asarray(log[TIME], dtype=float)
    i_A = np.asarray(log[CURRENT], dtype=float)
    keep = np.isfinite(t_s) & np.isfinite(i_A)   # blank cells in a partial row
    if not keep.any():
        raise InputError("log: has no rows with both time and current")
    if np.any(np.diff(t_s[keep]) < 0):
        raise InputError(f"log: '{TIME}' goes backwards")
    counter = tester_counter_Ah(log, sidecar)
    return t_s[keep], i_A[keep], None if counter is None else counter[keep]


def _write(path: Path, t_s, v_V, soc) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([TIME, "Voltage Model / V", "SOC / 1"])
            for row in zip(t_s.tolist(), v_V.tolist(), soc.tolist()):
                writer.writerow([f"{row[0]:.3f}", f"{row[1]:.6f}", f"{row[2]:.6f}"])
    except OSError as exc:
        raise InputError(f"out: cannot write {path}: {exc.strerror or exc}") from None
