"""firmware/ekf.py run under the MicroPython unix port (1.29, the board's interpreter, with
an RP2040-sized heap) agrees with the host filter over the same generated log.

The log is what the board sees: integer ms, uV and nA. A small driver script feeds it to
Ekf.step line by line and prints soc, std and the integer ppm outputs back on stdout.
"""

import json
import os
import subprocess

import numpy as np
import pytest

from cellbench.benchmarks.ekf import (FLAT, SLOPED, board_truth, cycling_profile, measured,
                                      shrunk_cell_log)
from cellbench.estimate import estimate
from cellbench.model import load_model
from cellbench.paths import FIRMWARE, MODELS
from cellbench.sim import micropython_binary

DRIVER = """
import sys, json
import ekf
model = json.load(open(sys.argv[1]))
soc0 = None if sys.argv[3] == "ocv" else float(sys.argv[3])
f = ekf.Ekf(model)
first = True
last_t = 0
for line in open(sys.argv[2]):
    t_ms, v_uV, i_nA = [int(x) for x in line.split()]
    if first:
        if soc0 is None:
            f.reset(v_uV=v_uV, i_nA=i_nA)
        else:
            f.reset(soc=soc0)
        dt = 0
        first = False
    else:
        dt = t_ms - last_t
    last_t = t_ms
    f.step(i_nA, v_uV, dt)
    print("%r %r %d %d" % (f.soc, f.P[0] ** 0.5, f.soc_ppm, f.std_ppm))
"""

def _board_log(model, samples, seed):
    t, i = cycling_profile(model, 1, 1.0)
    t, i = t[:samples], i[:samples]
    truth = board_truth(model, t, i, 0.95)
    est = model["estimator"]
    i_m, v_m = measured(truth, i, 5e-7, est["sigma_i_A"], est["sigma_v_V"], seed)
    t_ms = np.round(t * 1000).astype(np.int64)
    t_ms[200] = t_ms[199]          # a repeated sample
    t_ms[300:] += 7000             # a gap: 7 dropped samples
    return t_ms, np.round(v_m * 1e6).astype(np.int64), np.round(i_m * 1e9).astype(np.int64)


def _run_micropython(tmp_path, model, t_ms, v_uV, i_nA, soc0):
    (tmp_path / "driver.py").write_text(DRIVER)
    (tmp_path / "model.json").write_text(json.dumps(load_model(model)))
    np.savetxt(tmp_path / "log.txt", np.column_stack([t_ms, v_uV, i_nA]), fmt="%d")
    # soc0 None: the filter starts from the OCV at the first sample
    args = [micropython_binary(), "-X", "heapsize=180K", "driver.py", "model.json", "log.txt",
            "ocv" if soc0 is None else repr(soc0)]
    env = dict(os.environ, MICROPYPATH=str(FIRMWARE))
    res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return np.array([line.split() for line in res.stdout.splitlines()], dtype=float)


LTO = MODELS / "lto-li-coin.json"
ISSUE9 = dict(SLOPED, rc=[{"r_ohm": [20.0 + 2.0 * k for k in range(11)], "tau_s": 15.0}],
              butler_volmer={"i0_A": [2e-4 + 1e-4 * k for k in range(11)], "v_T": 0.0257},
              model_error={"soc": [0.0, 0.5, 1.0], "c_rate": [0.0, 2.0],
                           "sigma_V": [0.02, 0.04, 0.003, 0.006, 0.01, 0.02]},
              estimator=dict(SLOPED["estimator"], capacity=True))


@pytest.mark.parametrize("model,soc0", [(SLOPED, 0.8), (SLOPED, None), (FLAT, 0.9),
                                        (str(LTO), 0.9), (ISSUE9, 0.8), (ISSUE9, None)],
                         ids=["sloped-soc0", "sloped-ocv", "flat-soc0", "lto-preset",
                              "issue9-keys-soc0", "issue9-keys-ocv"])
@pytest.mark.hil
def test_micropython_filter_agrees_with_host(tmp_path, model, soc0):
    model = load_model(model)
    t_ms, v_uV, i_nA = _board_log(model, 2500, seed=11)
    board = _run_micropython(tmp_path, model, t_ms, v_uV, i_nA, soc0)
    host = estimate(model, t_ms / 1000.0, i_nA * 1e-9, v_uV * 1e-6, soc0=soc0)
    assert board.shape == (t_ms.size, 4)
    assert np.max(np.abs(board[:, 0] - host["soc"])) < 1e-4
    assert np.max(np.abs(board[:, 1] - host["soc_std"])) < 1e-4
    # the integer record fields are the rounded floats
    assert np.all(board[:, 2] == np.round(board[:, 0] * 1e6))
    assert np.all(np.abs(board[:, 3] - board[:, 1] * 1e6) <= 0.5 + 1e-6)


@pytest.mark.hil
def test_micropython_takes_the_chord_as_the_host_does(tmp_path):
    """A knee the count has not reached (benchmarks.ekf.shrunk_cell_log): the board's
    update takes the chord where the host's does."""
    model, t, i_m, v_m, _ = shrunk_cell_log()
    t_ms = np.round(t * 1000).astype(np.int64)
    v_uV, i_nA = np.round(v_m * 1e6).astype(np.int64), np.round(i_m * 1e9).astype(np.int64)
    board = _run_micropython(tmp_path, model, t_ms, v_uV, i_nA, 0.97)
    host = estimate(model, t_ms / 1000.0, i_nA * 1e-9, v_uV * 1e-6, soc0=0.97)
    assert np.max(-np.diff(host["soc"])) > 0.01  # the chord: a count moves 1.4e-4 a sample
    assert np.max(np.abs(board[:, 0] - host["soc"])) < 1e-4
    assert np.max(np.abs(board[:, 1] - host["soc_std"])) < 1e-4


@pytest.mark.parametrize("module", ["ekf.py", "cellmodel.py"])
def test_estimator_modules_have_no_host_only_imports(module):
    """The board has no numpy/typing/dataclasses: the modules must import without them."""
    src = (FIRMWARE / module).read_text()
    for name in ("numpy", "typing", "dataclasses", "machine"):
        assert f"import {name}" not in src and f"from {name}" not in src
