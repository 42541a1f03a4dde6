"""Benchmark: ``cellbench import`` speed. A tester's CSV (target >= 200k rows/s), and
each real Neware binary of ../shared/realdata against NewareNDA's own read of it.

Both sides of the binary comparison are measured the same way: from the file's path to
a table in memory (NewareNDA.read as a user calls it, with its default software cycle
numbers; ours: read_foreign + to_bdf, the log's columns), the best of three runs each,
taken in turn in one process so that both see the same load of the shared machine.
The whole import (the same plus writing the BDF CSV) is reported beside it.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

CSV_TARGET_ROWS_S = 200_000
REPEATS = 3
SHARED = Path(__file__).resolve().parents[4] / "shared" / "realdata"
NEWARE_BINARIES = ("cellpy_20260302_IFE_BTS85_2_9_8_1.ndax", "neware_test_2.ndax")


def _seconds(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _best_in_turn(fns, repeats=REPEATS):
    """The shortest wall time of each of ``fns``, run in turn ``repeats`` times."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            best[k] = min(best[k], _seconds(fn)[1])
    return best


def _csv_rows(tmp):
    """The analyze benchmark's 1M-record log written as an Arbin CSV export, imported."""
    import pandas as pd

    from ..importers import import_file
    from .analyze import make_big_log

    log, _ = make_big_log()
    n = len(log["Test Time / s"])
    src = tmp / "arbin.csv"
    pd.DataFrame({"Data_Point": np.arange(n), "Test_Time(s)": log["Test Time / s"],
                  "Step_Index": log["Step Count / 1"], "Cycle_Index": log["Cycle Count / 1"],
                  "Current(A)": log["Current / A"], "Voltage(V)": log["Voltage / V"]}).to_csv(src, index=False)
    csv_s = min(_seconds(lambda: import_file(src, tmp / "arbin.bdf.csv", force=True))[1] for _ in range(2))
    return [{"name": "import CSV (Arbin layout) -> BDF CSV", "value": round(n / csv_s), "unit": "rows/s",
             "note": f"{n} rows in {csv_s:.2f} s (best of 2); target >= {CSV_TARGET_ROWS_S}"}]


def _neware_rows(path, tmp):
    import NewareNDA

    from ..importers import import_file, read_foreign, to_bdf

    n = len(NewareNDA.read(str(path), log_level="CRITICAL"))
    lib_s, ours_s, whole_s = _best_in_turn([
        lambda: NewareNDA.read(str(path), log_level="CRITICAL"),
        lambda: to_bdf(read_foreign(path)),
        lambda: import_file(path, tmp / "neware.bdf.csv", force=True)])
    return [{"name": f"import {path.name}: file -> table in memory", "value": round(n / ours_s),
             "unit": "rows/s", "note": f"{n} rows; NewareNDA.read of it: {round(n / lib_s)} rows/s "
                                       f"(ours {lib_s / ours_s:.1f}x; best of {REPEATS} each, in turn)"},
            {"name": f"import {path.name} -> BDF CSV", "value": round(n / whole_s), "unit": "rows/s",
             "note": "the same plus writing the log and sidecar"}]


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = _csv_rows(Path(tmp))
        for name in NEWARE_BINARIES:
            if (SHARED / name).is_file():
                rows += _neware_rows(SHARED / name, Path(tmp))
    return rows
