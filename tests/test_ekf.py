"""The host SoC filter (cellbench.estimate) against references: filterpy's EKF, the
firmware filter itself run under CPython, float64 vs float32, the fallback when the
compiled kernel cannot run, and the CLI around it.

Truth comes from cellbench.ecm.simulate (via benchmarks.ekf.board_truth), never from the
filter code.
"""

import copy
import csv
import json

import numba
import numpy as np
import pytest
from numba import types
from numba.core import compiler, ir, typed_passes
from numba.core.registry import cpu_target

from cellbench import bdflog, cli, estimate_kernel, fw
from cellbench import estimate as estimate_mod
from cellbench.benchmarks.ekf import (FLAT, SLOPED, FilterpyTwin, board_truth,
                                      cycling_profile, measured, shrunk_cell_log)
from cellbench.errors import InputError
from cellbench.estimate import _estimate_python, estimate, filter_for


def _one_rc_table_model():
    """SLOPED with one RC pair, an R0 table and no bias state."""
    m = copy.deepcopy(SLOPED)
    m["rc"] = m["rc"][:1]
    m["r0_ohm"] = [40.0 + 3.0 * abs(k - 5) for k in range(11)]
    m["estimator"]["bias"] = False
    return m


def _branch_model():
    """FLAT with charge/discharge branches: M(z) = half their gap, varying with SoC."""
    m = copy.deepcopy(FLAT)
    gap = [0.01 + 0.03 * k / 20 for k in range(21)]
    m["ocv"]["charge_V"] = [v + g for v, g in zip(m["ocv"]["voltage_V"], gap)]
    m["ocv"]["discharge_V"] = [v - g for v, g in zip(m["ocv"]["voltage_V"], gap)]
    return m


def _issue9_model():
    """SLOPED with every issue-9 key: RC resistance tables, a Butler-Volmer term with an
    i0 table, a model_error table (SoC x C-rate) and the bias and capacity-scale states."""
    m = copy.deepcopy(SLOPED)
    m["rc"] = [{"r_ohm": [20.0 + 2.0 * k for k in range(11)], "tau_s": 15.0},
               {"r_ohm": 35.0, "tau_s": 400.0}]
    m["butler_volmer"] = {"i0_A": [2e-4 + 1e-4 * k for k in range(11)], "v_T": 0.0257}
    m["model_error"] = {"soc": [0.0, 0.1, 0.5, 0.9, 1.0], "c_rate": [0.0, 0.5, 2.0],
                        "sigma_V": [0.02, 0.03, 0.05, 0.006, 0.008, 0.015, 0.002, 0.003,
                                    0.006, 0.003, 0.005, 0.01, 0.01, 0.015, 0.03],
                        "look_tau_s": 400.0, "method": "test table"}
    m["estimator"].update(capacity=True, p0_cap=0.01, q_cap=1e-9)
    return m


def _capacity_only_model():
    """FLAT with one RC pair, the capacity-scale state and no bias state."""
    m = copy.deepcopy(FLAT)
    m["rc"] = m["rc"][:1]
    m["estimator"].update(bias=False, capacity=True)
    return m


def _fine_table_model():
    """SLOPED with its OCV and R0 on a 1001-point grid (the kernel has no table limit)."""
    m = copy.deepcopy(SLOPED)
    grid = np.linspace(0.0, 1.0, 1001)
    m["ocv"] = {"soc": grid.tolist(),
                "voltage_V": np.interp(grid, SLOPED["ocv"]["soc"], SLOPED["ocv"]["voltage_V"]).tolist()}
    m["r0_ohm"] = (40.0 + 10.0 * (grid - 0.5) ** 2).tolist()
    return m


MODELS = {"sloped_2rc_bias": SLOPED, "sloped_1rc_table": _one_rc_table_model(), "flat": FLAT,
          "flat_branches": _branch_model(), "sloped_issue9": _issue9_model(),
          "flat_capacity": _capacity_only_model()}


