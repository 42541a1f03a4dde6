"""cellbench import on synthetic files: Neware .nda, BioLogic .mpr and exports -> BDF logs.

These tests build small files from the formats as the readers parse them (NewareNDA's
nda version-29 records, galvani's MPR modules) from a known current/voltage series,
import them, and compare with that series. The second half imports real testers' files
(tests/data/realdata/, sources and licences in its SOURCES.txt) and checks them against
the format's own reader or the tester's own counters.
"""

import datetime
from pathlib import Path
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


def test_neware_flat_csv_export(tmp_path):
    t, v, i, status, step_t = _profile()
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    src = tmp_path / "neware_export.csv"
    pd.DataFrame({"Record": np.arange(1, t.size + 1), "Cycle": 1, "Step": steps,
                  "Total Time(s)": t, "Time(s)": step_t, "Current(A)": i,
                  "Voltage(V)": v}).to_csv(src, index=False)
    out = tmp_path / "export.bdf.csv"
    meta = importers.import_file(src, out)
    assert meta["format"] == "Neware CSV export"
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
    ("PreDiag_000229.034", b"\x00\x01MACCOR" + bytes(5000)),       # a Maccor raw (binary) file
    ("broken.res", b"not an Access database"),
])
def test_unreadable_input_is_one_line_naming_the_file(tmp_path, capfd, name, content):
    src = tmp_path / name
    src.write_bytes(content)
    assert cli.main(["import", str(src), "--out", str(tmp_path / "x.bdf.csv")]) == 2
    err = capfd.readouterr().err.strip()   # fd level: a reader's own log handler counts too
    assert err.startswith(f"cellbench: error: {name}:") and "\n" not in err
    assert not (tmp_path / "x.bdf.csv").exists()
    if name.endswith(".034"):
        assert "Maccor raw data file" in err and "export the test as text" in err


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


NEWARE_STATUSES = ["Rest", "CC_Chg", "CC_DChg", "CCCV_Chg", "CCCV_DChg", "CV_Chg", "CV_DChg",
                   "CP_Chg", "CP_DChg", "SIM", "Pulse", "OCV"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NEWARE_STATUSES), st.integers(1, 4)), min_size=1, max_size=30))
def test_neware_cycles_are_newarenda_software_cycle_numbers(runs):
    """Our vectorised cycle numbering against NewareNDA's own loop (its reference
    implementation of Neware's "charge first" statistic) on random step sequences."""
    from NewareNDA.utils import _generate_cycle_number

    from cellbench.importers import neware

    status = pd.Series([s for s, n in runs for _ in range(n)], dtype="category")
    ref = np.asarray(_generate_cycle_number(pd.DataFrame({"Status": status}), "chg"), dtype=np.int64)
    names, codes = neware._categories(status)
    assert np.array_equal(neware.charge_first_cycles(names, codes), ref)


def test_step_types_a_short_pulse_stays_a_step_a_probe_that_moves_nothing_rests():
    """Step types from current: a 1 s pulse at the test's current between hour-long steps
    is a step; a one-record step at a trace of current that the counters say moved
    nothing is a rest."""
    from cellbench.importers.derive import step_types

    step = np.repeat([1, 2, 3, 4, 5], [3600, 1, 1, 1, 3600])
    i = np.concatenate([np.full(3600, -1e-3), [0.0], [1e-3], [3e-6], np.full(3600, 1e-3)])
    through = np.cumsum(np.abs(i)) / 3600          # 1 s records
    through[3602] = through[3601]                  # the probe moved nothing by the counters
    kinds = step_types(None, step, i, through)
    assert list(kinds[[0, 3600, 3601, 3602, 3603]]) == ["CC_DCH", "REST", "CC_CHG", "REST", "CC_CHG"]
    assert step_types(None, step, i)[3602] == "CC_CHG"     # the mean current alone cannot tell


# ================================================================ real testers' files

REAL = Path(__file__).parent / "data" / "realdata"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "realdata"
REL = 1e-3      # 0.1 %


def _imported(tmp_path, name):
    out = tmp_path / (name + ".bdf.csv")
    meta = importers.import_file(REAL / name, out)
    return read_log(out), meta


