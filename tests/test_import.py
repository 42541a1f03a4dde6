"""cellbench import: Neware .nda, BioLogic .mpr and batterydf-read exports -> BDF logs.

No package ships sample files, so the tests build small ones from the formats as the
readers parse them (NewareNDA's nda version-29 records, galvani's MPR modules) from a
known current/voltage series, import them, and compare with that series.
"""

import datetime
import struct

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from cellbench import cli, importers
from cellbench.bdflog import read_log, read_sidecar
from cellbench.errors import InputError

START = datetime.datetime(2026, 11, 25, 8, 0, 0)


def _profile(n_rest=30, n_dch=60, n_chg=60, dt_s=1.0):
    """rest, discharge 0.1 mA, charge 0.08 mA: (t_s, v_V, i_A, status, step-relative t)."""
    i = np.concatenate([np.zeros(n_rest), np.full(n_dch, -1e-4), np.full(n_chg, 8e-5)])
    status = np.array(["Rest"] * n_rest + ["CC_DChg"] * n_dch + ["CC_Chg"] * n_chg)
    t = np.arange(i.size) * dt_s
    v = 1.6 + 0.05 * np.sin(t / 40.0) + 200.0 * i
    step_t = np.concatenate([np.arange(n) * dt_s for n in (n_rest, n_dch, n_chg)])
    return t, v, i, status, step_t


# ---------------------------------------------------------------- Neware .nda (v29)

NDA_STATUS = {"CC_Chg": 1, "CC_DChg": 2, "Rest": 4}
NDA_RANGE = -5            # NewareNDA multiplier 1e-5: current counts of 10 nA


def _nda_record(index, cycle, step, status, time_ms, v, i_mA, when):
    mult = 1e-5
    rec = bytearray(86)
    rec[0:2] = b"\x55\x00"
    struct.pack_into("<IIHB", rec, 2, index, cycle, step, NDA_STATUS[status])
    struct.pack_into("<Qii", rec, 14, int(time_ms), round(v * 10000), round(i_mA / mult))
    struct.pack_into("<HBBBBB", rec, 70, when.year, when.month, when.day, when.hour, when.minute, when.second)
    struct.pack_into("<i", rec, 78, NDA_RANGE)
    return bytes(rec)


def write_nda(path, t, v, i_A, status, clock_s, magnitudes=False):
    """A version-29 .nda: 'NEWARE' header with the version at byte 14, then 86-byte records."""
    header = bytearray(1024)
    header[0:6] = b"NEWARE"
    header[14] = 29
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    body = b"".join(
        _nda_record(k + 1, 0, int(steps[k]), status[k], clock_s[k] * 1000, v[k],
                    abs(i_A[k]) * 1e3 if magnitudes else i_A[k] * 1e3,
                    START + datetime.timedelta(seconds=float(t[k])))
        for k in range(t.size))
    path.write_bytes(bytes(header) + body)
    return path


def _check_log(path, t, v, i_A):
    log = read_log(path)
    assert np.allclose(log["Test Time / s"], t - t[0], atol=1e-6)
    assert np.allclose(log["Voltage / V"], v, atol=1.5e-4)
    assert np.allclose(log["Current / A"], i_A, atol=2e-8)
    # cumulative capacities: trapezoid integral of the known current
    q_dch = np.sum(0.5 * (np.maximum(-i_A[1:], 0) + np.maximum(-i_A[:-1], 0)) * np.diff(t)) / 3600
    assert log["Discharging Capacity / Ah"][-1] == pytest.approx(q_dch, rel=1e-3)
    assert np.all(np.diff(log["Charging Capacity / Ah"]) >= 0)
    assert np.all(np.diff(log["Discharging Capacity / Ah"]) >= 0)
    assert list(dict.fromkeys(log["Step Type"])) == ["REST", "CC_DCH", "CC_CHG"]
    assert list(np.unique(log["Step Count / 1"])) == [1, 2, 3]
    import bdf                      # batterydf's own validator agrees it is a BDF log
    assert bdf.validate(pd.read_parquet(path) if str(path).endswith(".parquet") else pd.read_csv(path))["ok"]
    return log


