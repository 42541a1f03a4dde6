"""Benchmark: ``cellbench import`` speed. A tester's CSV (target >= 200k rows/s), and
real binaries of ../shared/realdata against the reading library's own call (target: at
least its speed).

Both sides of a binary comparison are measured the same way: from the file's path to a
table in memory (the library as a user calls it: NewareNDA.read with its default software
cycle numbers, galvani's MPRfile, mdb-export's CSV read by pandas; ours: read_foreign +
to_bdf, the log's columns), the best of three runs each, taken in turn in one process so
that both see the same load of the shared machine. The whole import (the same plus
writing the BDF CSV) is reported beside it. galvani only maps the file's bytes onto a
record array, so an import that uses it cannot match it; NewareNDA spends most of its
time numbering cycles in a Python loop, which the import does over the status codes.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

CSV_TARGET_ROWS_S = 200_000
REPEATS = 3
SHARED = Path(__file__).resolve().parents[4] / "shared" / "realdata"
# real binaries of ../shared/realdata and the library call each is compared with
BINARIES = (("cellpy_20260302_IFE_BTS85_2_9_8_1.ndax", "NewareNDA.read"), ("neware_test_2.ndax", "NewareNDA.read"),
            ("neware_2-1-6_61.nda", "NewareNDA.read"), ("yadg_gcpl.mpr", "galvani MPRfile"),
            ("cellpy_arbin_20160805_test001_45_cc_01.res", "mdb-export + pandas.read_csv"))


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


def _library_read(path, library):
    """The call the library's users make to read ``path`` (``library`` names it)."""
    if library.startswith("NewareNDA"):
        import NewareNDA

        return lambda: NewareNDA.read(str(path), log_level="CRITICAL")
    if library.startswith("galvani"):
        from galvani import BioLogic

        return lambda: BioLogic.MPRfile(str(path)).data
    import io
    import subprocess

    import pandas as pd

    return lambda: pd.read_csv(io.BytesIO(subprocess.run(
        ["mdb-export", str(path), "Channel_Normal_Table"], capture_output=True, check=True).stdout))


def _binary_rows(path, library, tmp):
    from ..importers import import_file, read_foreign, to_bdf

    lib = _library_read(path, library)
    n = len(lib())
    lib_s, ours_s, whole_s = _best_in_turn([
        lib, lambda: to_bdf(read_foreign(path)),
        lambda: import_file(path, tmp / "binary.bdf.csv", force=True)])
    return [{"name": f"import {path.name}: file -> table in memory", "value": round(n / ours_s),
             "unit": "rows/s", "note": f"{n} rows; {library} of it: {round(n / lib_s)} rows/s "
                                       f"(ours {lib_s / ours_s:.2f}x; best of {REPEATS} each, in turn)"},
            {"name": f"import {path.name} -> BDF CSV", "value": round(n / whole_s), "unit": "rows/s",
             "note": "the same plus writing the log and sidecar"}]


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        rows = _csv_rows(Path(tmp))
        for name, library in BINARIES:
            if (SHARED / name).is_file():
                rows += _binary_rows(SHARED / name, library, Path(tmp))
    return rows
