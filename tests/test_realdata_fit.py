"""Issue 9, real tester data: import -> fit -> estimate through the CLI, file by file.

The files are in tests/data/realdata (sources and licences in its SOURCES.txt). Each fitted
file is checked against what the tester itself recorded, never against the fit's output:

- capacity: the tester's own discharge counter ('Discharging Capacity / Ah' of the
  imported log, per step) of the log's largest full discharge (one that ends at the
  log's lowest voltage);
- SoC truth: the tester's current counted from the nearest earlier cut-off (0 at the end
  of a full discharge, 1 at the end of a full charge, CC-CV tail included): SoC as the
  tester's own limits define it at that rate;
- replay: the model run open loop on the tester's current from the first cut-off; its
  RMS over 5-95 % of that SoC must not exceed the error the model states for those
  samples (model_error: the model knows its own error);
- estimate (the filter from the first sample's voltage): after the first hour the truth
  lies inside its +-3 sigma band at least 95 % of the time.

Files fit must refuse: exit 2 and one line naming the missing piece (a full sweep that
measures capacity) and a protocol that records it.

Only logs with fast full cycles are fitted here (fit's fallback, capacity from the
slowest full cycle); the low-rate BioLogic and Maccor files are checked in test_fit.py.
Each file takes a few seconds (import, a fit of 24 structures, one filter pass).
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cellbench import cli, ecm
from cellbench.paths import PROTOCOLS

REALDATA = Path(__file__).parent / "data" / "realdata"
LATE_S = 3600.0        # the filter starts from the first voltage: judged after the first hour

# file -> the rate its slowest full cycle ran at (C, the assumption fit must state)
FAST_CYCLES = {
    "neware_TESTCELL0001-B2.ndax": "0.53C",                  # C/2 CC-CV charge, then 1C cycles
    "cellpy_nw_regular_export_ife_example_3cycles.csv": "1.4C",  # 3 cycles at 1.4C
}
# file -> what it holds instead of a full sweep
REFUSED = {
    "beep_arbin_FastCharge_000025_CH8.csv": "a rest",
    "galvani_col_27_issue_74.mpr": "20 rows of one discharge",
    "neware_new_nda_file.nda": "uA steps over a 16 mV window",
    "yadg_gcpl.issue_149.mpr": "10 s pulses",
    "yadg_gcpl.issue_149.mpt": "10 s pulses",
    "yadg_cv.mpr": "a cyclic voltammogram (a potential scan)",
}


def _imported(tmp_path, name):
    out = tmp_path / f"{name}.bdf.csv"
    assert cli.main(["import", str(REALDATA / name), "--out", str(out)]) == 0
    return out


def _cutoffs(log: pd.DataFrame) -> list:
    """(last sample, SoC there) of every step that ends at the log's lowest voltage while
    discharging (0) or at its highest while charging (1), within 1 % of the log's span."""
    v, i = log["Voltage / V"].to_numpy(float), log["Current / A"].to_numpy(float)
    tol = max(0.005, 0.01 * float(np.ptp(v)))
    out = []
    for idx in log.groupby("Step Count / 1", sort=False).indices.values():
        k, sign = int(idx[-1]), np.sign(np.mean(i[idx]))
        if sign < 0 and v[k] <= v.min() + tol:
            out.append((k, 0.0))
        elif sign > 0 and v[k] >= v.max() - tol:
            out.append((k, 1.0))
    return sorted(out)


def _counted_soc(log: pd.DataFrame, capacity_Ah: float) -> np.ndarray:
    """SoC counted from the tester's current (sample k's current over the interval after
    it) from the nearest earlier cut-off; before the first, counted back from it."""
    t, i = log["Test Time / s"].to_numpy(float), log["Current / A"].to_numpy(float)
    q = np.concatenate(([0.0], np.cumsum(i[:-1] * np.diff(t)))) / 3600.0 / capacity_Ah
    cuts = _cutoffs(log)
    ends = np.array([k for k, _ in cuts])
    socs = np.array([z for _, z in cuts])
    n = np.arange(t.size)
    j = np.clip(np.searchsorted(ends + 1, n, side="right") - 1, 0, None)
    return socs[j] + q - q[np.minimum(ends[j] + 1, t.size - 1)]