def _log(model, samples=3000, offset=1e-6, seed=0, soc0=0.97):
    t, i = cycling_profile(model, 1, 1.0)
    t, i = t[:samples], i[:samples]
    truth = board_truth(model, t, i, soc0)
    est = model["estimator"]
    i_m, v_m = measured(truth, i, offset, est["sigma_i_A"], est["sigma_v_V"], seed)
    return t, i_m, v_m, truth


def _run_twin(model, t, i_m, v_m, soc0):
    twin = FilterpyTwin(model, soc0)
    rows = [twin.step(i_m[k], v_m[k], t[k] - t[k - 1] if k else 0.0) for k in range(t.size)]
    return np.array(rows), twin


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("soc0", [0.85, 0.4])  # 0.4: large first corrections, iterated updates
def test_host_filter_matches_filterpy(name, soc0):
    model = MODELS[name]
    t, i_m, v_m, _ = _log(model)
    out = estimate(model, t, i_m, v_m, soc0=soc0, full=True)
    ref, twin = _run_twin(model, t, i_m, v_m, soc0)
    assert np.max(np.abs(out["soc"] - ref[:, 0])) < 1e-9
    assert np.max(np.abs(out["soc_std"] - ref[:, 1])) < 1e-9
    assert np.max(np.abs(out["v_model"] - ref[:, 2])) < 1e-9
    assert np.max(np.abs(out["P"][-1] - twin.kf.P)) < 1e-9


def test_gated_innovations_match_filterpy():
    """Voltage spikes far beyond the gate: both inflate R to sit on the gate."""
    model = SLOPED
    t, i_m, v_m, _ = _log(model, samples=1500)
    v_m = v_m.copy()
    v_m[100::97] += 0.4
    v_m[150::131] -= 0.7
    out = estimate(model, t, i_m, v_m, soc0=0.9)
    ref, _ = _run_twin(model, t, i_m, v_m, 0.9)
    assert np.max(np.abs(out["soc"] - ref[:, 0])) < 1e-9
    assert np.max(np.abs(out["soc_std"] - ref[:, 1])) < 1e-9


def test_spikes_move_the_estimate_little():
    t, i_m, v_m, truth = _log(SLOPED, samples=2000)
    clean = estimate(SLOPED, t, i_m, v_m, soc0=0.97)["soc"]
    v_bad = v_m.copy()
    v_bad[500::200] += 1.0
    spiked = estimate(SLOPED, t, i_m, v_bad, soc0=0.97)["soc"]
    assert np.max(np.abs(spiked - clean)) < 0.01


def test_a_knee_the_count_has_not_reached_is_found_at_the_cut_off():
    """One look beyond the gate that only a SoC below 0 explains moves the SoC along the
    chord (firmware/kalman.py _update): at the cut-off the estimate holds the true SoC in
    its 3-sigma band. Walked to at the plateau's slope it ended at 0.23 +- 0.07."""
    model, t, i_m, v_m, truth = shrunk_cell_log()
    counted = 0.97 + np.cumsum(i_m) / (3600.0 * model["capacity_Ah"])
    assert counted[-1] > 0.2 and truth["soc"][-1] < 0.01  # the count is far from the knee
    out = estimate(model, t, i_m, v_m, soc0=0.97)
    end = slice(-5, None)
    assert np.all(np.abs(out["soc"][end] - truth["soc"][end]) <= 3.0 * out["soc_std"][end])
    assert np.all(out["soc"][end] < 0.1)


@pytest.mark.parametrize("reference", ["filterpy", "firmware", "float32"])
def test_the_chord_matches_the_references(reference, compiled_only):
    """The knee of shrunk_cell_log: the kernel against filterpy's EKF with the chord
    written from docs/estimator.md (until the SoC passes 0, where the board's variance
    rule acts and the twin has none), against firmware/ekf.py (throughout), and in float32
    (the board's floats: within the 0.1 % the float32 cycling test allows)."""
    model, t, i_m, v_m, _ = shrunk_cell_log()
    out = estimate(model, t, i_m, v_m, soc0=0.97, full=True)
    tol = 1e-9
    if reference == "filterpy":
        ref, _ = _run_twin(model, t, i_m, v_m, 0.97)
        got = {"soc": ref[:, 0], "soc_std": ref[:, 1]}
    elif reference == "firmware":
        got = _python_filter(model, t, i_m, v_m, 0.97)
    else:
        got, tol = estimate(model, t, i_m, v_m, soc0=0.97, dtype="float32"), 1e-3
    end = np.argmax(out["soc"] < 0.0) if reference == "filterpy" else t.size
    assert np.max(-np.diff(out["soc"][:end])) > 0.01  # the chord was taken: a count moves 1.4e-4
    for key in ("soc", "soc_std"):
        assert np.max(np.abs(out[key][:end] - got[key][:end])) < tol, key