def _per_cycle_from_log(log):
    """{cycle: (charge Ah, discharge Ah)} from the log's cumulative counters."""
    cyc, qc, qd = log["Cycle Count / 1"], log["Charging Capacity / Ah"], log["Discharging Capacity / Ah"]
    out = {}
    for c in np.unique(cyc):
        k = np.flatnonzero(cyc == c)
        lo = max(k[0] - 1, 0)   # the interval into the cycle's first record belongs to it
        out[int(c)] = (qc[k[-1]] - qc[lo], qd[k[-1]] - qd[lo])
    return out


def test_biologic_gcpl_mpr_current_from_dq_matches_the_mpt_export(tmp_path):
    """GCPL .mpr without I/mA: current from dq/dt; the .mpt export of the same run holds
    the instrument's <I>/mA, read here with pandas alone."""
    log, meta = _imported(tmp_path, "yadg_gcpl.issue_149.mpr")
    assert meta["format"] == "BioLogic .mpr"
    mpt = pd.read_csv(REAL / "yadg_gcpl.issue_149.mpt", sep="\t", skiprows=80, encoding="cp1252",
                      decimal=",", index_col=False)
    i_ref = mpt["<I>/mA"].to_numpy() / 1e3
    flowing = np.abs(i_ref) > 1e-6
    assert flowing.sum() > 50
    assert np.allclose(log["Current / A"][flowing], i_ref[flowing], rtol=REL)
    t = mpt["time/s"].to_numpy()
    assert log["Test Time / s"][-1] - log["Test Time / s"][0] == pytest.approx(t[-1] - t[0], rel=1e-9)
    # the .mpt itself imports to the same log
    again, meta2 = _imported(tmp_path, "yadg_gcpl.issue_149.mpt")
    assert meta2["format"] == "BioLogic .mpt/CSV export"
    assert np.allclose(again["Current / A"], log["Current / A"], rtol=1e-6, atol=1e-12)


def test_biologic_gcpl_capacities_are_the_instruments_half_cycle_counters(tmp_path):
    from galvani import BioLogic

    data = BioLogic.MPRfile(str(REAL / "yadg_gcpl.issue_149.mpr")).data
    log, _ = _imported(tmp_path, "yadg_gcpl.issue_149.mpr")
    half, q = data["half cycle"], data["Q charge/discharge/mA.h"]
    ref_chg = sum(q[half == h].max() for h in np.unique(half) if q[half == h].max() > 0) / 1e3
    ref_dch = sum(-q[half == h].min() for h in np.unique(half) if q[half == h].min() < 0) / 1e3
    assert log["Charging Capacity / Ah"][-1] == pytest.approx(ref_chg, rel=REL)
    assert log["Discharging Capacity / Ah"][-1] == pytest.approx(ref_dch, rel=REL)
    assert set(log["Step Type"]) == {"REST", "CC_CHG", "CC_DCH"}     # mode 3 is a rest
    assert log["Cycle Count / 1"].max() == np.floor(half.max() / 2) + 1


