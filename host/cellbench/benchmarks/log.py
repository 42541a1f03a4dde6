"""Log throughput (LogWriter rows/s, flushed per row; read_log rows/s) and the demo's wall time
(the paper's LTO rate test on the simulated board, which must stay under two minutes)."""

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

from ..bdflog import LogWriter, read_log

ROWS = 20_000


def _record(k):
    return dict(t_ms=2000 * k, v_uV=1_550_000 + k % 1000, i_nA=-350_000, cycle=1 + k // 500,
                step_count=1 + k // 250, step_index=k % 250, step_type=2, fault=0,
                q_chg_nAh=97 * k, q_dch_nAh=101 * k, q_step_nAh=-(k % 250) * 194,
                e_chg_uWh=150 * k, e_dch_uWh=148 * k, soc_ppm=500_000, soc_std_ppm=2000)


def demo_row():
    """Wall time of `cellbench demo` (quiet), with its test time and row count."""
    from ..commands import demo

    with tempfile.TemporaryDirectory() as tmp:
        out = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = demo.run(argparse.Namespace(out=tmp, seed=0, quiet=True, force=False, board="sim", rp2_dir=None))
        wall = time.perf_counter() - t0
    first = out.getvalue().splitlines()[0] if out.getvalue() else ""
    return {"name": "demo wall time", "value": round(wall, 1), "unit": "s",
            "note": f"exit {code}; target < 120 s; {first}"}


def run():
    records = [_record(k) for k in range(ROWS)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.bdf.csv"
        t0 = time.perf_counter()
        with LogWriter(path, with_soc=True) as log:
            for rec in records:
                log.write(rec)
        write_s = time.perf_counter() - t0
        size = path.stat().st_size
        t0 = time.perf_counter()
        cols = read_log(path)
        read_s = time.perf_counter() - t0
    assert len(cols["Test Time / s"]) == ROWS
    return [
        {"name": "log write", "value": round(ROWS / write_s), "unit": "rows/s",
         "note": f"{ROWS} rows, flushed after each row, SOC columns on"},
        {"name": "log read", "value": round(ROWS / read_s), "unit": "rows/s",
         "note": f"read_log of the same {ROWS}-row CSV"},
        {"name": "log size", "value": round(size / ROWS, 1), "unit": "bytes/row",
         "note": "BDF CSV with 16 columns"},
        demo_row(),
    ]