def _python_filter(model, t, i_m, v_m, soc0):
    """firmware/ekf.py itself over the log (estimate's fallback, called directly)."""
    return _estimate_python(filter_for(model), t, i_m, v_m, soc0, True)


@pytest.fixture
def compiled_only(monkeypatch):
    """estimate() that fails instead of falling back to the Python filter: a comparison
    of the kernel with firmware/ekf.py must never compare the fallback with itself."""
    def no_fallback(*args):
        raise AssertionError("the compiled kernel did not run (numba unavailable or "
                             "CELLBENCH_NO_JIT set): nothing to compare the filter with")
    monkeypatch.delenv(estimate_mod.NO_JIT, raising=False)
    monkeypatch.setattr(estimate_mod, "_estimate_python", no_fallback)


@pytest.mark.parametrize("name", sorted(MODELS) + ["fine_table"])
def test_kernel_matches_firmware_filter_in_cpython(name, compiled_only):
    """The numba kernel and firmware/ekf.py are one algorithm: agree to rounding."""
    model = MODELS.get(name) or _fine_table_model()
    t, i_m, v_m, _ = _log(model, samples=1200)
    t, v_m = t.copy(), v_m.copy()
    t[600] = t[599]  # a repeated sample
    v_m[:3] = 0.0    # no credible OCV yet (a board sampled before the cell was connected)
    for soc0 in (None, 0.6):
        fast = estimate(model, t, i_m, v_m, soc0=soc0, full=True)
        slow = _python_filter(model, t, i_m, v_m, soc0)
        for key in ("soc", "soc_std", "v_model", "x", "P"):
            assert np.max(np.abs(fast[key] - slow[key])) < 1e-10, key


def test_model_error_is_read_at_the_load_the_states_still_carry():
    """After a load the table is read at m = max(|i|, m exp(-dt/look_tau_s)) (docs/
    estimator.md "Rests after a load"): the firmware filter's sigma_m^2 at each rest sample
    is the table's value at I exp(-t/tau)/C, computed here from the table's knots; without
    look_tau_s it is the rest column's."""
    model = copy.deepcopy(_issue9_model())
    model["estimator"]["bias"] = False   # the load then is the current sent, exactly
    me = model["model_error"]
    tau_s, i_A = me["look_tau_s"], model["capacity_Ah"] * 1.5   # 1.5C, then rest
    soc, rates, sig = me["soc"], me["c_rate"], np.reshape(me["sigma_V"], (len(me["soc"]), -1))

    def table_V(z, c_rate):
        per_soc = [np.interp(c_rate, rates, row) for row in sig]
        return float(np.interp(z, soc, per_soc))

    for look in (True, False):
        if not look:
            del me["look_tau_s"]
        kf = filter_for(model)
        kf.reset(soc=0.7)
        for _ in range(60):
            kf.step(-round(i_A * 1e9), 3_700_000, 1000)
        for t_s in range(1, 900, 7):   # s since the load's last sample
            z = kf.x[0] + kf._pend     # the SoC the update reads the table at (a rest moves none)
            kf.step(0, 3_700_000, 7000 if t_s > 1 else 1000)
            c = 1.5 * np.exp(-t_s / tau_s) if look else 0.0
            assert np.sqrt(kf._sm2) == pytest.approx(table_V(z, c), rel=1e-6, abs=1e-9), (look, t_s)


