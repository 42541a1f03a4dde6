"""Every file of ../shared/realdata through import -> fit -> estimate, judged as
tests/test_realdata_fit.py judges its committed cuts (issue 9; docs/estimator.md "Every
file of the shared real data"). A measurement, not a test: the shared directory is not in
the repository, and some of its files still miss (the docs say which and why).

Per file, one line: the refusal (exit 2 and its first words), or rows, fit time, capacity,
fit RMSE; the replay restarted at each anchor against the error the model states (5-95 %
SoC); the estimate's distance to the counted SoC interval (RMS) and the share of judged
samples whose +-3 sigma band overlaps it. Run from the repository root:

    .venv/bin/python tools/realdata_all.py [../shared/realdata]
"""

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import test_realdata_fit as judge  # noqa: E402  (the test's truth: anchors, interval, replay)

from cellbench import cli, ecm  # noqa: E402


def _quiet(args: list) -> tuple:
    """(exit code, stderr) of one CLI call, its output swallowed."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        return cli.main(args), err.getvalue().strip()


def _checks(log: pd.DataFrame, model: dict, est: pd.DataFrame) -> str:
    t, v, i = (log[c].to_numpy(float) for c in ("Test Time / s", "Voltage / V", "Current / A"))
    z = judge._counted_soc(log, model["capacity_Ah"])
    k0, v_sim = judge._replay(model, log, z)
    inside = (z[k0:] >= 0.05) & (z[k0:] <= 0.95)
    if not inside.any():
        return "nothing judged: no sample between 5 and 95 % SoC after the first anchor"
    stated = ecm.cellmodel.model_error_V(model, z[k0:][inside], i[k0:][inside] / model["capacity_Ah"])
    out = (f"replay {1e3 * np.sqrt(np.mean((v_sim - v[k0:])[inside] ** 2)):.1f} / stated "
           f"{1e3 * np.sqrt(np.mean(np.asarray(stated) ** 2)):.1f} mV ({inside.sum()} samples)")
    lo, hi = judge._soc_interval(*judge._counted(log, model["capacity_Ah"]))
    judged = (t >= t[0] + judge.LATE_S) & np.isfinite(lo)
    if judged.sum() < 100:
        return out + f" | estimate not judged ({judged.sum()} samples after the first anchor)"
    z_est = np.interp(t, est["Test Time / s"], est["SOC / 1"])[judged]
    std = np.interp(t, est["Test Time / s"], est["SOC Std / 1"])[judged]
    err = np.maximum(lo[judged] - z_est, 0.0) + np.maximum(z_est - hi[judged], 0.0)
    return out + (f" | estimate {100 * np.sqrt(np.mean(err ** 2)):.2f} % RMS, "
                  f"{100 * np.mean(err <= 3 * std):.1f} % inside 3 sigma")


def run(path: Path) -> str:
    with tempfile.TemporaryDirectory() as d:
        log_path, model_path, est_path = Path(d) / "log.csv", Path(d) / "model.json", Path(d) / "est.csv"
        rc, err = _quiet(["import", str(path), "--out", str(log_path)])
        if rc:
            return f"import refused ({rc}): {err[:120]}"
        start = time.perf_counter()
        rc, err = _quiet(["fit", str(log_path), "--out", str(model_path)])
        if rc:
            return f"fit refused ({rc}): {err.splitlines()[-1].removeprefix('cellbench: error: ')[:100]}"
        fit_s = time.perf_counter() - start
        _quiet(["estimate", str(log_path), "--model", str(model_path), "--out", str(est_path)])
        log, model, est = pd.read_csv(log_path), json.loads(model_path.read_text()), pd.read_csv(est_path)
        head = (f"{len(log)} rows, fit {fit_s:.1f} s, {1e3 * model['capacity_Ah']:.4g} mAh, "
                f"fit {1e3 * model['provenance']['fit_rmse_V']:.1f} mV")
        return head + " | " + _checks(log, model, est)


def main(folder: str = str(ROOT.parent / "shared" / "realdata")) -> None:
    for path in sorted(Path(folder).iterdir()):
        if path.name != "SOURCES.txt":
            print(f"{path.name}: {run(path)}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
