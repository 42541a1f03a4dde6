"""BDF log writer/reader: exact unit conversion, BDF validity, crash safety, no silent overwrite."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, HealthCheck
from hypothesis import strategies as st

import bdf
from cellbench import bdflog
from cellbench.errors import InputError

I30 = st.integers(-(2**30), 2**30 - 1)
U30 = st.integers(0, 2**30 - 1)


def _record(k, **over):
    rec = dict(t_ms=1000 * k, v_uV=1_500_000 + 7 * k, i_nA=-350_000, cycle=1 + k // 4,
               step_count=1 + k // 2, step_index=k % 2, step_type=k % 5, fault=0,
               q_chg_nAh=11 * k, q_dch_nAh=97 * k, q_step_nAh=-3 * k, e_chg_uWh=5 * k,
               e_dch_uWh=150 * k, soc_ppm=10_000 * k, soc_std_ppm=1000, cap_nAh=400_000 - 13 * k,
               cap_std_nAh=4_000, r_mohm=33_000 + 250 * k, r_std_mohm=-1 if k == 0 else 900,
               seq=k + 1)
    rec.update(over)
    return rec


records = st.builds(
    dict, t_ms=U30, v_uV=U30, i_nA=I30, cycle=st.integers(1, 10**6), step_count=U30,
    step_index=U30, step_type=st.integers(0, 4), fault=st.integers(0, 255),
    q_chg_nAh=U30, q_dch_nAh=U30, q_step_nAh=I30, e_chg_uWh=U30, e_dch_uWh=U30,
    soc_ppm=st.integers(-50_000, 1_050_000), soc_std_ppm=st.integers(0, 1_000_000),
    cap_nAh=st.integers(-1, 2**31 - 1), cap_std_nAh=st.integers(-1, 2**31 - 1),
    r_mohm=st.integers(-1, 2**31 - 1), r_std_mohm=st.integers(-1, 2**31 - 1))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(records, min_size=1, max_size=8))
def test_round_trip_is_exact_scaling(tmp_path, recs):
    path = tmp_path / "rt.bdf.csv"
    with bdflog.LogWriter(path, with_soc=True, with_ageing=True, start_unix_s=1.7e9,
                          force=True) as log:
        for rec in recs:
            log.write(rec)
    got = bdflog.read_log(path)
    col = lambda key: np.array([r[key] for r in recs], dtype=float)
    np.testing.assert_allclose(got["Test Time / s"], col("t_ms") / 1e3, rtol=1e-15)
    np.testing.assert_allclose(got["Voltage / V"], col("v_uV") / 1e6, rtol=1e-15)
    np.testing.assert_allclose(got["Current / A"], col("i_nA") / 1e9, rtol=1e-15)
    np.testing.assert_allclose(got["Unix Time / s"], 1.7e9 + col("t_ms") / 1e3, atol=1e-3)
    np.testing.assert_allclose(got["Charging Capacity / Ah"], col("q_chg_nAh") / 1e9, rtol=1e-15)
    np.testing.assert_allclose(got["Discharging Capacity / Ah"], col("q_dch_nAh") / 1e9, rtol=1e-15)
    np.testing.assert_allclose(got["Step Capacity / Ah"], col("q_step_nAh") / 1e9, rtol=1e-15)
    np.testing.assert_allclose(got["Charging Energy / Wh"], col("e_chg_uWh") / 1e6, rtol=1e-15)
    np.testing.assert_allclose(got["Discharging Energy / Wh"], col("e_dch_uWh") / 1e6, rtol=1e-15)
    assert got["Cycle Count / 1"].tolist() == [r["cycle"] for r in recs]
    assert got["Step Count / 1"].tolist() == [r["step_count"] for r in recs]
    assert got["Step Index / 1"].tolist() == [r["step_index"] for r in recs]
    assert got["Fault Flags / 1"].tolist() == [r["fault"] for r in recs]
    names = ["REST", "CC_CHG", "CC_DCH", "CV_CHG", "CV_DCH"]
    assert got["Step Type"].tolist() == [names[r["step_type"]] for r in recs]
    # -1 is "no estimate" (empty, NaN); any other SoC, below 0 too, is what the filter said
    soc = np.array([r["soc_ppm"] / 1e6 if r["soc_ppm"] != -1 else np.nan for r in recs])
    np.testing.assert_allclose(got["SOC / 1"], soc, rtol=1e-15)
    # the estimator's slow states: nAh -> Ah, mohm -> ohm; -1 (no estimate) -> empty -> NaN
    for name, key, scale in (("Capacity Estimate / Ah", "cap_nAh", 1e9),
                             ("Capacity Estimate Std / Ah", "cap_std_nAh", 1e9),
                             ("Charge Transfer Resistance Estimate / ohm", "r_mohm", 1e3),
                             ("Charge Transfer Resistance Estimate Std / ohm", "r_std_mohm", 1e3)):
        want = np.array([r[key] / scale if r[key] >= 0 else np.nan for r in recs])
        np.testing.assert_allclose(got[name], want, rtol=1e-15, err_msg=name)


@given(n=st.integers(-(10**12), 10**12), digits=st.integers(0, 9))
def test_fixed_is_exact_decimal(n, digits):
    from fractions import Fraction
    assert Fraction(bdflog.fixed(n, digits)) == Fraction(n, 10**digits)


def test_columns_in_design_order_and_soc_only_with_model(tmp_path):
    plain = bdflog.LogWriter(tmp_path / "a.bdf.csv")
    plain.close()
    header = (tmp_path / "a.bdf.csv").read_text().splitlines()[0].split(",")
    assert header == ["Test Time / s", "Voltage / V", "Current / A", "Unix Time / s",
                      "Cycle Count / 1", "Step Count / 1", "Step Index / 1", "Step Type",
                      "Charging Capacity / Ah", "Discharging Capacity / Ah",
                      "Step Capacity / Ah", "Charging Energy / Wh",
                      "Discharging Energy / Wh", "Fault Flags / 1", "Record Seq / 1"]
    with_model = bdflog.LogWriter(tmp_path / "b.bdf.csv", with_soc=True)
    with_model.close()
    assert (tmp_path / "b.bdf.csv").read_text().splitlines()[0].endswith(
        ",SOC / 1,SOC Std / 1,Record Seq / 1")
    ageing = bdflog.LogWriter(tmp_path / "c.bdf.csv", with_soc=True, with_ageing=True)
    ageing.close()
    assert (tmp_path / "c.bdf.csv").read_text().splitlines()[0].endswith(
        ",Fault Flags / 1,SOC / 1,SOC Std / 1,Capacity Estimate / Ah,Capacity Estimate Std / Ah,"
        "Charge Transfer Resistance Estimate / ohm,Charge Transfer Resistance Estimate Std / ohm,"
        "Record Seq / 1")


def test_ageing_columns_follow_the_models_estimator():
    """A model whose estimator tracks capacity or resistance gets the ageing columns."""
    assert not bdflog.model_has_ageing(None)
    assert not bdflog.model_has_ageing({"capacity_Ah": 4e-4})
    assert not bdflog.model_has_ageing({"estimator": {"capacity": False, "q_soc": 1e-6}})
    assert bdflog.model_has_ageing({"estimator": {"capacity": True}})
    assert bdflog.model_has_ageing({"estimator": {"resistance": True}})


def test_log_passes_bdf_validate(tmp_path):
    path = tmp_path / "v.bdf.csv"
    with bdflog.LogWriter(path, with_soc=True, with_ageing=True) as log:
        for k in range(20):
            log.write(_record(k))
    report = bdf.validate(pd.read_csv(path), raise_on_error=True)
    assert report["ok"] and not report["missing"]
    assert report["time_stats"]["monotonic"]


def test_killed_mid_write_is_readable_up_to_last_complete_line(tmp_path):
    path = tmp_path / "k.bdf.csv"
    with bdflog.LogWriter(path) as log:
        for k in range(6):
            log.write(_record(k))
    full = path.read_bytes()
    header_end = full.index(b"\n") + 1
    for cut in range(header_end, len(full) + 1):
        path.write_bytes(full[:cut])
        complete_rows = full[:cut].count(b"\n") - 1
        got = bdflog.read_log(path)
        assert len(got["Test Time / s"]) == complete_rows
        np.testing.assert_allclose(got["Test Time / s"], np.arange(complete_rows) * 1.0)


def test_writer_flushes_each_row_before_close(tmp_path):
    path = tmp_path / "f.bdf.csv"
    log = bdflog.LogWriter(path)
    log.write(_record(0))
    log.write(_record(1))
    # Read while the writer is still open: as a killed process would leave it.
    assert len(bdflog.read_log(path)["Voltage / V"]) == 2
    log.close()


def test_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "o.bdf.csv"
    bdflog.LogWriter(path).close()
    with pytest.raises(InputError, match="exists"):
        bdflog.LogWriter(path)
    log = bdflog.LogWriter(path, force=True)
    log.write(_record(0))
    log.close()
    assert len(bdflog.read_log(path)["Current / A"]) == 1


def test_sidecar_contents_and_events(tmp_path):
    path = tmp_path / "s.bdf.csv"
    log = bdflog.LogWriter(path, start_unix_s=123.0, meta={"board": "sim", "mass_mg": 2.0})
    log.event("fault", flags=4)
    log.close(stop_reason="end")
    meta = bdflog.read_sidecar(path)
    assert (tmp_path / "s.bdf.csv.json").is_file() and not (tmp_path / "s.json").exists()
    assert meta["board"] == "sim" and meta["mass_mg"] == 2.0
    assert meta["started_unix_s"] == 123.0 and meta["ended_unix_s"] >= 123.0
    assert meta["stop_reason"] == "end"
    assert [e["kind"] for e in meta["events"]] == ["fault"] and meta["events"][0]["flags"] == 4
    assert bdflog.read_sidecar(tmp_path / "none.bdf.csv") == {}


def test_reads_machine_names_and_parquet(tmp_path):
    df = pd.DataFrame({"test_time_second": [0.0, 1.0], "voltage_volt": [1.5, 1.6],
                       "current_ampere": [1e-4, 1e-4], "cycle_count": [1, 1],
                       "step_type": ["CC_CHG", "CC_CHG"]})
    df.to_csv(tmp_path / "m.csv", index=False)
    df.to_parquet(tmp_path / "m.bdf.parquet")
    for name in ("m.csv", "m.bdf.parquet"):
        got = bdflog.read_log(tmp_path / name)
        assert got["Voltage / V"].tolist() == [1.5, 1.6]
        assert got["Cycle Count / 1"].dtype == np.int64
        assert got["Step Type"].tolist() == ["CC_CHG", "CC_CHG"]


@pytest.mark.parametrize("text", ["", "Voltage / V,Current / A\n1,2\n", "Test Time / s,Voltage / V,Current / A\nx,1,2\n"])
def test_bad_logs_raise_input_error(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(InputError, match="log"):
        bdflog.read_log(path)


def test_missing_log_and_bad_sidecar(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        bdflog.read_log(tmp_path / "nope.bdf.csv")
    (tmp_path / "x.bdf.csv.json").write_text("[1, 2")
    with pytest.raises(InputError, match="sidecar"):
        bdflog.read_sidecar(tmp_path / "x.bdf.csv")
    (tmp_path / "y.bdf.csv.json").write_text(json.dumps([1]))
    with pytest.raises(InputError, match="sidecar"):
        bdflog.read_sidecar(tmp_path / "y.bdf.csv")


def test_a_protocol_named_like_the_log_is_neither_its_sidecar_nor_in_the_way(tmp_path):
    """X.json next to X.bdf.csv is the user's (a protocol): the log is written beside it,
    untouched, and is not read as the log's sidecar."""
    protocol = tmp_path / "x.json"
    protocol.write_text(json.dumps({"method": []}))
    with bdflog.LogWriter(tmp_path / "x.bdf.csv", meta={"board": "sim"}) as log:
        log.write(_record(0))
    assert json.loads(protocol.read_text()) == {"method": []}
    assert bdflog.read_sidecar(tmp_path / "x.bdf.csv")["board"] == "sim"
    (tmp_path / "x.bdf.csv.json").unlink()
    assert bdflog.read_sidecar(tmp_path / "x.bdf.csv") == {}