def test_firmware_constants_are_the_kernels(compiled_only, monkeypatch):
    """The kernel takes SOC_MAX, FOLD, ... from firmware/ekf.py at every call: with the
    firmware's SoC clamp moved to 0.9 the kernel clamps there too, like the filter."""
    t, i_m, v_m, _ = _log(SLOPED, samples=600)
    i_m = np.abs(i_m) + 1e-4  # charging hard: the estimate runs into the clamp
    monkeypatch.setattr(fw.module("ekf"), "SOC_MAX", 0.9)
    fast = estimate(SLOPED, t, i_m, v_m, soc0=0.85)
    slow = _python_filter(SLOPED, t, i_m, v_m, 0.85)
    assert fast["soc"].max() == pytest.approx(0.9, abs=1e-12)
    assert np.max(np.abs(fast["soc"] - slow["soc"])) < 1e-10


def _float64_ops(func, sig, seen):
    """(function, line, expression) of every float64 arithmetic operation or call that
    the kernel function ``func`` performs for argument types ``sig``, its kernel callees'
    included: numba's type inference alone (what decides the types), no code generation."""
    interp = compiler.run_frontend(func.py_func)
    typing = cpu_target.typing_context
    typing.refresh()
    typed = typed_passes.type_inference_stage(typing, cpu_target.target_context, interp, sig,
                                              None)
    found = []
    for expr, call in typed.calltypes.items():
        if not isinstance(expr, ir.Expr) or call is None:
            continue
        ftype = typed.typemap[expr.func.name] if expr.op == "call" else None
        if isinstance(ftype, types.Dispatcher):
            key = (ftype.dispatcher, call.args)
            if key not in seen:
                seen.add(key)
                found += _float64_ops(ftype.dispatcher, call.args, seen)
        elif call.return_type == types.float64 and expr.op in ("binop", "inplace_binop",
                                                                  "unary", "call"):
            found.append((func.py_func.__name__, expr.loc.line, str(expr)))
    return found


@pytest.mark.parametrize("slow", [False, True], ids=["soc", "slow-states"])
def test_float32_kernel_computes_in_float32(slow):
    """numba types a Python float literal as float64, which would widen a float32
    expression silently: the float32 specialisation may do float64 arithmetic only for
    the time step (the difference of two float64 log times), with or without the
    capacity and resistance estimates."""
    ekf = filter_for(_resistance_model() if slow else SLOPED)
    out = [np.empty(3) for _ in range(3)]
    args = (*estimate_kernel.pack(ekf, fw.module("ekf"), 0.5, np.float32), np.arange(3.0),
            np.zeros(3), np.full(3, 3.7), *out, np.empty((3, 4)), np.empty((0, ekf.n)),
            np.empty((0, ekf.n, ekf.n)), False)
    ops = _float64_ops(estimate_kernel.run, tuple(numba.typeof(a) for a in args), set())
    assert len(ops) == 1 and ops[0][0] == "run" and " - " in ops[0][2], ops


def test_no_jit_falls_back_with_one_warning(monkeypatch, capsys):
    t, i_m, v_m, _ = _log(SLOPED, samples=300)
    fast = estimate(SLOPED, t, i_m, v_m, soc0=0.9, full=True)
    capsys.readouterr()
    monkeypatch.setenv(estimate_mod.NO_JIT, "1")
    monkeypatch.setattr(estimate_mod, "_warned", set())
    slow = estimate(SLOPED, t, i_m, v_m, soc0=0.9, full=True)
    estimate(SLOPED, t, i_m, v_m, soc0=0.9)  # warned once, not at every call
    err = capsys.readouterr().err
    assert err.startswith("cellbench: warning: ") and err.count("\n") == 1
    assert "CELLBENCH_NO_JIT" in err
    for key in ("soc", "soc_std", "v_model", "x", "P"):
        assert np.max(np.abs(fast[key] - slow[key])) < 1e-10, key
    with pytest.raises(InputError, match="float32"):
        estimate(SLOPED, t, i_m, v_m, soc0=0.9, dtype="float32")