def test_neware_nda_against_newarenda_counters(tmp_path):
    import NewareNDA

    df = NewareNDA.read(str(REAL / "neware_new_nda_file.nda"), log_level="CRITICAL")
    log, _ = _imported(tmp_path, "neware_new_nda_file.nda")
    assert log["Cycle Count / 1"].max() == df["Cycle"].max()
    per_step = df.groupby(["Cycle", "Step"])[["Charge_Capacity(mAh)", "Discharge_Capacity(mAh)"]].max()
    ref = per_step.groupby(level=0).sum() / 1e3
    got = _per_cycle_from_log(log)
    for c, row in ref.iterrows():
        assert got[c][0] == pytest.approx(row["Charge_Capacity(mAh)"], rel=REL, abs=1e-12)
        assert got[c][1] == pytest.approx(row["Discharge_Capacity(mAh)"], rel=REL, abs=1e-12)
    assert np.all(np.diff(log["Test Time / s"]) >= 0)
    stamps = df["Timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    # the 1 s wall clock refined by the test clock: within a second of it, never repeated
    assert np.all(np.abs(log["Unix Time / s"] - stamps) <= 1.0)
    moving = np.diff(log["Test Time / s"]) > 0
    assert moving.mean() > 0.99 and np.all(np.diff(log["Unix Time / s"])[moving] > 0)
    # test time at the step clock's resolution (0.1 s here, finer than the 1 s wall clock)
    step_t = df["Time"].to_numpy()
    same_step = np.diff(df["Step"].to_numpy()) == 0
    assert np.allclose(np.diff(log["Test Time / s"])[same_step], np.diff(step_t)[same_step], atol=1e-9)
    assert np.unique(log["Test Time / s"]).size > np.unique(stamps).size
    span = log["Test Time / s"][-1] - log["Test Time / s"][0]
    assert abs(span - (stamps[-1] - stamps[0])) <= 1.0        # anchored to the wall clock


def test_neware_csv_export_against_its_cycle_rows(tmp_path):
    """The BTS export's cycle rows hold the tester's own per-cycle capacities."""
    name = "cellpy_nw_regular_export_ife_example_3cycles.csv"
    lines = (REAL / name).read_text().splitlines()
    rows = [line.split(",") for line in lines[3:] if line[:1].isdigit()]
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "Neware CSV export"
    got = _per_cycle_from_log(log)
    assert sorted(got) == [int(r[0]) for r in rows]
    for r in rows:
        assert got[int(r[0])][0] == pytest.approx(float(r[1]), rel=REL)
        assert got[int(r[0])][1] == pytest.approx(float(r[2]), rel=REL)
    steps = [line for line in lines[3:] if line.startswith(",") and not line.startswith(",,")]
    inline = [r for r in rows if len(r) > 10 and r[10]]        # first step on the cycle row
    assert log["Step Count / 1"].max() == len(steps) + len(inline)
    assert log["Step Type"][0] == "REST" and inline[0][10] == "Rest"


def test_maccor_text_against_its_amp_hr_counter(tmp_path):
    name = "beep_maccor_PreDiag_000229_1500rows.034"
    df = pd.read_csv(REAL / name, sep="\t", skiprows=1, index_col=False)
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "Maccor text"
    ends = df.groupby(["Step", "State"])["Amp-hr"].max().reset_index()
    assert log["Charging Capacity / Ah"][-1] == pytest.approx(ends[ends.State == "C"]["Amp-hr"].sum(), rel=REL)
    assert log["Discharging Capacity / Ah"][-1] == pytest.approx(ends[ends.State == "D"]["Amp-hr"].sum(), rel=REL)
    assert log["Test Time / s"][-1] == pytest.approx(df["Test (Sec)"].iloc[-1], rel=1e-9)
    dch = (df["State"] == "D").to_numpy()
    assert np.all(log["Current / A"][dch] <= 0) and np.all(log["Current / A"][~dch] >= 0)


def test_arbin_csv_and_blank_indices(tmp_path):
    name = "beep_arbin_FastCharge_000025_CH8.csv"
    df = pd.read_csv(REAL / name)
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "Arbin CSV/XLSX export"
    assert log["Test Time / s"][-1] == pytest.approx(df["Test_Time"].iloc[-1], rel=1e-9)
    assert log["Unix Time / s"] == pytest.approx(df["DateTime"].to_numpy(), abs=1e-6)
    blank = df.astype(object)
    blank.loc[5:20, ["Step_Index", "Cycle_Index"]] = ""
    src = tmp_path / "blank_arbin.csv"
    blank.to_csv(src, index=False)
    out = tmp_path / "blank.bdf.csv"
    importers.import_file(src, out)
    again = read_log(out)
    assert np.array_equal(again["Cycle Count / 1"], log["Cycle Count / 1"])
    assert np.allclose(again["Voltage / V"], log["Voltage / V"])


# Novonix ``Step Type`` codes as BEEP's novonix_conversion.yaml names them (rest,
# cc_charge, cc_discharge, cccv_charge, cv_hold_charge, cccv_discharge, cv_hold_discharge).
NOVONIX_BEEP_NAMES = {0: "rest", 1: "cc_charge", 2: "cc_discharge", 7: "cccv_charge",
                      8: "cv_hold_charge", 9: "cccv_discharge", 10: "cv_hold_discharge"}


def _novonix_data(name):
    lines = (REAL / name).read_text(encoding="utf-8").splitlines()
    start = lines.index("[Data]") + 1
    import io

    return pd.read_csv(io.StringIO("\n".join(l.strip('"') for l in lines[start:])))


def test_novonix_csv_step_codes_time_span_and_counters(tmp_path):
    """The real Novonix file: open-circuit storage, a CC-CV charge (codes 7 then 8 in one
    protocol step) and a CC charge. Step types follow the tester's codes, one step per
    protocol step; its Capacity counter runs on through both charges and is the log's."""
    name = "beep_nova_Form-CH01-01_1200rows.csv"
    df = _novonix_data(name)
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "Novonix CSV" and len(log["Voltage / V"]) == len(df)
    assert log["Test Time / s"] == pytest.approx(df["Run Time (h)"].to_numpy() * 3600, rel=1e-12)
    codes = df["Step Type"].to_numpy()
    assert set(codes) == {0, 7, 8, 1}
    names = np.array([NOVONIX_BEEP_NAMES[c] for c in codes])
    kinds = log["Step Type"]
    assert np.all((kinds == "REST") == (names == "rest"))
    assert np.all((kinds == "CC_CHG") == (names == "cc_charge"))
    assert np.all((kinds == "CCCV_CHG") == np.isin(names, ("cccv_charge", "cv_hold_charge")))
    # one BDF step per protocol step (Step Number), though the CC-CV step changes code
    assert log["Step Count / 1"].max() == df["Step Number"].nunique() == 3
    assert np.all(log["Current / A"] >= 0) and np.all(log["Current / A"][names == "rest"] == 0)
    q = df["Capacity (Ah)"].to_numpy()
    assert np.all(np.diff(q) >= 0)              # never restarted in this file: cumulative
    assert log["Charging Capacity / Ah"] == pytest.approx(q, rel=REL, abs=1e-12)
    assert log["Charging Energy / Wh"][-1] == pytest.approx(df["Energy (Wh)"].iloc[-1], rel=REL)
    assert log["Discharging Capacity / Ah"][-1] == 0


def test_novonix_discharge_codes_and_a_counter_restarting_each_direction(tmp_path):
    """The real file's records with a discharge appended the way the tester writes one
    (code 9 then 10 for a CC-CV discharge, Capacity from 0 again): the charge counter is
    held through it, the discharge is the appended counter's end."""
    name = "beep_nova_Form-CH01-01_1200rows.csv"
    text = (REAL / name).read_text(encoding="utf-8").splitlines()
    last = text[-1].strip('"').split(",")
    t0_h, n = float(last[3]), 40
    rows = []
    for k in range(n):
        code = 9 if k < 30 else 10
        i_A = -0.012 if k < 30 else -0.012 * (1 - (k - 29) / 12)
        q_Ah = 0.012 * (k + 1) * 10 / 3600
        rows.append(f'"{last[0]},1,{code},{t0_h + (k + 1) * 10 / 3600:.7f},{(k + 1) * 10 / 3600:.7f},'
                    f'{i_A:.10f},{3.4 - 0.01 * k:.8f},{q_Ah:.10f},39.2,23.4,{q_Ah * 3.6:.10f},0,0,4,0"')
    src = tmp_path / "novonix_with_discharge.csv"
    src.write_text("\n".join(text + rows) + "\n", encoding="utf-8")
    out = tmp_path / "n.bdf.csv"
    importers.import_file(src, out)
    log = read_log(out)
    tail = log["Step Type"][-n:]
    assert np.all(tail == "CCCV_DCH") and log["Step Count / 1"].max() == 4
    assert np.all(log["Current / A"][-n:] < 0)
    q_chg_end = float(last[7])
    assert log["Charging Capacity / Ah"][-1] == pytest.approx(q_chg_end, rel=1e-9)
    assert log["Discharging Capacity / Ah"][-1] == pytest.approx(0.012 * n * 10 / 3600, rel=1e-6)


def test_bdf_in_hours_with_discharge_positive_current(tmp_path):
    """batmo's BDF: ``Test Time / h`` and a current positive on discharge steps."""
    name = "cellpy_batmo_bdf_3000rows.csv"
    df = pd.read_csv(REAL / name)
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "BDF"
    assert log["Test Time / s"] == pytest.approx(df["Test Time / h"].to_numpy() * 3600.0, rel=1e-12)
    dch = (df["Step Type / 1"] == "discharge").to_numpy()
    assert np.all(log["Current / A"][dch] <= 0) and np.all(log["Current / A"][~dch] >= 0)
    assert dch.any() and (~dch).any()


def test_units_from_headers_and_a_3000_volt_cell_is_refused(tmp_path, capsys):
    """A PEC-style table in mV and mA comes in in V and A; the same numbers under a
    volt header are refused with the column and unit named, and nothing is written."""
    t = np.arange(50) * 10.0
    mv = 3272.0 + t / 10
    body = {"Total Time (Seconds)": t, "Cycle": 1, "Step": 1, "Current (mA)": 1640.0 / 1e3 * 0 + 16.4,
            "Voltage (mV)": mv}
    src = tmp_path / "pec.csv"
    src.write_text("Test:,demo\n" + pd.DataFrame(body).to_csv(index=False))
    out = tmp_path / "pec.bdf.csv"
    assert cli.main(["import", str(src), "--out", str(out)]) == 0
    log = read_log(out)
    assert log["Voltage / V"] == pytest.approx(mv / 1e3) and log["Current / A"] == pytest.approx(0.0164)
    bad = tmp_path / "bad.csv"
    bad.write_text("Test:,demo\n" + pd.DataFrame(body).rename(columns={"Voltage (mV)": "Voltage (V)"}).to_csv(index=False))
    capsys.readouterr()
    assert cli.main(["import", str(bad), "--out", str(tmp_path / "bad.bdf.csv")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = captured.err.strip()
    assert "\n" not in line and "bad.csv" in line and "'Voltage (V)'" in line and "V" in line
    assert not (tmp_path / "bad.bdf.csv").exists()


PEC_COLUMNS = ("Test,Cell,Rack,Shelf,Position,Cell ID,Step,Instruction Name,Cycle,"
               "Total Time (Hours in hh:mm:ss.xxx),Load On Time (Hours in hh:mm:ss.xxx),Step Time (Seconds),"
               "Real Time,Voltage (V),Current (A),Charge Capacity (mAh),Discharge Capacity (mAh),"
               "Charge Energy (mWh),Discharge Energy (mWh),Temp (°C)")


def _clock(t_s):
    """Seconds as PEC's "Hours in hh:mm:ss.xxx" text (hours past 24 allowed)."""
    ms = round(t_s * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def test_pec_csv_with_clock_times_instructions_and_counters(tmp_path):
    """A PEC SBT export laid out as the public ones are (cellpy's pec_multiple_tests):
    Total Time as hh:mm:ss.xxx text, Instruction Name, Real Time m/d/Y, counters in mAh
    and mWh that restart each step. A rest, a 1.5 A discharge for 27 h (hours past 24)
    and a charge: time, signs, step types and the counters' sums come through."""
    t, v, i, step, name, q_c, q_d = [], [], [], [], [], [], []
    plan = [("Idle", 0.0, 600), ("Discharge", -1.5, 27 * 3600), ("Charge", 1.0, 3600)]
    clock = 0.0
    for k, (instr, amps, dur) in enumerate(plan):
        for s_ in np.arange(0.0, dur, 1.25 if instr == "Charge" else 300.0):
            t.append(clock + s_); v.append(3.7 + 0.1 * np.sign(amps)); i.append(amps)
            step.append(k); name.append(instr)
            q = abs(amps) * s_ / 3.6             # mAh since the step began
            q_c.append(q if amps > 0 else 0.0); q_d.append(q if amps < 0 else 0.0)
        clock += dur
    start = datetime.datetime(2026, 1, 8, 17, 45, 8)
    rows = [f"25205,1,ACT4,014,1,X,{step[k]},{name[k]},1,{_clock(t[k])},00:00:00.000,0,"
            f"{(start + datetime.timedelta(seconds=int(t[k]))).strftime('%m/%d/%Y %H:%M:%S')},"
            f"{v[k]},{i[k]},{q_c[k]},{q_d[k]},{q_c[k] * 3.8},{q_d[k] * 3.6},20.1" for k in range(len(t))]
    src = tmp_path / "Test1.csv"
    src.write_text("Request Year:,2026\nTest:,1\nStart Time:,01/08/2026 17:45:08\n" + PEC_COLUMNS + "\n"
                   + "\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "pec.bdf.csv"
    meta = importers.import_file(src, out)
    log = read_log(out)
    assert meta["format"] == "PEC CSV"
    assert log["Test Time / s"] == pytest.approx(np.array(t), abs=1e-3)
    assert log["Test Time / s"][-1] > 27 * 3600
    kinds = dict(zip(name, log["Step Type"]))
    assert kinds == {"Idle": "REST", "Discharge": "CC_DCH", "Charge": "CC_CHG"}
    assert log["Current / A"] == pytest.approx(np.array(i))
    ends_d = max(q for q, n in zip(q_d, name) if n == "Discharge") / 1e3
    ends_c = max(q for q, n in zip(q_c, name) if n == "Charge") / 1e3
    assert log["Discharging Capacity / Ah"][-1] == pytest.approx(ends_d, rel=1e-9)
    assert log["Charging Capacity / Ah"][-1] == pytest.approx(ends_c, rel=1e-9)
    # the whole-second Real Time is refined by the test clock (1.25 s records stay apart)
    assert np.all(np.diff(log["Unix Time / s"]) > 0)
    assert log["Unix Time / s"][0] == pytest.approx(start.replace(tzinfo=datetime.timezone.utc).timestamp())


def test_unsupported_file_is_one_short_line(tmp_path, capfd):
    src = tmp_path / "mystery.csv"
    src.write_text("alpha,beta\n1,2\n" * 200)
    assert cli.main(["import", str(src), "--out", str(tmp_path / "m.bdf.csv")]) == 2
    cap = capfd.readouterr()
    assert cap.out == ""
    line = cap.err.strip()
    assert line.startswith("cellbench: error: mystery.csv") and "\n" not in line and len(line) < 300
    assert not (tmp_path / "m.bdf.csv").exists()


def test_unix_time_keeps_sub_second_resolution(tmp_path):
    t = np.arange(100) * 0.1
    src = tmp_path / "fast.csv"
    pd.DataFrame({"Test Time / s": t, "Voltage / V": 3.7, "Current / A": 0.001,
                  "Unix Time / s": 1.7e9 + 0.123456 + t}).to_csv(src, index=False)
    out = tmp_path / "fast.bdf.csv"
    importers.import_file(src, out)
    unix = read_log(out)["Unix Time / s"]
    assert np.unique(unix).size == 100
    assert unix == pytest.approx(1.7e9 + 0.123456 + t, abs=1e-6)


def _shared_files():
    if not SHARED.is_dir():
        return []
    return sorted(p for p in SHARED.iterdir() if p.name != "SOURCES.txt")


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/realdata is not next to this checkout")
@pytest.mark.parametrize("path", _shared_files(), ids=lambda p: p.name)
def test_every_shared_real_file_imports_and_analyses(tmp_path, path, capfd):
    """The whole ../shared/realdata set: imported and analysed without a traceback (the
    Arbin .res through mdbtools, which `make test` installs)."""
    out = tmp_path / "log.bdf.csv"
    code = cli.main(["import", str(path), "--out", str(out)])
    err = capfd.readouterr().err
    assert code == 0, err
    if path.name == "neware_test_2.ndax":       # its NdaxConfig.xml: BatteryMass="6E-06" (kg)
        assert read_sidecar(out)["mass_mg"] == pytest.approx(6.0)
    assert cli.main(["analyze", str(out), "--no-figures", "--out", str(tmp_path / "a")]) == 0, capfd.readouterr().err


def test_neware_xlsx_record_sheet(tmp_path):
    t, v, i, status, step_t = _profile()
    steps = np.cumsum(np.concatenate(([True], status[1:] != status[:-1])))
    src = tmp_path / "export.xlsx"
    with pd.ExcelWriter(src) as xl:
        pd.DataFrame({"Cycle": [1]}).to_excel(xl, sheet_name="cycle", index=False)
        pd.DataFrame({"DataPoint": np.arange(1, t.size + 1), "Cycle Index": 1, "Step Index": steps,
                      "Step Type": [{"Rest": "Rest", "CC_DChg": "CC DChg", "CC_Chg": "CC Chg"}[s] for s in status],
                      "Total Time": [f"{int(x) // 3600:02d}:{int(x) // 60 % 60:02d}:{int(x) % 60:02d}" for x in t],
                      "Current(mA)": i * 1e3, "Voltage(V)": v}).to_excel(xl, sheet_name="record", index=False)
    out = tmp_path / "x.bdf.csv"
    meta = importers.import_file(src, out)
    assert meta["format"] == "Neware/Arbin XLSX export"
    _check_log(out, t, v, i)


def test_biologic_csv_export_with_dates_against_its_q_counters(tmp_path):
    """An EC-Lab CSV export (``;``-separated, ``time/s`` written as dates): per-cycle
    capacities against the instrument's own ``Q charge``/``Q discharge`` counters."""
    name = "beep_biologic_MB_CE1_1800rows.csv"
    df = pd.read_csv(REAL / name, sep=";", index_col=False)
    log, meta = _imported(tmp_path, name)
    assert meta["format"] == "BioLogic .mpt/CSV export"
    stamps = pd.to_datetime(df["time/s"]).to_numpy(dtype="datetime64[ns]").astype(np.int64) / 1e9
    assert log["Test Time / s"][-1] == pytest.approx(stamps[-1] - stamps[0], abs=1e-3)
    got = _per_cycle_from_log(log)
    for cyc, rows in df.groupby("cycle number"):
        assert got[int(cyc) + 1][0] == pytest.approx(rows["Q charge/mA.h"].max() / 1e3, rel=REL)
        assert got[int(cyc) + 1][1] == pytest.approx(rows["Q discharge/mA.h"].max() / 1e3, rel=REL, abs=1e-12)


# ---------------------------------------------------------------- Arbin .res (mdbtools)

RES = "cellpy_arbin_20160805_test001_45_cc_01.res"
OLE_DAY0_UNIX_S = -2209161600.0      # 1899-12-30T00:00Z, day 0 of Arbin's OLE dates


def _mdb_table(name, table):
    """A table of the Access file as the tester wrote it, straight from mdb-export."""
    import io
    import subprocess

    done = subprocess.run(["mdb-export", str(REAL / name), table], capture_output=True, check=True)
    return pd.read_csv(io.BytesIO(done.stdout))


def test_arbin_res_against_its_own_counters_and_global_table(tmp_path):
    """Arbin counts Charge_/Discharge_Capacity from 0 in each cycle: its largest value in a
    cycle is the tester's capacity for that cycle. Global_Table gives the start (OLE days)
    and the active mass (g); the records' clock must agree with both."""
    records = _mdb_table(RES, "Channel_Normal_Table")
    test = _mdb_table(RES, "Global_Table").iloc[0]
    log, meta = _imported(tmp_path, RES)
    assert meta["format"] == "Arbin .res" and len(log["Test Time / s"]) == len(records)
    per_cycle = records.groupby("Cycle_Index")[["Charge_Capacity", "Discharge_Capacity"]].max()
    got = _per_cycle_from_log(log)
    assert sorted(got) == list(per_cycle.index) and len(got) == 18
    for c, row in per_cycle.iterrows():
        assert got[c][0] == pytest.approx(row["Charge_Capacity"], rel=REL, abs=1e-12)
        assert got[c][1] == pytest.approx(row["Discharge_Capacity"], rel=REL, abs=1e-12)
    t = records["Test_Time"].to_numpy()
    assert log["Test Time / s"] == pytest.approx(t, rel=1e-12)
    start_s = OLE_DAY0_UNIX_S + test["Start_DateTime"] * 86400.0
    assert meta["start_unix_s"] == pytest.approx(start_s, abs=1e-3)
    # every record's wall clock = the test's start + its test time (Arbin's clock ticks 1 ms)
    assert log["Unix Time / s"] - log["Test Time / s"] == pytest.approx(np.full(t.size, start_s), abs=1.0)
    assert meta["mass_mg"] == pytest.approx(test["MASS"] * 1e3)
    # Arbin's one-record steps (15-35 ms after each active step) move no charge by its own
    # counters (< 1e-8 Ah of ~1.6e-3): rests, so the Si half cell's first step is its lithiation.
    one = records.groupby(["Cycle_Index", "Step_Index"])["Data_Point"].transform("size").to_numpy() == 1
    moved = np.diff(records["Charge_Capacity"] + records["Discharge_Capacity"], prepend=0.0)
    assert one.sum() >= 30 and np.all(np.abs(moved[one]) < 1e-8)
    assert np.all(log["Step Type"][one] == "REST")
    assert log["Step Type"][log["Step Type"] != "REST"][0] == "CC_DCH"
    assert read_sidecar(tmp_path / (RES + ".bdf.csv"))["mass_mg"] == pytest.approx(0.85283798)


def test_arbin_res_without_mdbtools_is_one_line(tmp_path, monkeypatch, capfd):
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    out = tmp_path / "x.bdf.csv"
    assert cli.main(["import", str(REAL / RES), "--out", str(out)]) == 2
    cap = capfd.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1
    assert cap.err.startswith(f"cellbench: error: {RES}: Arbin .res:") and "mdbtools" in cap.err
    assert not out.exists()