def test_an_older_log_keeps_its_sidecar_name_when_resumed(tmp_path):
    """Logs written before the sidecar was renamed have it at X.json: read there, and a
    resumed run goes on writing it there (one sidecar per log)."""
    path = tmp_path / "old.bdf.csv"
    _log(path, 2)
    (tmp_path / "old.bdf.csv.json").rename(tmp_path / "old.json")
    assert bdflog.read_sidecar(path)["events"] == []
    log = bdflog.LogWriter.reopen(path)
    log.write(_record(2))
    log.close(stop_reason="end")
    assert json.loads((tmp_path / "old.json").read_text())["rows"] == 3
    assert not (tmp_path / "old.bdf.csv.json").exists()


# ---------------------------------------------------------------- resume support


def _log(path, n, with_soc=False, with_ageing=False, **meta):
    with bdflog.LogWriter(path, with_soc=with_soc, with_ageing=with_ageing, start_unix_s=1000.0,
                          meta=meta, force=True) as log:  # force: hypothesis reuses tmp_path
        for k in range(n):
            log.write(_record(k))
    return path.read_bytes()


def test_seq_column_round_trips_and_records_without_seq_leave_it_empty(tmp_path):
    path = tmp_path / "q.bdf.csv"
    with bdflog.LogWriter(path) as log:
        log.write(_record(0))
        log.write({k: v for k, v in _record(1).items() if k != "seq"})
    got = bdflog.read_log(path)["Record Seq / 1"]
    assert got[0] == 1 and np.isnan(got[1])


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 40), cut=st.floats(0, 1), chunk=st.sampled_from([7, 64, 65536]))
def test_last_seq_reads_the_tail_like_a_full_read(tmp_path, n, cut, chunk):
    """last_seq / last_row agree with read_log on any truncation of a log (chunk sizes
    smaller than a row exercise the backwards scan)."""
    path = tmp_path / "t.bdf.csv"
    full = _log(path, n)
    header_end = full.index(b"\n") + 1
    at = header_end + int(cut * (len(full) - header_end))
    path.write_bytes(full[:at])
    old, bdflog.TAIL_CHUNK = bdflog.TAIL_CHUNK, chunk
    try:
        seq = bdflog.last_seq(path)
        row = bdflog.last_row(path)
    finally:
        bdflog.TAIL_CHUNK = old
    rows = full[:at].count(b"\n") - 1
    if rows == 0:
        assert seq is None and row is None
    else:
        assert seq == int(bdflog.read_log(path)["Record Seq / 1"][-1]) == rows  # seq = k + 1
        assert float(row["Test Time / s"]) == (rows - 1) * 1.0


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 12), cut=st.floats(0, 1),
       layout=st.sampled_from([(False, False), (True, False), (True, True)]))