def test_a_failing_kernel_falls_back_with_one_warning(monkeypatch, capsys):
    """A kernel that does not compile (a broken numba or LLVM) is the same as none."""
    class Broken:
        def compile(self, sig):
            raise RuntimeError("LLVM ERROR: out of memory\nmore detail")

    t, i_m, v_m, _ = _log(FLAT, samples=300)
    monkeypatch.setattr(estimate_kernel, "run", Broken())
    monkeypatch.setattr(estimate_mod, "_warned", set())
    got = estimate(FLAT, t, i_m, v_m, soc0=0.9)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: LLVM ERROR: out of memory" in err
    ref = _python_filter(FLAT, t, i_m, v_m, 0.9)
    assert np.array_equal(got["soc"], ref["soc"])


def test_reset_without_a_sample_starts_from_the_first_credible_one():
    """The link may reset the filter before the board has sampled (v = 0): the filter
    must then start from the first real sample, as the host does from a log's first row."""
    t, i_m, v_m, _ = _log(FLAT, samples=400)
    host = estimate(FLAT, t, i_m, v_m)
    for args in ((None, 0, 0), ()):  # a reset at 0 V, and a reset with nothing
        f = filter_for(FLAT)
        f.reset(*args)
        assert f.std_ppm > 250_000  # it says it knows nothing
        for k in range(t.size):
            f.step(round(i_m[k] * 1e9), round(v_m[k] * 1e6), 1000)
            assert abs(f.soc - host["soc"][k]) < 1e-6


@pytest.mark.parametrize("name", ["sloped_2rc_bias", "flat", "sloped_issue9"])
def test_float32_stays_within_0p1_percent_over_100_cycles(name):
    model = MODELS[name]
    t, i = cycling_profile(model, 100, dt_s=10.0)
    truth = board_truth(model, t, i, 0.97)
    est = model["estimator"]
    i_m, v_m = measured(truth, i, 1e-7, est["sigma_i_A"], est["sigma_v_V"], seed=3)
    f64 = estimate(model, t, i_m, v_m, soc0=0.9)
    f32 = estimate(model, t, i_m, v_m, soc0=0.9, dtype="float32")
    assert t.size > 60_000
    assert np.max(np.abs(f32["soc"] - f64["soc"])) <= 1e-3
    assert np.all(np.isfinite(f32["soc_std"]))


def test_float32_counts_tiny_increments():
    """2 uA for 100 ms on a 1 mAh cell moves SoC 5.6e-8 a tick: about one float32 spacing
    near 0.3, so a naive z += dz loses ~5 % of the charge (7.5e-4 SoC here). The filter's
    pending sum must keep float32 counting within 2e-5 SoC of float64."""
    model = copy.deepcopy(SLOPED)
    model["estimator"].update(sigma_v_V=1.0, gate=1e6)  # voltage nearly ignored: pure counting
    model["hysteresis"].update(m_V=0.0, m0_V=0.0)  # 2 uA is inside the filter's rest deadband
    n = 200_000
    t = np.arange(n) * 0.1
    i = np.full(n, 2e-6)
    truth_soc = 0.3 + n * 2e-6 * 0.1 * model["coulombic_efficiency"] / 3.6
    v = board_truth(model, t, i, 0.3)["v_V"]
    f32 = estimate(model, t, i, v, soc0=0.3, dtype="float32")["soc"]
    f64 = estimate(model, t, i, v, soc0=0.3)["soc"]
    assert abs(f64[-1] - truth_soc) < 1e-4
    assert abs(f32[-1] - f64[-1]) < 2e-5


def test_repeated_samples_change_nothing():
    t, i_m, v_m, _ = _log(SLOPED, samples=800)
    base = estimate(SLOPED, t, i_m, v_m, soc0=0.9)
    idx = np.sort(np.concatenate([np.arange(t.size), np.arange(0, t.size, 7)]))
    rep = estimate(SLOPED, t[idx], i_m[idx], v_m[idx], soc0=0.9)
    last = np.searchsorted(idx, np.arange(t.size), side="right") - 1
    assert np.array_equal(rep["soc"][last], base["soc"])


