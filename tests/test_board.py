"""firmware/board.py: scaling round-trips, range selection, off(), calibration, I2C parts.

Most tests run board.py under CPython against a tiny fake ``machine`` whose ADC returns the
code an ideal converter would give for a known cell voltage or current, so the expected
values come from the board file's physics, not from board.py. One test runs board.py
under the MicroPython unix port with the simulator's mocks to show sample() allocates
nothing.
"""

import json
import os
import subprocess
import sys
import time
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellbench import fw, unixport
from cellbench.paths import BOARDS, FIRMWARE, SIM_MPY

BOARD = json.loads((BOARDS / "cct-rp2040.json").read_text())
VREF = BOARD["adc"]["vref_V"]
DIV = BOARD["voltage"]["divider"]
MID = BOARD["current"]["mid_V"]
RANGES = sorted(BOARD["current"]["ranges"], key=lambda r: r["full_scale_mA"])
LSB_V = VREF / 4096


class FakeMachine(types.ModuleType):
    """Records what board.py drives; ADC pins return whatever ``analog[pin]`` volts give."""

    def __init__(self):
        super().__init__("machine")
        fm = self
        self.levels = {}
        self.analog = {}
        self.duty = None
        self.wdt_timeout = None
        self.i2c_devices = {}

        class Pin:
            OUT = 1
            IN = 0

            def __init__(self, id, mode=-1, pull=-1, value=None):
                self.id = id
                if value is not None:
                    self.value(value)

            def value(self, x=None):
                if x is None:
                    return fm.levels.get(self.id, 0)
                fm.levels[self.id] = int(bool(x))

        class ADC:
            def __init__(self, pin):
                self.pin = pin

            def read_u16(self):
                code = min(4095, max(0, int(fm.analog[self.pin] / LSB_V + 0.5)))
                return (code << 4) | (code >> 8)

        class PWM:
            def __init__(self, pin):
                self.pin = pin.id

            def freq(self, f=None):
                fm.freq = f

            def duty_u16(self, d):
                fm.duty = d

        class WDT:
            def __init__(self, timeout=5000):
                fm.wdt_timeout = timeout

            def feed(self):
                pass

        class I2C:
            def __init__(self, bus, scl=None, sda=None, freq=400000):
                pass

            def writeto(self, addr, buf):
                fm.i2c_devices[addr].write(bytes(buf))

            def writeto_mem(self, addr, reg, buf):
                fm.i2c_devices[addr].write(bytes([reg]) + bytes(buf))

            def readfrom_mem_into(self, addr, reg, buf):
                dev = fm.i2c_devices[addr]
                dev.write(bytes([reg]))
                buf[:] = dev.read(len(buf))

        self.Pin, self.ADC, self.PWM, self.WDT, self.I2C = Pin, ADC, PWM, WDT, I2C


class FakeAds:
    """ADS1115 that converts ``volts[ch]`` ideally at the board's fsr."""

    def __init__(self, volts, fsr):
        self.volts, self.fsr, self.ptr, self.cfg = volts, fsr, 0, 0

    def write(self, data):
        self.ptr = data[0]
        if len(data) == 3:
            self.cfg = (data[1] << 8) | data[2]

    def read(self, n):
        if self.ptr == 1:
            v = self.cfg | 0x8000
        else:
            ch = ((self.cfg >> 12) & 7) - 4
            v = max(-32768, min(32767, round(self.volts[ch] / self.fsr * 32768))) & 0xFFFF
        return bytes([v >> 8, v & 0xFF])


class FakeDac:
    def __init__(self):
        self.code = None

    def write(self, data):
        assert len(data) == 2 and not data[0] & 0xF0  # fast write, normal power mode
        self.code = ((data[0] & 0x0F) << 8) | data[1]


def make_board(tmp_path, cfg=None, cal=None, monkeypatch=None):
    fm = FakeMachine()
    monkeypatch.setitem(sys.modules, "machine", fm)
    monkeypatch.setattr(time, "sleep_us", lambda us: None, raising=False)  # MicroPython-only
    monkeypatch.delitem(sys.modules, f"{fw.PACKAGE}.board", raising=False)  # a fresh one on fm
    board = fw.module("board")
    bp = tmp_path / "board.json"
    bp.write_text(json.dumps(cfg or BOARD))
    cp = tmp_path / "calibration.json"
    if cal is not None:
        cp.write_text(json.dumps(cal))
    return board.load(str(bp), str(cp)), fm, board