def test_reopen_cuts_a_partial_line_and_appends_a_valid_log(tmp_path, n, cut, layout):
    """Whatever estimate columns the log has (a log from before the ageing columns has
    none of them), the resumed writer keeps them: the rows it appends are those an
    uninterrupted writer would have written, though the records now carry the estimates."""
    path = tmp_path / "r.bdf.csv"
    full = _log(path, n, *layout, board="sim")
    header_end = full.index(b"\n") + 1
    at = header_end + int(cut * (len(full) - header_end))
    path.write_bytes(full[:at])
    kept = full[:at].count(b"\n") - 1
    assert bdflog.appendable_layout(path) == layout
    log = bdflog.LogWriter.reopen(path)
    assert (log.with_soc, log.with_ageing) == layout and log.rows == kept and log.start_unix_s == 1000.0
    for k in range(kept, n):
        log.write(_record(k))
    log.close(stop_reason="end")
    assert path.read_bytes() == full  # exactly the log an uninterrupted writer leaves
    report = bdf.validate(pd.read_csv(path), raise_on_error=True)
    assert report["ok"] and report["time_stats"]["monotonic"]
    meta = bdflog.read_sidecar(path)
    assert meta["board"] == "sim" and meta["rows"] == n and meta["stop_reason"] == "end"