def test_neware_nda_step_clock_and_sign(tmp_path):
    t, v, i, status, step_t = _profile()
    src = write_nda(tmp_path / "cell.nda", t, v, i, status, step_t)
    out = tmp_path / "cell.bdf.csv"
    assert cli.main(["import", str(src), "--out", str(out)]) == 0
    log = _check_log(out, t, v, i)
    assert np.all(np.diff(log["Test Time / s"]) > 0)       # step clocks made cumulative
    assert read_sidecar(out)["format"] == "Neware .nda"


def test_neware_nda_magnitudes_get_the_sign_from_the_status(tmp_path):
    t, v, i, status, step_t = _profile()
    src = write_nda(tmp_path / "mag.nda", t, v, i, status, t, magnitudes=True)
    out = tmp_path / "mag.bdf.parquet"
    importers.import_file(src, out)
    _check_log(out, t, v, i)


def _ndc_record(index, step, status, time_ms, v, i_mA, when):
    rec = bytearray(94)
    rec[0] = 0x55                                  # bytes 0-7 are the record marker
    struct.pack_into("<IIBB", rec, 8, index, 0, step, NDA_STATUS[status])
    struct.pack_into("<Qii", rec, 23, int(time_ms), round(v * 10000), round(i_mA / 1e-5))
    struct.pack_into("<HBBBBB", rec, 75, when.year, when.month, when.day, when.hour, when.minute, when.second)
    struct.pack_into("<i", rec, 82, NDA_RANGE)
    return bytes(rec)


def write_ndax(path, t, v, i_A, status):
    """An .ndax: a zip holding data.ndc (ndc version 2, file type 1, 94-byte records from 517)."""
    import zipfile

    header = bytearray(517)
    header[0], header[2] = 1, 2
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    body = b"".join(_ndc_record(k + 1, int(steps[k]), status[k], t[k] * 1000, v[k], i_A[k] * 1e3,
                                START + datetime.timedelta(seconds=float(t[k]))) for k in range(t.size))
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.ndc", bytes(header) + body)
    return path


def test_neware_ndax(tmp_path):
    t, v, i, status, _ = _profile()
    src = write_ndax(tmp_path / "cell.ndax", t, v, i, status)
    out = tmp_path / "cell.bdf.csv"
    importers.import_file(src, out)
    _check_log(out, t, v, i)
    assert read_sidecar(out)["format"] == "Neware .ndax"


# ---------------------------------------------------------------- BioLogic .mpr

MPR_MAGIC = b"BIO-LOGIC MODULAR FILE\x1a".ljust(48) + b"\x00\x00\x00\x00"


def _module(short, version, data):
    hdr = short.ljust(10) + b"cellbench test module".ljust(25) + struct.pack("<II", len(data), version)
    return b"MODULE" + hdr + b"11/25/26" + data


def write_mpr(path, t, v, i_A, status):
    """An .mpr with a settings module and a version-2 data module (galvani's layout)."""
    col_ids = [31, 4, 6, 8]                        # flags (Ns changes), time/s, Ewe/V, I/mA
    n = t.size
    head = struct.pack("<IB", n, len(col_ids)) + struct.pack(f"<{len(col_ids)}H", *col_ids)
    head = head.ljust(405, b"\x00")
    rec = np.dtype([("flags", "u1"), ("time/s", "<f8"), ("Ewe/V", "<f4"), ("I/mA", "<f4")])
    data = np.zeros(n, dtype=rec)
    data["flags"] = np.concatenate(([False], status[1:] != status[:-1])) * 0x20
    data["time/s"], data["Ewe/V"], data["I/mA"] = t, v, i_A * 1e3
    path.write_bytes(MPR_MAGIC + _module(b"VMP Set", 0, bytes(64)) + _module(b"VMP data", 2, head + data.tobytes()))
    return path


def test_biologic_mpr(tmp_path):
    t, v, i, status, _ = _profile()
    src = write_mpr(tmp_path / "cell.mpr", t, v, i, status)
    out = tmp_path / "cell.bdf.csv"
    importers.import_file(src, out)
    log = _check_log(out, t, v, i)
    assert log["Cycle Count / 1"][0] == 1


# ---------------------------------------------------------------- batterydf formats