@pytest.fixture(scope="module", params=sorted(FAST_CYCLES))
def fitted(request, tmp_path_factory):
    """(name, imported log frame, model dict, estimate frame) of one fast-cycle file."""
    tmp_path = tmp_path_factory.mktemp("real")
    name = request.param
    log = _imported(tmp_path, name)
    model_path, est_path = tmp_path / "model.json", tmp_path / "est.csv"
    assert cli.main(["fit", str(log), "--out", str(model_path)]) == 0
    assert cli.main(["estimate", str(log), "--model", str(model_path), "--out", str(est_path)]) == 0
    return name, pd.read_csv(log), json.loads(model_path.read_text()), pd.read_csv(est_path)


def test_capacity_is_the_testers_count_of_the_largest_full_discharge(fitted):
    name, log, model, _ = fitted
    dch = log.groupby("Step Count / 1")["Discharging Capacity / Ah"].agg(lambda s: s.max() - s.min())
    full = [k for k, z in _cutoffs(log) if z == 0.0]
    tester_Ah = max(float(dch[log["Step Count / 1"][k]]) for k in full)
    assert abs(model["capacity_Ah"] - tester_Ah) / tester_Ah < 0.005
    stated = [a for a in model["provenance"]["assumptions"] if a.startswith("capacity from the slowest full cycle")]
    assert stated and f"at {FAST_CYCLES[name]}" in stated[0]


def test_replay_within_the_error_the_model_states(fitted):
    _, log, model, _ = fitted
    t, v, i = (log[c].to_numpy(float) for c in ("Test Time / s", "Voltage / V", "Current / A"))
    z = _counted_soc(log, model["capacity_Ah"])
    k0, z0 = _cutoffs(log)[0]
    sim = ecm.simulate(model, t[k0 + 1:], i[k0 + 1:], z0)
    inside = (z[k0 + 1:] >= 0.05) & (z[k0 + 1:] <= 0.95)
    residual = (sim["v_V"] - v[k0 + 1:])[inside]
    stated = ecm.cellmodel.model_error_V(model, z[k0 + 1:][inside], i[k0 + 1:][inside] / model["capacity_Ah"])
    assert inside.sum() >= 200          # most of each sweep, not a few samples
    assert np.sqrt(np.mean(residual ** 2)) < np.sqrt(np.mean(np.asarray(stated) ** 2))


def test_estimate_band_holds_the_counted_soc(fitted):
    _, log, model, est = fitted
    t = log["Test Time / s"].to_numpy(float)
    z = _counted_soc(log, model["capacity_Ah"])
    late = t >= t[0] + LATE_S
    err = np.interp(t, est["Test Time / s"], est["SOC / 1"])[late] - z[late]
    std = np.interp(t, est["Test Time / s"], est["SOC Std / 1"])[late]
    assert np.mean(np.abs(err) <= 3.0 * std) >= 0.95
    assert np.sqrt(np.mean(err ** 2)) < 0.05


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_naming_what_to_record(name, tmp_path, capsys):
    """No full sweep that measures capacity: exit 2, one line saying so, and the protocol
    it names exists (running it records such a sweep: test_fit.py's
    test_pulses_alone_are_refused_and_the_advice_works fits what it records)."""
    log = _imported(tmp_path, name)
    capsys.readouterr()
    assert cli.main(["fit", str(log), "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("cellbench: error: capacity: ")
    assert "no full sweep that measures capacity" in err
    protocol = re.search(r"protocols/[\w-]+\.json", err).group(0)
    assert (PROTOCOLS.parent / protocol).is_file()
    assert not (tmp_path / "m.json").exists()