def test_reopen_refuses_foreign_or_headless_logs(tmp_path):
    path = tmp_path / "f.bdf.csv"
    path.write_text("Test Time / s,Voltage / V,Current / A\n0,1,0\n")
    with pytest.raises(InputError, match="resume: .*columns differ"):
        bdflog.LogWriter.reopen(path)
    path.write_bytes(b"Test Time / s,Volt")
    with pytest.raises(InputError, match="header"):
        bdflog.LogWriter.reopen(path)
    with pytest.raises(InputError, match="resume: no log"):
        bdflog.LogWriter.reopen(tmp_path / "none.bdf.csv")


def test_board_events_are_logged_once_by_seq(tmp_path):
    path = tmp_path / "e.bdf.csv"
    _log(path, 2)
    log = bdflog.LogWriter.reopen(path)
    log.event("FULL", seq=7, data=None)
    log.event("FULL", seq=7, data=None)  # fetched again after a resume
    log.event("resume", from_seq=3)
    log.event("resume", from_seq=8)     # host events have no seq: always kept
    log.close()
    kinds = [(e["kind"], e.get("seq")) for e in bdflog.read_sidecar(path)["events"]]
    assert kinds == [("FULL", 7), ("resume", None), ("resume", None)]


def test_analysis_reads_the_estimates_when_the_log_has_them(tmp_path):
    """analyze's Series carries the board's capacity and resistance estimates in Ah and
    ohm (NaN where a record had none), and None for a log without the columns."""
    from cellbench.analyze.series import prepare

    with_est, without = tmp_path / "a.bdf.csv", tmp_path / "b.bdf.csv"
    _log(with_est, 6, with_soc=True, with_ageing=True)
    _log(without, 6, with_soc=True)
    s = prepare(bdflog.read_log(with_est))
    recs = [_record(k) for k in range(6)]
    np.testing.assert_allclose(s.cap_est_Ah, [r["cap_nAh"] * 1e-9 for r in recs], rtol=1e-12)
    np.testing.assert_allclose(s.cap_est_std_Ah, [r["cap_std_nAh"] * 1e-9 for r in recs], rtol=1e-12)
    # record 0 has no resistance std (-1): its resistance counts as no estimate
    assert np.isnan(s.r_est_ohm[0]) and np.isnan(s.r_est_std_ohm[0])
    np.testing.assert_allclose(s.r_est_ohm[1:], [r["r_mohm"] * 1e-3 for r in recs[1:]], rtol=1e-12)
    plain = prepare(bdflog.read_log(without))
    assert plain.cap_est_Ah is None and plain.r_est_ohm is None and plain.soc is not None
