"""The ECM simulators against closed-form solutions and conservation laws."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from cellbench import ecm
from cellbench import model as cm
from cellbench.cli import main as cli_main

C_AH = 1e-3          # 1 mAh
R0 = 10.0
R1, TAU1 = 20.0, 50.0


def linear_model(**changes) -> dict:
    """OCV = 3 + z volts exactly (so OCV is linear everywhere in [0, 1]); one RC pair."""
    soc = np.linspace(0, 1, 11).tolist()
    doc = {
        "schema_version": 1,
        "cell": {"name": "linear", "chemistry": "X/Li", "active_mass_g": 0.001},
        "capacity_Ah": C_AH, "window_V": [3.0, 4.0],
        "ocv": {"soc": soc, "voltage_V": [3.0 + z for z in soc]},
        "r0_ohm": R0, "rc": [{"r_ohm": R1, "tau_s": TAU1}],
    }
    doc.update(changes)
    return cm.load_model(doc)


def cc_voltage(t, i, z0):
    """Closed form of CC from rest into OCV = 3 + z, R0 and one RC pair."""
    z = z0 + i * t / (3600 * C_AH)
    return 3.0 + z + R0 * i + R1 * i * (1 - np.exp(-t / TAU1))


times = st.lists(st.floats(0.01, 30.0), min_size=1, max_size=60).map(lambda d: np.cumsum([0.0] + d))


@settings(max_examples=60, deadline=None)
@given(times, st.floats(-2e-3, 2e-3).filter(lambda i: abs(i) > 1e-6), st.floats(0.2, 0.8))
def test_cc_into_one_rc_matches_closed_form_on_any_grid(t, i, z0):
    z_end = z0 + i * t[-1] / (3600 * C_AH)
    assume(0.0 <= z_end <= 1.0)  # the closed form holds on the OCV table, which ends at 0 and 1
    out = ecm.simulate(linear_model(), t, np.full(t.size, i), z0)
    assert np.allclose(out["v_V"], cc_voltage(t, i, z0), atol=1e-9)
    assert np.allclose(out["soc"], z0 + i * t / (3600 * C_AH), atol=1e-12)


def test_relaxation_decays_with_tau():
    t = np.arange(0.0, 800.0, 7.0)    # 500 s of rest: 10 time constants, well above rounding
    i = np.where(t < 300, -1e-3, 0.0)
    out = ecm.simulate(linear_model(), t, i, 0.7)
    rest = t >= 300
    overpotential = out["v_V"][rest] - cm.ocv(linear_model(), out["soc"][rest])
    slope = np.polyfit(t[rest], np.log(-overpotential), 1)[0]
    assert slope == pytest.approx(-1.0 / TAU1, rel=1e-6)
    # at the first rest sample the overpotential is the RC voltage built during the CC
    # (the current of sample k holds until sample k+1, so the CC lasted until t_rest)
    t_rest = t[rest][0]
    assert -overpotential[0] == pytest.approx(1e-3 * R1 * (1 - math.exp(-t_rest / TAU1)), rel=1e-9)


def hysteresis_model(gamma=30.0, m_V=0.05, m0_V=0.01):
    return linear_model(hysteresis={"m_V": m_V, "m0_V": m0_V, "gamma": gamma})


currents = st.lists(st.sampled_from([-2e-3, -5e-4, 0.0, 5e-4, 2e-3]), min_size=2, max_size=80)


@settings(max_examples=60, deadline=None)
@given(currents, st.floats(-1.0, 1.0))
def test_hysteresis_state_stays_within_bounds(i_list, h0):
    i = np.array(i_list)
    t = np.arange(i.size) * 60.0
    out = ecm.simulate(hysteresis_model(), t, i, 0.5, h0=h0)
    assert np.all(np.abs(out["h"]) <= 1.0 + 1e-12)
    ohmic = cm.ocv(hysteresis_model(), out["soc"]) + R0 * i + out["v_rc"].sum(axis=1)
    assert np.all(np.abs(out["v_V"] - ohmic) <= 0.05 + 0.01 + 1e-12)


def test_hysteresis_follows_its_exponential():
    gamma = 30.0
    t = np.linspace(0, 1800, 91)
    i = 1e-3
    out = ecm.simulate(hysteresis_model(gamma), t, np.full(t.size, i), 0.2, h0=-1.0)
    expected = 1.0 - 2.0 * np.exp(-i * gamma * t / (3600 * C_AH))
    assert np.allclose(out["h"], expected, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(currents, st.lists(st.floats(0.5, 120.0), min_size=80, max_size=80), st.floats(0.9, 1.0))
def test_charge_is_conserved(i_list, dts, eta):
    i = np.array(i_list)
    t = np.cumsum([0.0] + dts[: i.size - 1])
    out = ecm.simulate(linear_model(coulombic_efficiency=eta), t, i, 0.5)
    weight = np.where(i[:-1] > 0, eta, 1.0)
    expected = 0.5 + np.sum(weight * i[:-1] * np.diff(t)) / (3600 * C_AH)
    assert out["soc"][-1] == pytest.approx(expected, abs=1e-12)


def test_simulate_rejects_bad_series():
    from cellbench.errors import InputError
    with pytest.raises(InputError):
        ecm.simulate(linear_model(), [0, 1, 2], [0, 1], 0.5)
    with pytest.raises(InputError):
        ecm.simulate(linear_model(), [0, 2, 1], [0, 0, 0], 0.5)


# ----------------------------------------------------------------- CC steps (cycle)

def ohmic_model(**changes):
    """Linear OCV, R0 only in effect (the RC pair is negligible), no fade."""
    return linear_model(rc=[{"r_ohm": 1e-9, "tau_s": 1.0}], **changes)


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-4, 3e-3), st.floats(3.2, 3.6), st.sampled_from([0.5, 7.0, 100.0]))
def test_discharge_cutoff_time_is_exact_whatever_the_grid(i, cutoff_V, dt_s):
    z0 = 0.9
    (step,) = ecm.cycle(ohmic_model(), [(-i, cutoff_V, None)], soc0=z0, dt_s=dt_s)
    # 3 + z0 - i*t/(3600 C) - R0 i = cutoff
    t_exact = (3.0 + z0 - R0 * i - cutoff_V) * 3600 * C_AH / i
    assert step["end"] == "voltage"
    assert step["duration_s"] == pytest.approx(t_exact, rel=1e-7)
    assert step["capacity_Ah"] == pytest.approx(i * t_exact / 3600, rel=1e-7)
    assert step["v_end_V"] == pytest.approx(cutoff_V, abs=1e-7)


def test_cutoff_with_rc_agrees_with_simulate():
    m = linear_model()
    (step,) = ecm.cycle(m, [(1e-3, 3.8, None)], soc0=0.3, dt_s=3.0)
    t = np.array([0.0, step["duration_s"]])
    v = ecm.simulate(m, t, [1e-3, 1e-3], 0.3)["v_V"]
    assert v[-1] == pytest.approx(3.8, abs=1e-9)
    assert cc_voltage(step["duration_s"], 1e-3, 0.3) == pytest.approx(3.8, abs=1e-9)


def test_rest_and_time_limits():
    m = linear_model()
    state = ecm.new_state(m, 0.5)
    dch, rest = ecm.cycle(m, [(-1e-3, None, 100.0), (0.0, None, 1000.0)], state=state)
    assert dch["end"] == "time" and dch["duration_s"] == 100.0
    assert rest["capacity_Ah"] == 0.0 and rest["soc_end"] == pytest.approx(dch["soc_end"])
    assert state.v_rc[0] == pytest.approx(-1e-3 * R1 * (1 - math.exp(-2)) * math.exp(-20), rel=1e-9)
    assert state.t_s == pytest.approx(1100.0)


def test_soc_limit_ends_a_step_that_never_reaches_its_cutoff():
    (step,) = ecm.cycle(ohmic_model(), [(1e-4, 5.0, None)], soc0=0.5)
    assert step["end"] == "soc"
    assert step["soc_end"] == pytest.approx(1.0)
    assert step["capacity_Ah"] == pytest.approx(0.5 * C_AH)


def full_cycles(m, n, i=1e-5):
    steps = [(-i, 3.0, None), (i, 4.0, None)] * n
    return ecm.cycle(m, steps, soc0=1.0, dt_s=10.0)


def test_first_cycle_irreversible_capacity():
    q_irr = 3e-4
    m = ohmic_model(fade={"first_cycle_irreversible_Ah": q_irr})
    steps = full_cycles(m, 3)
    q = [s["capacity_Ah"] for s in steps]
    # near-zero current and resistance: each step runs to SoC 0 or 1
    assert q[0] == pytest.approx(C_AH + q_irr, rel=1e-3)
    assert q[1:] == pytest.approx([C_AH] * 5, rel=1e-3)


def test_capacity_fade_follows_throughput():
    cpc = 0.02
    m = ohmic_model(fade={"capacity_per_cycle": cpc})
    steps = full_cycles(m, 4)
    # capacity C(n) = C*(1 - cpc*n), n = throughput/(2C) so far; a full discharge of the
    # current capacity obeys dq = C(n) dz with dn = dq/(2C): the closed form over one step
    # from n0 is q = 2C/cpc * (1 - n0*cpc) * (1 - exp(-cpc/2))
    n0, expected = 0.0, []
    for _ in steps:
        q = 2 * C_AH / cpc * (1 - n0 * cpc) * (1 - math.exp(-cpc / 2))
        expected.append(q)
        n0 += q / (2 * C_AH)
    assert [s["capacity_Ah"] for s in steps] == pytest.approx(expected, rel=2e-4)


def test_resistance_grows_with_throughput():
    rpc = 0.1
    m = ohmic_model(fade={"resistance_per_cycle": rpc})
    state = ecm.new_state(m, 0.5)
    state.q_chg_Ah = state.q_dch_Ah = 3 * C_AH          # 3 equivalent full cycles
    (step,) = ecm.cycle(m, [(-1e-3, 0.0, 1e-9)], state=state)
    assert ecm.resistance_scale(m, state.cycles(m)) == pytest.approx(1.3)
    assert step["v_end_V"] == pytest.approx(3.5 - 1e-3 * R0 * 1.3, abs=1e-6)


def test_branches_set_the_hysteresis_amplitude():
    doc = dict(linear_model())
    doc["ocv"] = dict(doc["ocv"], charge_V=[3.05 + z for z in doc["ocv"]["soc"]],
                      discharge_V=[2.95 + z for z in doc["ocv"]["soc"]])
    m = cm.load_model(dict(doc, hysteresis={"m_V": 0.01, "m0_V": 0.0, "gamma": 1e6}))
    t = np.array([0.0, 100.0])
    out = ecm.simulate(m, t, [1e-4, 1e-4], 0.5)            # h -> 1 at once
    assert out["v_V"][1] - cc_voltage(100.0, 1e-4, 0.5) == pytest.approx(0.05, abs=1e-9)


def test_rests_are_inserted_after_each_half_cycle():
    m = linear_model(window_V=[3.2, 3.8], rc=[{"r_ohm": 100.0, "tau_s": 3000.0}])
    with_rest = ecm.rate_test(m, [1e-3], cycles_per_rate=2, rest_s=600.0)
    without = ecm.rate_test(m, [1e-3], cycles_per_rate=2)
    assert with_rest["q_dch_Ah"][0] == without["q_dch_Ah"][0]     # same start from rest
    # the discharge left the RC pair negative; resting relaxes it towards 0, so the next
    # charge starts higher and reaches its limit sooner
    assert with_rest["q_chg_Ah"][0] < without["q_chg_Ah"][0]


def test_rate_test_capacity_falls_with_current():
    m = linear_model(window_V=[3.2, 3.8])
    result = ecm.rate_test(m, [1e-4, 1e-3, 3e-3], cycles_per_rate=2)
    avg = ecm.average_per_rate(result, 2)
    assert avg.shape == (3,)
    assert np.all(np.diff(avg) < 0)
    assert np.all(result["q_dch_Ah"] <= C_AH + 1e-12)


# ----------------------------------------------------------------- the CLI

def write_log(path, t, v, i):
    with open(path, "w") as f:
        f.write("Test Time / s,Voltage / V,Current / A\n")
        for row in zip(t, v, i):
            f.write(",".join(f"{x:.9g}" for x in row) + "\n")


def test_cli_simulate_writes_the_open_loop_response(tmp_path):
    import json
    m = linear_model()
    model_path = tmp_path / "m.json"
    model_path.write_text(json.dumps(m))
    t = np.arange(0.0, 600.0, 10.0)
    i = np.where(t < 300, -1e-3, 0.0)
    write_log(tmp_path / "run.bdf.csv", t, np.full(t.size, 3.5), i)
    out = tmp_path / "sim.csv"
    code = cli_main(["simulate", str(tmp_path / "run.bdf.csv"), "--model", str(model_path),
                     "--soc0", "0.6", "--out", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "Test Time / s,Voltage Model / V,SOC / 1"
    data = np.array([[float(x) for x in line.split(",")] for line in lines[1:]])
    assert np.allclose(data[:, 0], t)
    on = t < 300
    assert np.allclose(data[on, 1], cc_voltage(t[on], -1e-3, 0.6), atol=2e-6)
    assert data[-1, 2] == pytest.approx(0.6 - 1e-3 * 300 / 3600 / C_AH, abs=2e-6)


def test_cli_simulate_bad_input_exits_2(tmp_path, capsys):
    import json
    model_path = tmp_path / "m.json"
    model_path.write_text(json.dumps(linear_model()))
    write_log(tmp_path / "run.csv", [0, 1], [3.5, 3.5], [0, 0])
    args = ["simulate", str(tmp_path / "run.csv"), "--model", str(model_path), "--out", str(tmp_path / "o.csv")]
    assert cli_main(args + ["--soc0", "1.5"]) == 2
    assert "error: soc0: must be within [0, 1]" in capsys.readouterr().err
    model_path.write_text("{}")
    assert cli_main(args + ["--soc0", "0.5"]) == 2
