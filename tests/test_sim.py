"""The simulated board's plant and mocks against independent expectations.

The cell is checked against closed forms (a constant-current pulse into a 1-RC model
with a linear OCV, exponential relaxation, Plett hysteresis under constant current,
charge bookkeeping); the ADC model against its own definition (monotonic, wide bins
where the sim section says, correction table = bin centres); the virtual clock, poll,
watchdog and the plant's truth under the MicroPython unix port.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellbench import sim as simpkg
from cellbench.errors import InputError
from cellbench.paths import BOARDS, FIRMWARE, SIM_MPY
from polling import wait_for

_spec = importlib.util.spec_from_file_location("simcell_host", SIM_MPY / "simcell.py")
simcell = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(simcell)

C_AH = 4.0e-4
R0, R1, TAU = 50.0, 40.0, 20.0
V0, SLOPE = 1.2, 1.2  # linear OCV: v = V0 + SLOPE * z


def linear_model(**over):
    m = {"capacity_Ah": C_AH,
         "ocv": {"soc": [0.0, 0.25, 0.5, 0.75, 1.0],
                 "voltage_V": [V0 + SLOPE * z for z in (0.0, 0.25, 0.5, 0.75, 1.0)]},
         "r0_ohm": R0, "rc": [{"r_ohm": R1, "tau_s": TAU}],
         "hysteresis": {"m_V": 0.0, "m0_V": 0.0, "gamma": 0.0}, "coulombic_efficiency": 1.0}
    m.update(over)
    return m


dts = st.lists(st.floats(0.01, 50.0), min_size=1, max_size=30)


@settings(max_examples=50, deadline=None)
@given(dts=dts, i_A=st.floats(-2e-3, 2e-3), z0=st.floats(0.3, 0.7))
def test_cc_pulse_matches_closed_form(dts, i_A, z0):
    cell = simcell.Cell(linear_model(), soc0=z0)
    t = 0.0
    for dt in dts:
        cell.step(i_A, dt)
        t += dt
        z = z0 + i_A * t / (3600 * C_AH)
        want = V0 + SLOPE * z + R0 * i_A + R1 * i_A * (1 - math.exp(-t / TAU))
        assert cell.voltage(i_A) == pytest.approx(want, abs=1e-9)
        assert cell.z == pytest.approx(z, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(t_on=st.floats(1.0, 200.0), t_off=st.floats(0.0, 200.0))
def test_relaxation_after_pulse_is_exponential(t_on, t_off):
    i_A = -1e-3
    cell = simcell.Cell(linear_model(), soc0=0.5)
    cell.step(i_A, t_on)
    cell.step(0.0, t_off)
    z = 0.5 + i_A * t_on / (3600 * C_AH)
    v_rc = R1 * i_A * (1 - math.exp(-t_on / TAU)) * math.exp(-t_off / TAU)
    assert cell.voltage(0.0) == pytest.approx(V0 + SLOPE * z + v_rc, abs=1e-9)


@settings(max_examples=50, deadline=None)
@given(profile=st.lists(st.tuples(st.floats(-2e-3, 2e-3), st.floats(0.0, 100.0)), max_size=40),
       eta=st.floats(0.9, 1.0))
def test_charge_in_and_out_is_the_integral_of_current(profile, eta):
    cell = simcell.Cell(linear_model(coulombic_efficiency=eta), soc0=0.5)
    for i_A, dt in profile:
        cell.step(i_A, dt)
    q_chg = sum(i * dt for i, dt in profile if i > 0) / 3600
    q_dch = sum(-i * dt for i, dt in profile if i < 0) / 3600
    assert cell.q_chg_Ah == pytest.approx(q_chg, rel=1e-9, abs=1e-15)
    assert cell.q_dch_Ah == pytest.approx(q_dch, rel=1e-9, abs=1e-15)
    assert cell.z == pytest.approx(0.5 + (eta * q_chg - q_dch) / C_AH, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(t=st.floats(1.0, 20000.0), i_A=st.floats(1e-5, 2e-3), sign=st.sampled_from([1, -1]))
def test_hysteresis_follows_plett_and_approaches_its_bound(t, i_A, sign):
    m, gamma = 0.025, 40.0
    hyst = simcell.Cell(linear_model(hysteresis={"m_V": m, "m0_V": 0.0, "gamma": gamma}), 0.5)
    plain = simcell.Cell(linear_model(), 0.5)
    i = sign * i_A
    hyst.step(i, t)
    plain.step(i, t)
    h = sign * (1 - math.exp(-i_A * gamma * t / (3600 * C_AH)))  # from h0 = 0
    assert hyst.voltage(i) - plain.voltage(i) == pytest.approx(m * h, abs=1e-12)
    assert abs(hyst.h) <= 1.0
    hyst.step(i, 1e7)  # long after: at the bound
    assert hyst.h == pytest.approx(sign, abs=1e-9)


def test_first_cycle_irreversible_charge_sets_first_cycle_ce():
    irr = 1.5e-4
    cell = simcell.Cell(linear_model(fade={"first_cycle_irreversible_Ah": irr}), soc0=1.0)
    i = 4e-4
    t_dch = (C_AH + irr) * 3600 / i  # the side reaction is spread over the full discharge
    cell.step(-i, t_dch)
    assert cell.z == pytest.approx(0.0, abs=1e-9)
    assert cell.irr_left_Ah == pytest.approx(0.0, abs=1e-15)
    cell.step(i, C_AH * 3600 / i)
    assert cell.z == pytest.approx(1.0, abs=1e-9)
    assert cell.q_chg_Ah / cell.q_dch_Ah == pytest.approx(C_AH / (C_AH + irr), rel=1e-9)
    q = cell.q_dch_Ah  # second discharge: no side reaction left
    cell.step(-i, C_AH * 3600 / i)
    assert cell.q_dch_Ah - q == pytest.approx(C_AH, rel=1e-9)
    assert cell.z == pytest.approx(0.0, abs=1e-9)


def test_fade_per_equivalent_cycle():
    cell = simcell.Cell(linear_model(fade={"capacity_per_cycle": 0.002,
                                           "resistance_per_cycle": 0.01}), soc0=0.5)
    for _ in range(10):  # 10 equivalent cycles of throughput in small alternating steps
        for sign in (1, -1):
            for _ in range(20):
                cell.step(sign * 1e-3, C_AH * 3600 / 1e-3 / 20)
    assert cell.cycles() == pytest.approx(10.0, rel=1e-9)
    assert cell.cap_Ah == pytest.approx(C_AH * (1 - 0.02), rel=1e-9)
    assert cell.r_mult == pytest.approx(1.1, rel=1e-9)


def test_ocv_branches_set_hysteresis_amplitude():
    soc = [0.0, 0.5, 1.0]
    model = linear_model(ocv={"soc": soc, "voltage_V": [1.0, 1.5, 2.0],
                              "charge_V": [1.02, 1.54, 2.02], "discharge_V": [0.98, 1.46, 1.98]},
                         hysteresis={"m_V": 0.0, "m0_V": 0.0, "gamma": 50.0}, rc=[], r0_ohm=0.0)
    cell = simcell.Cell(model, soc0=0.4)
    cell.step(1e-4, 0.2 * C_AH * 3600 / 1e-4)  # charge 0.4 -> 0.6: h = 1 - exp(-50 * 0.2)
    h = 1 - math.exp(-10.0)
    m_at_06 = 0.04 + (0.02 - 0.04) * 0.2  # half the branch gap, interpolated at z = 0.6
    assert cell.voltage(0.0) == pytest.approx(1.6 + m_at_06 * h, abs=1e-9)
    assert cell.voltage(0.0) == pytest.approx(1.54 + (2.02 - 1.54) * 0.2, abs=1e-5)  # charge branch


# ---- the simulated RP2040 ADC -------------------------------------------------------
SIMBOARD = json.loads((BOARDS / "sim.json").read_text())
SIM = SIMBOARD["sim"]
BLOCKS = simcell.dnl_blocks(SIM)
Q = simcell.ADC_Q


@settings(max_examples=300, deadline=None)
@given(a=st.integers(-Q, 4097 * Q), b=st.integers(-Q, 4097 * Q))
def test_adc_transfer_is_monotonic_and_in_range(a, b):
    lo, hi = sorted((a, b))
    assert 0 <= simcell.adc_code(lo, BLOCKS) <= simcell.adc_code(hi, BLOCKS) <= 4095


def test_adc_spike_bins_are_wide_by_the_configured_lsb():
    xs = np.arange(0, 4096 * Q, Q // 16)
    codes = np.array([simcell.adc_code(int(x), BLOCKS) for x in xs])
    widths = np.bincount(codes, minlength=4096) / 16  # LSB of input per code
    for key, d in SIM["adc_dnl_lsb"].items():
        assert widths[int(key)] == pytest.approx(1 + d, abs=0.07)
    far = [c for c in range(20, 4080) if all(abs(c - int(k)) > SIM["adc_dnl_span"]
                                              for k in SIM["adc_dnl_lsb"])]
    assert np.allclose(widths[far], 1.0)


@settings(max_examples=300, deadline=None)
@given(x=st.floats(0.0, 4094.0))
def test_correction_table_gives_the_bin_centre(x):
    corr = {int(k): v for k, v in simcell.adc_correction(SIM).items()}
    code = simcell.adc_code(int((x + 0.5) * Q), BLOCKS)
    width = 1 + max([d for k, d in SIM["adc_dnl_lsb"].items() if int(k) == code] or [0])
    assert abs(code + corr.get(code, 0.0) - x) <= width / 2 + 2 / Q


# ---- under MicroPython --------------------------------------------------------------
def run_mpy(tmp_path, script, model=None, env_extra=None, board=None):
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(model or linear_model()))
    (tmp_path / "board.json").write_text(json.dumps(board or SIMBOARD))
    (tmp_path / "t.py").write_text(script)
    env = dict(os.environ, MICROPYPATH=f"{SIM_MPY}:{FIRMWARE}", CELLBENCH_SIM_CELL=str(cell),
               CELLBENCH_SIM_SOC0="0.5", CELLBENCH_SIM_TRUTH=str(tmp_path / "truth.csv"))
    env.update(env_extra or {})
    mp = simpkg.micropython_binary()
    # stdin stays an open, empty pipe (as the host's link is) until the script ends
    proc = subprocess.Popen([mp, "t.py"], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(60)
    finally:
        proc.kill()
        proc.stdin.close()
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.read(),
                                       proc.stderr.read())


CLOCK = """
import time, utime, select, sys
t0 = time.ticks_ms(); u0 = time.ticks_us()
time.sleep(30)
t1 = time.ticks_ms(); u1 = time.ticks_us()
p = select.poll(); p.register(sys.stdin, select.POLLIN)
r = p.poll(250)
t2 = time.ticks_ms()
print(t0, t1, time.ticks_diff(t1, t0), time.ticks_diff(u1, u0), len(r), time.ticks_diff(t2, t1),
      time.ticks_diff(time.ticks_add(t0, 5), t0), time.now_us())