def test_neware_csv_export_through_batterydf(tmp_path):
    t, v, i, status, step_t = _profile()
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    src = tmp_path / "neware_export.csv"
    pd.DataFrame({"Record": np.arange(1, t.size + 1), "Cycle": 1, "Step": steps,
                  "Total Time(s)": t, "Time(s)": step_t, "Current(A)": i,
                  "Voltage(V)": v}).to_csv(src, index=False)
    out = tmp_path / "export.bdf.csv"
    meta = importers.import_file(src, out)
    assert meta["format"] == "batterydf format"
    _check_log(out, t, v, i)


def test_existing_bdf_log_with_machine_names_is_rewritten(tmp_path):
    t, v, i, _, _ = _profile()
    src = tmp_path / "other.csv"
    pd.DataFrame({"test_time_second": t, "voltage_volt": v, "current_ampere": i}).to_csv(src, index=False)
    out = tmp_path / "again.bdf.csv"
    importers.import_file(src, out)
    _check_log(out, t, v, i)


def test_noisy_rests_of_a_bdf_log_stay_one_step(tmp_path):
    """A board's log: rest noise (+-80 nA) above 0.1 % of its largest current (50 uA).
    Its own Step Count marks three steps; record-by-record signs would make dozens."""
    t, v, i, status, _ = _profile()
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    noise = np.random.default_rng(3).choice([-8e-8, 8e-8], t.size)
    i_noisy = np.where(status == "Rest", noise, i * 0.5)
    src = tmp_path / "board.csv"
    pd.DataFrame({"Test Time / s": t, "Voltage / V": v, "Current / A": i_noisy,
                  "Step Count / 1": steps}).to_csv(src, index=False)
    out = tmp_path / "again.bdf.csv"
    importers.import_file(src, out)
    log = read_log(out)
    assert list(np.unique(log["Step Count / 1"])) == [1, 2, 3]
    assert list(dict.fromkeys(log["Step Type"])) == ["REST", "CC_DCH", "CC_CHG"]


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("name, content", [
    ("broken.nda", b"NEWARE" + bytes(200)),
    ("plain.nda", b"not a Neware file at all"),
    ("broken.ndax", b"not a zip at all"),
    ("broken.mpr", b"BIO-LOGIC but not really"),
    ("notes.txt", b"hello\nworld\n"),
])
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, capfd, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    assert cli.main(["import", str(src), "--out", str(tmp_path / "x.bdf.csv")]) == 2
    err = capfd.readouterr().err.strip()   # fd level: a reader's own log handler counts too
    assert err.startswith(f"cellbench: error: {name}:") and "\n" not in err
    assert not (tmp_path / "x.bdf.csv").exists()


def test_missing_file_and_existing_output(tmp_path, capsys):
    assert cli.main(["import", str(tmp_path / "nope.nda"), "--out", str(tmp_path / "x.csv")]) == 2
    t, v, i, status, step_t = _profile()
    src = write_nda(tmp_path / "c.nda", t, v, i, status, step_t)
    out = tmp_path / "c.bdf.csv"
    importers.import_file(src, out)
    with pytest.raises(InputError, match="exists"):
        importers.import_file(src, out)
    importers.import_file(src, out, force=True)


# ---------------------------------------------------------------- properties


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(2, 30), min_size=1, max_size=8), st.floats(0.1, 10.0))
def test_step_clocks_become_one_increasing_test_clock(lengths, dt):
    clock = np.concatenate([np.arange(n) * dt for n in lengths])
    t = importers.test_time_s(clock)
    assert t[0] == 0 and np.all(np.diff(t) > 0)
    within = np.concatenate([np.diff(np.arange(n) * dt) for n in lengths])
    assert np.allclose(np.sort(np.diff(t))[:within.size], np.sort(within)[:within.size]) or np.all(np.diff(t) >= dt * 0.999)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["REST", "CC_CHG", "CC_DCH"]), min_size=1, max_size=40))
def test_cycle_count_rises_only_on_the_first_active_sign(types):
    types = np.array(types)
    cycles = importers.cycle_counts(types)
    assert cycles[0] == 1 and np.all(np.diff(cycles) >= 0) and np.all(np.diff(cycles) <= 1)
    active = [s for s in types if s != "REST"]
    if active:
        first = active[0]
        rises = np.flatnonzero(np.diff(cycles)) + 1
        assert all(types[k] == first for k in rises)