def test_bad_inputs_raise_input_error():
    t = np.arange(5.0)
    with pytest.raises(InputError, match="Voltage"):
        estimate(SLOPED, t, np.zeros(5), np.array([3.7, np.nan, 3.7, 3.7, 3.7]))
    with pytest.raises(InputError, match="log"):
        estimate(SLOPED, t, np.zeros(4), np.full(5, 3.7))
    with pytest.raises(InputError, match="soc0"):
        estimate(SLOPED, t, np.zeros(5), np.full(5, 3.7), soc0=2.0)
    bad = copy.deepcopy(SLOPED)
    bad["ocv"]["voltage_V"][3] = 3.0
    with pytest.raises(InputError, match="ocv"):
        estimate(bad, t, np.zeros(5), np.full(5, 3.7))


def _write_log(path, t, i, v):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Test Time / s", "Voltage / V", "Current / A"])
        for row in zip(t, v, i):
            w.writerow([f"{x:.9f}" for x in row])


def test_cli_estimate_writes_every_sample(tmp_path):
    t, i_m, v_m, _ = _log(SLOPED, samples=500)
    log, model, out = tmp_path / "run.bdf.csv", tmp_path / "m.json", tmp_path / "est.csv"
    _write_log(log, t, i_m, v_m)
    model.write_text(json.dumps(SLOPED))
    assert cli.main(["estimate", str(log), "--model", str(model), "--soc0", "0.9",
                     "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["Test Time / s", "SOC / 1", "SOC Std / 1", "Voltage Model / V"]
    got = np.array(rows[1:], dtype=float)
    assert got.shape == (t.size, 4)
    ref = estimate(SLOPED, np.round(t, 9), np.round(i_m, 9), np.round(v_m, 9), soc0=0.9)
    assert np.max(np.abs(got[:, 1] - ref["soc"])) < 1e-8
    assert np.max(np.abs(got[:, 0] - t)) < 1e-6


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    log, model = tmp_path / "run.csv", tmp_path / "m.json"
    _write_log(log, np.arange(3.0), np.zeros(3), np.full(3, 3.7))
    model.write_text("{not json")
    out = str(tmp_path / "o.csv")
    code = cli.main(["estimate", str(log), "--model", str(model), "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cellbench: error: ") and err.count("\n") == 1
    code = cli.main(["estimate", str(tmp_path / "missing.csv"), "--model", str(model),
                     "--out", str(tmp_path / "o.csv")])
    assert code == 2


def test_cli_without_the_kernel(tmp_path, monkeypatch, capsys):
    """No compiled kernel: float64 still writes the estimate (one warning line), float32
    is one error line and exit 2, never a traceback."""
    t, i_m, v_m, _ = _log(SLOPED, samples=200)
    log, model, out = tmp_path / "run.bdf.csv", tmp_path / "m.json", tmp_path / "est.csv"
    _write_log(log, t, i_m, v_m)
    model.write_text(json.dumps(SLOPED))
    monkeypatch.setenv(estimate_mod.NO_JIT, "1")
    monkeypatch.setattr(estimate_mod, "_warned", set())
    args = ["estimate", str(log), "--model", str(model), "--soc0", "0.9"]
    assert cli.main(args + ["--out", str(out)]) == 0
    assert capsys.readouterr().err.startswith("cellbench: warning: ")
    assert np.loadtxt(out, delimiter=",", skiprows=1).shape == (t.size, 4)
    assert cli.main(args + ["--float32", "--out", str(tmp_path / "e32.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellbench: error: ") and err.count("\n") == 1


def test_cli_takes_the_model_from_the_sidecar(tmp_path):
    t, i_m, v_m, _ = _log(SLOPED, samples=300)
    log, out = tmp_path / "run.bdf.csv", tmp_path / "est.csv"
    _write_log(log, t, i_m, v_m)
    assert cli.main(["estimate", str(log), "--out", str(out)]) == 2  # no sidecar yet
    bdflog.sidecar_path(log).write_text(json.dumps({"model": SLOPED}))
    assert cli.main(["estimate", str(log), "--soc0", "0.9", "--out", str(out)]) == 0
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    ref = estimate(SLOPED, np.round(t, 9), np.round(i_m, 9), np.round(v_m, 9), soc0=0.9)
    assert np.max(np.abs(got[:, 1] - ref["soc"])) < 1e-8


# ------------------------------------------------------------------ slow states (issue 14)

def _resistance_model():
    """SLOPED (two RC pairs, no bias) with the capacity and resistance estimators on."""
    m = copy.deepcopy(SLOPED)
    m["estimator"].update(bias=False, capacity=True, resistance=True, q_ohm=1e-9, q_res=1e-9)
    return m


def _aged(model, r_ohmic, r_ct):
    """The cell ``model`` aged: R0 and the slow RC pair times r_ohmic, rc[0] times r_ct
    (the plant's law: every resistance grows, the charge-transfer pair more)."""
    m = copy.deepcopy(model)
    m["r0_ohm"] = m["r0_ohm"] * r_ohmic
    m["rc"][0]["r_ohm"] *= r_ct
    m["rc"][1]["r_ohm"] *= r_ohmic
    return m


def _step_log(model, truth_model, sigma_v_V=1e-3, seed=3):
    """CC steps at 1C between rests (every edge after a held current), 1 s samples,
    measured from truth_model's response: (t, i_m, v_m, truth)."""
    one_c = model["capacity_Ah"]
    blocks = [(0.0, 120)] + [(-one_c, 600), (0.0, 300), (one_c, 500), (0.0, 300)] * 3
    i = np.concatenate([np.full(n, a) for a, n in blocks])
    t = np.arange(i.size, dtype=float)
    truth = board_truth(truth_model, t, i, 0.9)
    i_m, v_m = measured(truth, i, 0.0, model["estimator"]["sigma_i_A"], sigma_v_V, seed)
    return t, i_m, v_m, truth


def test_step_edges_recover_aged_resistances():
    """A filter with the fresh model over an aged cell (R0 +30 %, R_ct +60 %) finds both
    from the 12 step edges, within 3 % and inside its 3-sigma band, and keeps SoC."""
    model = _resistance_model()
    t, i_m, v_m, truth = _step_log(model, _aged(model, 1.3, 1.6))
    out = estimate(model, t, i_m, v_m, soc0=0.9)
    r_ct = 1.6 * model["rc"][0]["r_ohm"]
    assert out["rct_ohm"][-1] == pytest.approx(r_ct, rel=0.03)
    assert abs(out["rct_ohm"][-1] - r_ct) <= 3 * out["rct_std_ohm"][-1]
    assert out["rct_std_ohm"][-1] < 0.1 * r_ct  # it learnt: the prior's std was 50 %
    assert np.max(np.abs(out["soc"] - truth["soc"])[-600:]) < 0.01
    ekf = filter_for(model)  # the ohmic scale, from the firmware filter run the same way
    ekf.reset(soc=0.9)
    for k in range(t.size):
        ekf.step(round(i_m[k] * 1e9), round(v_m[k] * 1e6), 1000 if k else 0)
    assert ekf.rs.v[fw.module("resistance")._S] == pytest.approx(1.3, rel=0.03)
    assert ekf.rs.edges >= 10
    assert ekf.r_mohm == round(out["rct_ohm"][-1] * 1e3)


def test_fresh_cell_keeps_its_resistances():
    """No ageing: the scales stay at 1 within their bands (no drift from the fit itself)."""
    model = _resistance_model()
    t, i_m, v_m, _ = _step_log(model, model)
    out = estimate(model, t, i_m, v_m, soc0=0.9)
    r_ct = model["rc"][0]["r_ohm"]
    assert abs(out["rct_ohm"][-1] - r_ct) <= 3 * out["rct_std_ohm"][-1]
    assert out["rct_ohm"][-1] == pytest.approx(r_ct, rel=0.05)


def test_kernel_matches_firmware_with_slow_states(compiled_only):
    """The resistance estimator and the capacity state: kernel and firmware/ekf.py agree."""
    model = _resistance_model()
    t, i_m, v_m, _ = _step_log(model, _aged(model, 1.2, 1.5))
    fast = estimate(model, t, i_m, v_m, soc0=0.9, full=True)
    slow = _python_filter(model, t, i_m, v_m, 0.9)
    for key in ("soc", "soc_std", "v_model", "x", "P", "cap_Ah", "cap_std_Ah", "rct_ohm",
                "rct_std_ohm", "r0_ohm", "r0_std_ohm"):
        assert np.max(np.abs(fast[key] - slow[key])) < 1e-10 * max(1.0, np.max(np.abs(slow[key]))), key
    f32 = estimate(model, t, i_m, v_m, soc0=0.9, dtype="float32")
    assert np.max(np.abs(f32["soc"] - fast["soc"])) < 1e-3
    assert np.max(np.abs(f32["rct_ohm"] / fast["rct_ohm"] - 1)) < 1e-3


def test_slow_state_attributes_and_their_restore():
    """The records' ints: capacity (nAh) and R_ct (mohm) with their std, -1 when off;
    set_slow (the controller's RECOVER) puts them back as they were published."""
    model = _resistance_model()
    f = filter_for(model)
    cap_nAh = round(model["capacity_Ah"] * 1e9)
    assert (f.cap_nAh, f.r_mohm) == (cap_nAh, round(model["rc"][0]["r_ohm"] * 1e3))
    assert f.cap_std_nAh == round(cap_nAh * np.sqrt(f.p0[f.ic]))
    assert f.r_std_mohm == round(model["rc"][0]["r_ohm"] * 1e3 * np.sqrt(f.rs.p0_res))
    f.set_slow(cap_nAh - 50_000, 2_000, 41_000, 900)
    assert (f.cap_nAh, f.cap_std_nAh, f.r_mohm, f.r_std_mohm) == (cap_nAh - 50_000, 2_000, 41_000, 900)
    f.set_slow(-1, -1, -1, -1)  # a state that was off: nothing changes
    assert (f.cap_nAh, f.r_mohm) == (cap_nAh - 50_000, 41_000)
    off = filter_for(SLOPED)
    assert (off.cap_nAh, off.cap_std_nAh, off.r_mohm, off.r_std_mohm) == (-1, -1, -1, -1)


def test_the_filter_reads_the_resistance_estimators_layout():
    """kalman.py names the public slots of Resistance.v without importing resistance.py."""
    kal, res = fw.module("kalman"), fw.module("resistance")
    assert (kal.R_OHM, kal.R_CT, kal.PSS, kal.PRR, kal.PSR) == (res._S, res._R, res._PSS, res._PRR, res._PSR)


def test_resistance_needs_an_rc_pair_and_a_boolean():
    m = copy.deepcopy(SLOPED)
    m["rc"] = []
    m["estimator"]["resistance"] = True
    with pytest.raises(InputError, match="estimator.resistance"):
        filter_for(m)
    m = _resistance_model()
    m["estimator"]["resistance"] = "yes"
    with pytest.raises(InputError, match="estimator.resistance: must be true or false"):
        filter_for(m)
    m = _resistance_model()
    m["estimator"]["q_res"] = -1e-9
    with pytest.raises(InputError, match="estimator.q_res"):
        filter_for(m)


def test_cli_estimate_writes_the_ageing_columns(tmp_path):
    """With the slow states the CSV gains bdflog's ageing columns, in physical units."""
    model = _resistance_model()
    t, i_m, v_m, _ = _step_log(model, model)
    log = tmp_path / "run.csv"
    np.savetxt(log, np.column_stack([t, i_m, v_m]), delimiter=",", comments="",
               header="Test Time / s,Current / A,Voltage / V", fmt="%.9f")
    (tmp_path / "m.json").write_text(json.dumps(model))
    out = tmp_path / "est.csv"
    assert cli.main(["estimate", str(log), "--model", str(tmp_path / "m.json"), "--soc0", "0.9",
                     "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    names = [name for name, _ in bdflog.AGEING_COLUMNS]
    assert list(rows[0])[4:] == names
    assert float(rows[0][names[0]]) == pytest.approx(model["capacity_Ah"])
    assert float(rows[-1][names[2]]) == pytest.approx(model["rc"][0]["r_ohm"], rel=0.05)