"""


@pytest.mark.hil
def test_virtual_clock_wraps_and_poll_advances_it(tmp_path):
    out = run_mpy(tmp_path, CLOCK)
    assert out.returncode == 0, out.stderr
    t0, t1, d_ms, d_us, n, d_poll, d_add, now = map(int, out.stdout.split())
    assert t1 < t0  # the ms counter wrapped within the first 30 s
    assert d_ms == 30000 and abs(d_us - 30_000_000) < 10  # ticks reads cost 1 us each
    assert n == 0 and d_poll == 250  # nothing on stdin: the wait passed in virtual time
    assert d_add == 5
    assert 30_250_000 <= now < 30_250_100


WDT = """
import machine, time
w = machine.WDT(timeout=1000)
for k in range(5):
    time.sleep_ms(900)
    w.feed()
print("fed", flush=True) if hasattr(print, "x") else print("fed")
time.sleep_ms(1500)
print("not reached")
"""


@pytest.mark.hil
def test_watchdog_resets_when_not_fed(tmp_path):
    out = run_mpy(tmp_path, WDT)
    assert out.returncode == simpkg.WDT_EXIT
    assert "fed" in out.stdout and "not reached" not in out.stdout
    assert "watchdog reset" in out.stderr


PLANT = """
import machine, time
relay = machine.Pin(15, machine.Pin.OUT, value=0)
r0 = machine.Pin(17, machine.Pin.OUT, value=1)   # 2 mA range: select [1, 0]
r1 = machine.Pin(18, machine.Pin.OUT, value=0)
pwm = machine.PWM(machine.Pin(16))
pwm.duty_u16(20000)
time.sleep(100)            # relay open: no current
relay.value(1)
time.sleep(1000)
relay.value(0)
time.sleep(50)
adc = machine.ADC(26)
print(adc.read_u16())
"""


@pytest.mark.hil
def test_plant_delivers_setpoint_with_source_error_and_writes_truth(tmp_path):
    out = run_mpy(tmp_path, PLANT, env_extra={"CELLBENCH_SIM_SEED": "3"})
    assert out.returncode == 0, out.stderr
    truth = simpkg.read_truth(tmp_path / "truth.csv")
    err = SIM["source_error"]["2mA"]
    i_want = (20000 / 65535 - 0.5) * 2 * 2e-3 * (1 + err["gain"]) + err["offset_A"]
    on = truth["i_A"] != 0
    assert np.allclose(truth["i_A"][on], i_want, rtol=1e-9)
    assert truth["t_s"][on].min() == pytest.approx(100.0, abs=0.01)
    assert truth["q_dch_Ah"][-1] == pytest.approx(-i_want * 1000 / 3600, rel=1e-6)
    assert truth["soc"][-1] == pytest.approx(0.5 + i_want * 1000 / 3600 / C_AH, rel=1e-6)
    assert np.all(np.diff(truth["t_s"]) >= 0)
    # the ADC reading (0.5 divider, 3.3 V ref) is the cell's relaxed voltage, within noise
    code = int(out.stdout.split()[-1]) >> 4
    v_cell = code * 3.3 / 4096 / 0.5
    assert abs(v_cell - (V0 + SLOPE * truth["soc"][-1])) < 0.02


def test_read_truth_drops_a_partial_last_line(tmp_path):
    p = tmp_path / "truth.csv"
    p.write_text("t_s,i_A,v_V,soc,q_chg_Ah,q_dch_Ah\n0,0,1.5,0.5,0,0\n10,1e-3,1.6,0.5,1e-6,0\n20,1e-3,1.")
    t = simpkg.read_truth(p)
    assert list(t["t_s"]) == [0.0, 10.0] and t["i_A"][1] == 1e-3
    # cut after its last comma, a row has every column and parses: still partial
    p.write_text("t_s,i_A,v_V,soc,q_chg_Ah,q_dch_Ah\n0,0,1.5,0.5,0,0\n10,1e-3,1.6,0.5,1e-6,0.00")
    assert list(simpkg.read_truth(p)["t_s"]) == [0.0]
    p.write_text("t_s,i_A,v_V,soc,q_chg")  # a header being written: no truth file yet
    with pytest.raises(InputError):
        simpkg.read_truth(p)
    with pytest.raises(InputError):
        simpkg.read_truth(tmp_path / "missing.csv")


OPEN = """
import machine, time
relay = machine.Pin(15, machine.Pin.OUT, value=0)
machine.Pin(17, machine.Pin.OUT, value=1)
machine.Pin(18, machine.Pin.OUT, value=0)
pwm = machine.PWM(machine.Pin(16))
pwm.duty_u16(50000)            # charging setpoint
relay.value(1)
time.sleep(40)
a = machine.ADC(26).read_u16() >> 4
time.sleep(20)                 # the cell is removed at 50 s
b = machine.ADC(26).read_u16() >> 4
print(a, b)
"""


@pytest.mark.hil
def test_removed_cell_reads_compliance_and_takes_no_current(tmp_path):
    out = run_mpy(tmp_path, OPEN, env_extra={"CELLBENCH_SIM_FAULTS": "open@50"})
    assert out.returncode == 0, out.stderr
    a, b = map(int, out.stdout.split())
    assert abs(a * 3.3 / 4096 / 0.5 - 1.8) < 0.2  # a cell near 1.8 V
    assert b == min(4095, round(SIMBOARD["compliance_V"][1] * 0.5 / 3.3 * 4096)) or b >= 3090
    truth = simpkg.read_truth(tmp_path / "truth.csv")
    assert np.all(truth["i_A"][truth["t_s"] > 50.0 + 1e-9] == 0)
    assert truth["q_chg_Ah"][-1] == pytest.approx(truth["i_A"].max() * 50 / 3600, rel=1e-6)


def truth_rows(path):
    """Complete data rows of a truth file being written (0 before its header is whole)."""
    try:
        return len(simpkg.read_truth(path)["t_s"])
    except InputError:  # not there yet, or its header not yet written
        return 0


@pytest.mark.hil
def test_truth_survives_a_killed_board(tmp_path):
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps(linear_model()))
    # a generous heap: this is about the truth file, not whether the firmware fits
    board = simpkg.start_board(cell, workdir=tmp_path / "w", soc0=0.5, heap_kb=400)
    try:  # idle: virtual time runs, truth rows pile up; count them as the assertion does
        seen = wait_for(lambda: truth_rows(board.truth_path), "more than 20 complete truth rows",
                        until=lambda n: n > 20)
    finally:
        board.proc.kill()
        board.close()
    truth = simpkg.read_truth(board.truth_path)
    assert len(truth["t_s"]) >= seen and np.all(np.diff(truth["t_s"]) >= 0)
    assert np.allclose(truth["v_V"], V0 + SLOPE * 0.5, atol=1e-9)  # rested, no current


@pytest.mark.parametrize("name", ["lto-li-coin", "gr-li-coin"])
def test_plant_agrees_with_the_host_ecm_simulator(name):
    """Two implementations of docs/design.md's model: the plant and cellbench.ecm."""
    from cellbench import ecm, model as cellmodel
    from cellbench.paths import MODELS

    m = cellmodel.load_model(MODELS / f"{name}.json")
    m = dict(m, fade={"capacity_per_cycle": 0.0, "resistance_per_cycle": 0.0,
                      "first_cycle_irreversible_Ah": 0.0})  # ecm.simulate applies no fade
    rng = np.random.default_rng(5)
    dt = rng.uniform(0.5, 30.0, 400)
    i = rng.choice([-1, 0, 1], 400) * rng.uniform(0.1, 1.0, 400) * m["capacity_Ah"]
    t = np.concatenate(([0.0], np.cumsum(dt)))
    i_series = np.concatenate((i, [0.0]))
    ref = ecm.simulate(m, t, i_series, soc0=0.5)
    cell = simcell.Cell(m, soc0=0.5)
    v = [cell.voltage(i_series[0])]
    for k in range(len(dt)):
        cell.step(i[k], dt[k])
        v.append(cell.voltage(i_series[k + 1]))
    assert np.allclose(v, ref["v_V"], atol=1e-9)


def _clock_module():
    """sim/mpy/time.py under CPython, with a stand-in for MicroPython's built-in utime."""
    import types

    fake = types.ModuleType("utime")
    fake.time = lambda: 1_700_000_000
    saved = sys.modules.get("utime")
    sys.modules["utime"] = fake
    try:
        spec = importlib.util.spec_from_file_location("vclock", SIM_MPY / "time.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        if saved is None:
            sys.modules.pop("utime")
        else:
            sys.modules["utime"] = saved
    return mod


VCLOCK = _clock_module()


@settings(max_examples=500, deadline=None)
@given(t=st.integers(0, 2**30 - 1), d=st.integers(-(2**29) + 1, 2**29 - 1))
def test_ticks_arithmetic_wraps_like_micropython(t, d):
    later = VCLOCK.ticks_add(t, d)
    assert 0 <= later < 2**30
    assert VCLOCK.ticks_diff(later, t) == d
    assert VCLOCK.ticks_diff(t, later) == -d