@pytest.fixture
def mk(tmp_path, monkeypatch):
    return lambda cfg=None, cal=None: make_board(tmp_path, cfg, cal, monkeypatch)


def set_cell(fm, v_V, i_A, k):
    """Put a cell voltage and current on the ADC pins as the board's analog front end would."""
    r = RANGES[k]
    fm.analog[BOARD["adc"]["voltage_pin"]] = v_V * DIV
    fm.analog[BOARD["adc"]["current_pin"]] = MID + i_A * r["sense_ohm"] * r["gain"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(v=st.floats(0.0, 5.0), i_frac=st.floats(-0.95, 0.95), k=st.integers(0, len(RANGES) - 1))
def test_voltage_and_current_round_trip_within_quantisation(mk, v, i_frac, k):
    b, fm, _ = mk()
    fs_A = RANGES[k]["full_scale_mA"] * 1e-3
    b.range = k
    set_cell(fm, v, i_frac * fs_A, k)
    b.sample()
    half_lsb_uV = LSB_V / DIV / 2 * 1e6
    assert abs(b.v_uV - v * 1e6) <= half_lsb_uV + 3
    half_lsb_nA = LSB_V / (RANGES[k]["sense_ohm"] * RANGES[k]["gain"]) / 2 * 1e9
    assert abs(b.i_nA - i_frac * fs_A * 1e9) <= half_lsb_nA + 3


def test_load_leaves_current_off_and_starts_watchdog(mk):
    b, fm, _ = mk()
    assert fm.levels[BOARD["relay_pin"]] == 0
    assert fm.duty == 32768
    assert fm.wdt_timeout == BOARD["wdt_ms"]
    assert b.id == "cct-rp2040" and b.tick_ms == 1000 and b.oversample == 16
    assert b.max_uV == 4_800_000 and b.min_uV == 0 and b.max_nA == 20_000_000
    assert b.range_max_nA == 20_000_000 and b.calibration_id == ""


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(i_nA=st.integers(-25_000_000, 25_000_000))
def test_set_current_picks_smallest_range_and_quantises(mk, i_nA):
    b, fm, _ = mk()
    applied = b.set_current(i_nA)
    lim = min(b.range_max_nA, b.max_nA)
    want = max(-lim, min(lim, i_nA))
    fits = [k for k, r in enumerate(RANGES) if abs(want) <= 0.9 * r["full_scale_mA"] * 1e6]
    k = fits[0] if fits else len(RANGES) - 1
    assert b.range == k
    pins = BOARD["current"]["range_pins"]
    assert [fm.levels[p] for p in pins] == RANGES[k]["select"]
    assert fm.levels[BOARD["relay_pin"]] == 1
    fs_nA = RANGES[k]["full_scale_mA"] * 1e6
    exact = (2 * fm.duty - 65535) * fs_nA / 65535  # design.md setpoint formula
    assert abs(applied - exact) <= 2
    assert abs(applied - want) <= 1.25 * fs_nA / 65535 + 2  # nearest code, scale to ~1e-5


def test_off_opens_relay_and_zeroes_setpoint_even_if_source_fails(mk):
    b, fm, _ = mk()
    b.set_current(1_000_000)
    b.off()
    assert fm.levels[BOARD["relay_pin"]] == 0 and fm.duty == 32768

    def broken(d):
        raise OSError(5)

    b._pwm.duty_u16 = broken
    b.set_current = None  # not needed: off() must not depend on it
    b.off()  # must not raise
    assert fm.levels[BOARD["relay_pin"]] == 0


def test_calibration_gain_offset_and_adc_correction(mk):
    k = 1
    cal = {"board": "cct-rp2040", "created": "2026-11-25", "id": "cal-1",
           "voltage": {"gain": 1.01, "offset_V": -0.002},
           "current": {RANGES[k]["name"]: {"gain": 0.98, "offset_A": 1e-6}},
           "adc_correction": {"1000": 2.5}, "provenance": "test"}
    b, fm, _ = mk(cal=cal)
    assert b.calibration_id == "cal-1" and b.cal_error == ""
    b.range = k
    v, i = 3.0, 1e-3
    set_cell(fm, v, i, k)
    b.sample()
    code_v = int(v * DIV / LSB_V + 0.5)
    assert abs(b.v_uV - (1.01 * code_v * LSB_V / DIV - 0.002) * 1e6) <= 3 + 3e-6 * b.v_uV  # scale kept to ~2e-6
    r = RANGES[k]
    code_i = int((MID + i * r["sense_ohm"] * r["gain"]) / LSB_V + 0.5)
    meas = (code_i * LSB_V - MID) / (r["sense_ohm"] * r["gain"])
    assert abs(b.i_nA - (0.98 * meas + 1e-6) * 1e9) <= 3 + 3e-6 * abs(b.i_nA)
    # a reading of code 1000 is moved by +2.5 codes
    fm.analog[BOARD["adc"]["voltage_pin"]] = 1000 * LSB_V
    b.sample()
    assert abs(b.v_uV - (1.01 * 1002.5 * LSB_V / DIV - 0.002) * 1e6) <= 3 + 3e-6 * b.v_uV


def test_calibration_for_another_board_is_refused(mk):
    b, fm, _ = mk(cal={"board": "other", "voltage": {"gain": 2.0, "offset_V": 1.0}})
    assert b.calibration_id == "" and "other" in b.cal_error
    set_cell(fm, 2.0, 0.0, 0)
    b.sample()
    assert abs(b.v_uV - 2_000_000) < 1000  # nominal scale, not the refused gain


def test_ads1115_measure_path_and_mcp4725_source(mk):
    cfg = json.loads(json.dumps(BOARD))
    cfg["measure"] = "ads1115"
    cfg["source"] = {"type": "mcp4725", "i2c": 0, "addr": 96}
    fm_volts = {}
    ext = cfg["ext_adc"]

    fm = FakeMachine()
    dac = FakeDac()
    fm.i2c_devices = {72: FakeAds(fm_volts, ext["fsr_V"]), 96: dac}
    orig = FakeMachine.__init__

    def init(self):
        orig(self)
        self.i2c_devices = fm.i2c_devices

    FakeMachine.__init__ = init
    try:
        b, fm2, _ = mk(cfg=cfg)
    finally:
        FakeMachine.__init__ = orig
    assert dac.code == 2048  # mid-scale: 0 A
    applied = b.set_current(-150_000)
    assert b.range == 0 and dac.code < 2048
    assert abs(applied - (2 * dac.code - 4095) * 200_000 / 4095) <= 2
    r = RANGES[0]
    fm_volts[ext["voltage_ch"]] = 1.55 * DIV
    fm_volts[ext["current_ch"]] = MID - 150e-6 * r["sense_ohm"] * r["gain"]
    b.sample()
    lsb = ext["fsr_V"] / 32768
    assert abs(b.v_uV - 1.55e6) <= lsb / DIV / 2 * 1e6 + 3
    assert abs(b.i_nA + 150_000) <= lsb / (r["sense_ohm"] * r["gain"]) / 2 * 1e9 + 3


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(r=st.floats(1e-4, 100.0), bits=st.integers(8, 26), data=st.data())
def test_scaler_is_exact_and_stays_in_small_ints(mk, r, bits, data):
    _, _, board = mk()
    max_x = (1 << bits) - 1
    if max_x * r >= 2**29:
        return
    num, s, b = fw.module("boardfile").scaler(r, max_x)  # the board file's scales
    x = data.draw(st.integers(-max_x, max_x))
    t = (x >> b) * num
    rem = (t & ((1 << (s - b)) - 1)) << b
    lo = (x & ((1 << b) - 1)) * num
    assert abs(t) < 2**30 and rem + lo < 2**30  # MicroPython small ints on the RP2040
    assert board.mul(x, num, s, b) == (x * num) >> s  # exact floor
    exact = x * r
    assert abs(board.mul(x, num, s, b) - exact) <= 1 + abs(exact) * 2.0 ** -16


SAMPLE_ALLOC = """
import gc, micropython, board
b = board.load()
b.set_current(-350000)
b.sample()
def run(n):
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    while n:
        b.sample()
        n -= 1
    a1 = gc.mem_alloc()
    gc.enable()
    return a1 - a0
run(1)
print("ALLOC", run(20), b.v_uV, b.i_nA)
"""


@pytest.mark.hil
def test_sample_allocates_nothing_under_micropython(tmp_path):
    """On the unix port with the simulator's mocks: 20 samples leave no garbage (GC off).

    Virtual time does not move between the samples, so the plant does no work either.
    (MicroPython heap-allocates, then frees at return, the frame of a call with a large
    state; micropython.mem_total counts those, gc.mem_alloc rightly does not.)
    """
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps({
        "capacity_Ah": 4e-4, "ocv": {"soc": [0, 1], "voltage_V": [1.2, 2.4]}, "r0_ohm": 50.0}))
    sim = json.loads((BOARDS / "sim.json").read_text())
    (tmp_path / "board.json").write_text(json.dumps(sim))
    (tmp_path / "t.py").write_text(SAMPLE_ALLOC)
    env = dict(os.environ, MICROPYPATH=f"{SIM_MPY}:{FIRMWARE}", CELLBENCH_SIM_CELL=str(cell),
               CELLBENCH_SIM_SOC0="0.5")
    mp = unixport.micropython_binary()
    out = subprocess.run([mp, "t.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    _, alloc, v_uV, i_nA = out.stdout.split()
    assert int(alloc) == 0
    # and the values are the plant's: 1.8 V OCV minus 50 ohm * 350 uA (source error aside)
    assert abs(int(v_uV) - 1_782_500) < 20_000
    assert abs(int(i_nA) + 350_000) < 5_000


I2C_PARTS = """
import board
b = board.load()
applied = b.set_current(-150000)
import time
for k in range(10):
    time.sleep(1)
    b.feed()
b.sample()
print(applied, b.v_uV, b.i_nA, b.range)
"""


@pytest.mark.hil
def test_ads1115_and_mcp4725_against_the_simulated_parts(tmp_path):
    """board.py's I2C code against the simulator's ADS1115 and MCP4725 register models."""
    sim = json.loads((BOARDS / "sim.json").read_text())
    sim["measure"] = "ads1115"
    sim["source"] = {"type": "mcp4725", "i2c": 0, "addr": 96}
    (tmp_path / "board.json").write_text(json.dumps(sim))
    cell = tmp_path / "cell.json"
    cell.write_text(json.dumps({
        "capacity_Ah": 4e-4, "ocv": {"soc": [0, 1], "voltage_V": [1.2, 2.4]}, "r0_ohm": 100.0}))
    (tmp_path / "t.py").write_text(I2C_PARTS)
    env = dict(os.environ, MICROPYPATH=f"{SIM_MPY}:{FIRMWARE}", CELLBENCH_SIM_CELL=str(cell),
               CELLBENCH_SIM_SOC0="0.5", CELLBENCH_SIM_TRUTH=str(tmp_path / "truth.csv"))
    mp = unixport.micropython_binary()
    out = subprocess.run([mp, "t.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    applied, v_uV, i_nA, rng = map(int, out.stdout.split())
    assert rng == 0 and abs(applied + 150_000) <= 200_000 / 4095 + 2  # 12-bit DAC step
    err = sim["sim"]["source_error"]["200uA"]
    i_true = applied * (1 + err["gain"]) + err["offset_A"] * 1e9
    assert abs(i_nA - i_true) < 300  # ADS1115: 125 uV / 7.5 kOhm per LSB = 17 nA
    z = 0.5 + i_true * 1e-9 * 10 / 3600 / 4e-4
    assert abs(v_uV - (1.2 + 1.2 * z + 100.0 * i_true * 1e-9) * 1e6) < 1_000


@pytest.mark.parametrize("cal", [["not", "an", "object"],
                                 {"board": "cct-rp2040", "voltage": {"gain": "high"}},
                                 {"board": "cct-rp2040", "adc_correction": {"x": 1}}])
def test_unusable_calibration_is_refused_not_fatal(mk, cal):
    b, fm, _ = mk(cal=cal)
    assert b.calibration_id == "" and b.cal_error.startswith("calibration:")
    set_cell(fm, 2.0, 0.0, 0)
    b.sample()
    assert abs(b.v_uV - 2_000_000) < 1000
