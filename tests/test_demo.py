"""`cellbench demo` end to end, as `make demo` runs it (one run per session, shared).

Checked against the paper (../shared/reference/coin-cells.md, typed in here, not taken from
the demo's own table) and against the Battery Data Format's own validator: the log
validates, the demo ran analyze on its own log (tables and figures), and the printed rate table is within 10 %
of the paper from 0.2C to 5C with the 10C collapse.
"""

import json

import numpy as np
import pytest

from cellbench import bdflog

pytestmark = pytest.mark.hil

# Ding et al., LTO/Li rate test: mean discharge capacity of 5 cycles per rate (mAh/g).
PAPER = [(0.2, 210.0), (0.5, 167.0), (1.0, 150.0), (3.0, 91.0), (5.0, 59.0), (10.0, 0.8),
         (0.2, 177.0)]


def _table(stdout):
    """(rate in C, mAh/g) per row of the printed rate table."""
    lines = stdout.splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("rate"))
    rows = []
    for line in lines[head + 1:]:
        parts = line.split()
        if not parts or not parts[0].endswith("C"):
            break
        rows.append((float(parts[0][:-1]), float(parts[2])))
    return rows


def test_demo_log_validates(demo_run):
    import bdf
    import pandas as pd

    out, _ = demo_run
    log = out / "lto-rate.bdf.csv"
    assert bdf.validate(pd.read_csv(log), raise_on_error=True)["ok"]
    cols = bdflog.read_log(log)
    assert np.all(np.diff(cols["Test Time / s"]) > 0)
    assert set(cols["Step Type"]) >= {"CC_CHG", "CC_DCH"}
    meta = bdflog.read_sidecar(log)
    assert meta["mass_mg"] == 2.0 and meta["stop_reason"] == "end"


def test_demo_rate_table_matches_the_paper(demo_run):
    _, stdout = demo_run
    rows = _table(stdout)
    assert len(rows) == len(PAPER)
    for (rate, got), (want_rate, want) in zip(rows, PAPER):
        assert rate == pytest.approx(want_rate, rel=0.05)
        if want_rate <= 5.0:
            assert got == pytest.approx(want, rel=0.10), (rate, got, want)
        else:  # the collapse at 10C
            assert got < 0.05 * PAPER[0][1]


def test_demo_ran_analyze_on_its_own_log(demo_run):
    out, stdout = demo_run
    analysis = out / "lto-rate_analysis"
    summary = json.loads((analysis / "summary.json").read_text())
    assert summary["cycles"] == 35
    for name in ("cycles.csv", "voltage_capacity.png", "rate_capability.png", "cycling.png",
                 "dqdv.png", "rates.txt"):
        assert (analysis / name).stat().st_size > 0, name
    assert str(analysis) in stdout
