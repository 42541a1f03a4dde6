"""cellbench analyze: per-cycle table, rate blocks and resistance against a cell with known truth.

The synthetic cell (cellbench.analyze.synthetic) runs time-limited constant-current steps,
so each cycle's charge is exactly |I| * duration, computed from the plan, not from the log.
"""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellbench import cli
from cellbench.analyze import analyze_log, format_rate_table
from cellbench.analyze.series import derive_cycles
from cellbench.analyze.synthetic import PlateauCell, make_log
from cellbench.errors import InputError

CAP_AH = 0.35e-3  # 2 mg of LTO at 175 mAh/g
MASS_MG = 2.0


def lto_cell(**kw):
    return PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,), **kw)


def plan(n, i_dch_A=0.07e-3, i_chg_A=0.07e-3, t_dch_s=15000.0, ce=0.98):
    """n cycles at one rate; the charge returns ce of the discharge (by time)."""
    return [{"i_dch_A": i_dch_A, "t_dch_s": t_dch_s, "i_chg_A": i_chg_A,
             "t_chg_s": ce * t_dch_s * i_dch_A / i_chg_A}] * n


cycle_plans = st.lists(
    st.fixed_dictionaries({
        "i_dch_A": st.floats(0.02e-3, 1.0e-3), "t_dch_s": st.floats(300.0, 6000.0),
        "i_chg_A": st.floats(0.02e-3, 1.0e-3), "t_chg_s": st.floats(300.0, 6000.0)}),
    min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cycles=cycle_plans, mode=st.sampled_from(["half", "full"]),
       columns=st.sampled_from([("cycle", "step", "capacity"), ()]),
       dt_s=st.floats(1.0, 120.0), rest_s=st.sampled_from([0.0, 600.0]))
def test_capacities_and_ce_match_truth(cycles, mode, columns, dt_s, rest_s):
    # Charge and discharge move at most 0.6 of the capacity from the middle: z stays in range.
    # The plan ends by repeating its last cycle, as a protocol's loop does: whether a log's
    # last half finished is judged against the half before it (cycles._complete).
    cycles = cycles + [cycles[-1]]
    log, truth = make_log(lto_cell(), cycles, mode=mode, dt_s=dt_s, rest_s=rest_s, z0=0.5, columns=columns)
    r = analyze_log(log, mass_mg=MASS_MG, mode=mode, figures=False)
    t = r.table
    assert t["cycle"].tolist() == truth["cycle"].tolist()
    np.testing.assert_allclose(t["q_chg_mAh"], 1e3 * truth["q_chg_Ah"], rtol=1e-3)
    np.testing.assert_allclose(t["q_dch_mAh"], 1e3 * truth["q_dch_Ah"], rtol=1e-3)
    np.testing.assert_allclose(t["q_dch_mAh_g"], 1e3 * truth["q_dch_Ah"] / (MASS_MG / 1e3), rtol=1e-3)
    expect = truth["q_chg_Ah"] / truth["q_dch_Ah"] if mode == "half" else truth["q_dch_Ah"] / truth["q_chg_Ah"]
    np.testing.assert_allclose(t["ce_pct"], 100 * expect, atol=0.1)


def test_energy_and_mean_voltage_match_quadrature():
    cell = lto_cell(r0_ohm=80.0, rc=(40.0, 30.0))
    log, truth = make_log(cell, plan(3), dt_s=5.0, z0=0.95)
    t = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False).table
    np.testing.assert_allclose(t["e_dch_mWh"], 1e3 * truth["e_dch_Wh"], rtol=1e-3)
    np.testing.assert_allclose(t["e_chg_mWh"], 1e3 * truth["e_chg_Wh"], rtol=1e-3)
    np.testing.assert_allclose(t["v_dch_mean_V"], truth["e_dch_Wh"] / truth["q_dch_Ah"], rtol=1e-3)
    np.testing.assert_allclose(t["ee_pct"], 100 * truth["e_dch_Wh"] / truth["e_chg_Wh"], atol=0.1)
    # The plateau sits at 1.55 V; the IR drop moves the discharge mean below it.
    assert np.all(t["v_dch_mean_V"] < 1.55) and np.all(t["v_chg_mean_V"] > 1.55)


def test_retention_rate_and_ref_cycle():
    cycles = plan(2, t_dch_s=15000.0) + plan(2, t_dch_s=12000.0)
    log, truth = make_log(lto_cell(), cycles, z0=0.95)
    r = analyze_log(log, mass_mg=MASS_MG, capacity_mAh=0.35, ref_cycle=3, mode="half", figures=False)
    t = r.table
    q = truth["q_dch_Ah"]
    np.testing.assert_allclose(t["retention_first_pct"], 100 * q / q[0], atol=0.1)
    np.testing.assert_allclose(t["retention_ref_pct"], 100 * q / q[2], atol=0.1)
    np.testing.assert_allclose(t["i_dch_median_mA"], 0.07, rtol=1e-9)
    np.testing.assert_allclose(t["c_rate"], 0.2, rtol=1e-9)
    np.testing.assert_allclose(t["current_density_mA_g"], 35.0, rtol=1e-9)
    assert r.summary["ref_cycle"] == 3


def test_derived_cycles_follow_first_step_sign():
    # Discharge first (half cell): rest, -, 0, +, -, +, 0, - : cycles 1 1 1 1 2 2 2 3
    sign = np.array([0, -1, 0, 1, -1, 1, 0, -1], dtype=np.int8)
    assert derive_cycles(sign).tolist() == [1, 1, 1, 1, 2, 2, 2, 3]
    assert derive_cycles(-sign).tolist() == [1, 1, 1, 1, 2, 2, 2, 3]


def test_half_and_full_conventions_in_summary():
    log, _ = make_log(lto_cell(), plan(2), z0=0.95)
    half = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    conv = half.summary["conventions"]
    assert "discharge" in conv["lithiation"] and "charge" in conv["delithiation"]
    assert conv["coulombic_efficiency"].startswith("charge / discharge")
    np.testing.assert_allclose(half.table["ce_pct"], 98.0, atol=0.1)
    full = analyze_log(log, mass_mg=MASS_MG, mode="full", figures=False)
    # a full cell's cycle is charge then discharge: the log's first discharge is cycle 0
    assert full.table["cycle"].tolist() == [0, 1, 2] and np.isnan(full.table["ce_pct"][0])
    assert "re-paired" in full.summary["conventions"]["cycle_pairing"]
    ce = full.table["ce_pct"][1:]
    assert np.isfinite(ce[0]) and 95.0 < ce[0] < 105.0


def test_cell_kind_from_the_data():
    """Discharge first and down to 0.1 V: an anode vs Li (half). Discharge first at 1-2.5 V
    without a sidecar: nothing says Li metal, so the full-cell convention (the pre-charged
    commercial cell case), with the reason stated."""
    graphite = PlateauCell(3.5e-4, plateaus_V=(0.1, 0.2), weights=(0.5, 0.4), window_V=(0.01, 1.5))
    log, _ = make_log(graphite, plan(2), z0=0.95)
    r = analyze_log(log, figures=False)
    assert r.mode == "half" and "anode vs Li" in r.summary["conventions"]["mode_source"]
    log, _ = make_log(lto_cell(), plan(2), z0=0.95)
    r = analyze_log(log, figures=False)
    assert r.mode == "full" and "not an anode vs Li" in r.summary["conventions"]["mode_source"]


def paper_like_rate_plan():
    """LTO rate test: 3 cycles per rate, the capacity a rate reaches falls with rate and
    the returning 0.2C block is at 84 % of the first (the paper's numbers, scaled)."""
    depth = {0.2: 0.9, 0.5: 0.8, 1.0: 0.7, 3.0: 0.45, 5.0: 0.3}
    blocks = [(0.2, 0.9), (0.5, 0.8), (1.0, 0.7), (3.0, 0.45), (5.0, 0.3), (0.2, 0.9 * 0.84)]
    cycles = []
    for rate, d in blocks:
        i_A, t_s = rate * CAP_AH, d * 3600.0 / rate
        cycles += [{"i_dch_A": i_A, "t_dch_s": t_s, "i_chg_A": i_A, "t_chg_s": t_s}] * 3
    return blocks, cycles, depth


def test_rate_blocks_found_with_recovery():
    blocks, cycles, _ = paper_like_rate_plan()
    log, truth = make_log(lto_cell(), cycles, dt_s=5.0, z0=0.95, columns=())
    r = analyze_log(log, mass_mg=MASS_MG, capacity_mAh=0.35, mode="half", figures=False)
    got = r.rate_blocks
    assert [round(b["rate"], 6) for b in got] == [b[0] for b in blocks]
    assert [(b["first_cycle"], b["last_cycle"]) for b in got] == [(3 * k + 1, 3 * k + 3) for k in range(6)]
    for b, (rate, d) in zip(got, blocks):
        assert b["mean_q_dch"] == pytest.approx(d * 175.0, rel=1e-3)  # 0.35 mAh / 2 mg = 175 mAh/g
        assert b["q_unit"] == "mAh/g" and b["rate_unit"] == "C"
    assert got[-1]["pct_of_first"] == pytest.approx(84.0, abs=0.1)
    assert all(b["pct_of_first"] == 100.0 for b in got[:-1])
    text = format_rate_table(r)
    lines = text.splitlines()
    assert len(lines) == 7 and lines[0].split()[:2] == ["rate", "cycles"]
    assert lines[-1].split() == ["0.2C", "16-18", f"{0.9 * 0.84 * 175:.1f}", "84.0"]


def test_rate_blocks_without_capacity_use_current_density():
    _, cycles, _ = paper_like_rate_plan()
    log, _ = make_log(lto_cell(), cycles, dt_s=20.0, z0=0.95)
    r = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    assert {b["rate_unit"] for b in r.rate_blocks} == {"mA/g"}
    assert r.rate_blocks[0]["rate"] == pytest.approx(0.2 * 175, rel=1e-9)


def test_resistance_exact_when_edges_recorded_at_the_step():
    log, _ = make_log(lto_cell(r0_ohm=123.0), plan(3), dt_s=10.0, rest_s=300.0, z0=0.95)
    r = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    np.testing.assert_allclose(r.table["r_dc_ohm"], 123.0, rtol=1e-9)
    assert np.all(r.table["r_edges"] >= 3)


def test_resistance_growth_over_cycles_shows():
    r0 = [33.0, 40.0, 58.0, 90.0]
    cycles = [dict(c, r0_ohm=r) for c, r in zip(plan(4), r0)]
    log, _ = make_log(lto_cell(), cycles, dt_s=30.0, rest_s=60.0, z0=0.95, columns=())
    r = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    # Every edge goes from or to a rest (zero current, so no IR drop) and is recorded at
    # the instant of the step: |dV/dI| is the R0 of the cycle the new step belongs to.
    np.testing.assert_allclose(r.table["r_dc_ohm"], r0, rtol=1e-9)
    assert r.summary["resistance"]["first_ohm"] == pytest.approx(33.0)
    assert r.summary["resistance"]["last_ohm"] == pytest.approx(90.0)


@pytest.mark.parametrize("delay_s", [1.0, 10.0])
def test_resistance_within_sampling_error(delay_s):
    # With an RC pair the record after the edge already holds part of its polarisation:
    # the bound is R1 * (1 - exp(-delay/tau1)) times the worst jump ratio, plus OCV motion.
    r0, r1, tau1, i_A = 60.0, 40.0, 200.0, 0.07e-3
    log, _ = make_log(lto_cell(r0_ohm=r0, rc=(r1, tau1)), plan(3, i_dch_A=i_A, i_chg_A=i_A),
                      dt_s=10.0, rest_s=1200.0, z0=0.95, delay_s=delay_s)
    r = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    bound = 2 * r1 * (1 - np.exp(-delay_s / tau1)) + 0.002 / i_A
    assert np.all(np.abs(r.table["r_dc_ohm"] - r0) <= bound)
    assert np.all(r.edges["dt_s"] == pytest.approx(delay_s))


def test_bad_inputs_raise_input_error():
    log, _ = make_log(lto_cell(), plan(2), z0=0.95)
    with pytest.raises(InputError, match="mass_mg"):
        analyze_log(log, mass_mg=-1, figures=False)
    with pytest.raises(InputError, match="ref_cycle"):
        analyze_log(log, ref_cycle=9, figures=False)
    with pytest.raises(InputError, match="mode"):
        analyze_log(log, mode="anode", figures=False)
    bad = dict(log)
    bad["Test Time / s"] = bad["Test Time / s"][::-1].copy()
    with pytest.raises(InputError, match="Test Time"):
        analyze_log(bad, figures=False)
    with pytest.raises(InputError, match="Voltage"):
        analyze_log({k: v for k, v in log.items() if k != "Voltage / V"}, figures=False)


def write_csv(log, path, sidecar=None):
    pd.DataFrame(log).to_csv(path, index=False)
    if sidecar is not None:
        path.with_name(path.name.split(".")[0] + ".json").write_text(json.dumps(sidecar))


def test_cli_writes_tables_from_a_logged_run(tmp_path, capsys):
    log, truth = make_log(lto_cell(), plan(3), z0=0.95, columns=("cycle", "step", "capacity"))
    path = tmp_path / "run.bdf.csv"
    write_csv(log, path, sidecar={"mass_mg": 2.0, "protocol": {"sample": {"capacity_mAh": 0.35}},
                                  "model": {"cell": {"chemistry": "LTO/Li"}}})
    out = tmp_path / "out"
    assert cli.main(["analyze", str(path), "--out", str(out), "--no-figures"]) == 0
    table = pd.read_csv(out / "cycles.csv")
    np.testing.assert_allclose(table["q_dch_mAh_g"], 1e3 * truth["q_dch_Ah"] / 2e-3, rtol=1e-3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mass_mg"] == 2.0 and summary["mass_source"] == "sidecar mass_mg"
    assert summary["cycles"] == 3 and summary["conventions"]["mode"] == "half"
    assert "0.2C" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["cycles.csv", "dqdv.csv", "edges.csv", "rates.txt",
                                                     "relaxations.csv", "summary.json"]
    assert summary["files"] == ["cycles.csv", "rates.txt", "dqdv.csv", "edges.csv", "relaxations.csv"]


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage\xff\n", b"a,b\n1,2\n"])
def test_cli_unreadable_log_exits_2_with_one_line(tmp_path, capsys, content):
    path = tmp_path / "bad.bdf.csv"
    path.write_bytes(content)
    assert cli.main(["analyze", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cellbench: error: ") and err.count("\n") == 1


def test_cli_missing_log_exits_2(tmp_path, capsys):
    assert cli.main(["analyze", str(tmp_path / "nope.bdf.csv")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_rate_table_against_the_paper():
    from cellbench.analyze import PAPER_RATES

    lto = PAPER_RATES["LTO/Li"]
    blocks = [{"rate": r, "rate_unit": "C", "first_cycle": 5 * k + 1, "last_cycle": 5 * k + 5, "n_cycles": 5,
               "mean_q_dch": 1.05 * q, "q_unit": "mAh/g", "pct_of_first": 100.0}
              for k, (r, q) in enumerate(lto["blocks"])]
    lines = format_rate_table(blocks, lto).splitlines()
    assert lines[0].endswith("paper  diff %")
    # Every block matched in order, the returning 0.2C block with the paper's 177 mAh/g.
    assert [ln.split()[-1] for ln in lines[1:]] == ["+5.0"] * 7
    assert lines[-1].split()[-2] == "177.0"
    # A table in other units gets no paper column values.
    other = [dict(b, rate_unit="mA/g") for b in blocks]
    with_ref = format_rate_table(other, lto).splitlines()[1:]
    without = format_rate_table(other).splitlines()[1:]
    assert [ln.split() for ln in with_ref] == [ln.split() for ln in without]


def test_bench_log_written_by_logwriter(tmp_path):
    """A log as the bench writes it (integer records through bdflog.LogWriter, SOC empty
    until the estimator starts) analyses to the same truth."""
    from cellbench.bdflog import LogWriter

    log, truth = make_log(lto_cell(), plan(3), dt_s=20.0, z0=0.95, columns=("cycle", "step", "capacity", "soc"))
    n = len(log["Test Time / s"])
    path = tmp_path / "bench.bdf.csv"
    with LogWriter(path, with_soc=True, start_unix_s=0.0, meta={"mass_mg": 2.0}) as w:
        for k in range(n):
            i_nA = round(log["Current / A"][k] * 1e9)
            w.write({"t_ms": round(log["Test Time / s"][k] * 1e3), "v_uV": round(log["Voltage / V"][k] * 1e6),
                     "i_nA": i_nA, "cycle": int(log["Cycle Count / 1"][k]), "step_count": int(log["Step Count / 1"][k]),
                     "step_index": 0, "step_type": 1 if i_nA > 0 else 2 if i_nA < 0 else 0, "fault": 0,
                     "q_chg_nAh": round(log["Charging Capacity / Ah"][k] * 1e9),
                     "q_dch_nAh": round(log["Discharging Capacity / Ah"][k] * 1e9), "q_step_nAh": 0,
                     "e_chg_uWh": 0, "e_dch_uWh": 0,
                     "soc_ppm": -1 if k < 10 else round(log["SOC / 1"][k] * 1e6), "soc_std_ppm": 10_000})
    r = analyze_log(path, mode="half", capacity_mAh=0.35, out_dir=tmp_path / "out")
    assert r.mass_g == pytest.approx(2e-3)
    np.testing.assert_allclose(r.table["q_dch_mAh"], 1e3 * truth["q_dch_Ah"], rtol=1e-3)
    np.testing.assert_allclose(r.table["ce_pct"], 98.0, atol=0.1)
    assert np.isnan(r.series.soc[:10]).all() and np.isfinite(r.series.soc[10:]).all()
    assert (tmp_path / "out" / "soc.png").is_file()
    # The energy columns were left at 0: ignored for the integrated energy, with a note.
    assert r.series.sources["energy"].startswith("integrated") and r.series.sources["capacity"] == "log"
    assert any("Charging Energy" in note for note in r.summary["log"]["notes"])
    assert np.all(r.table["e_dch_mWh"] > 0)


def ecm_model():
    """An LTO-like model for cellbench.ecm: sloped OCV around a 1.55 V plateau, R0 60 ohm."""
    from cellbench.model import load_model

    soc = np.linspace(0, 1, 21)
    v = 1.55 + 2.4 * (soc - 0.5) ** 3 + 0.02 * (soc - 0.5)
    v[0], v[-1] = 1.2, 2.2
    return load_model({"schema_version": 1, "cell": {"name": "t", "chemistry": "LTO/Li", "active_mass_g": 0.002},
                       "capacity_Ah": CAP_AH, "window_V": [1.25, 2.1],
                       "ocv": {"soc": soc.tolist(), "voltage_V": v.tolist()},
                       "r0_ohm": 60.0, "rc": [{"r_ohm": 40.0, "tau_s": 20.0}], "coulombic_efficiency": 0.99,
                       "provenance": {"source": "test", "fit_rmse_V": None, "created": "2026-11-25"}})


def test_ecm_rate_test_analysed_to_model_truth():
    """Cross-check with the model helper's simulator: ecm.rate_test finds each CC step's
    cutoff exactly; the same currents replayed through ecm.simulate make the log."""
    from cellbench import ecm

    model = ecm_model()
    currents = [0.2 * CAP_AH, 1.0 * CAP_AH]
    truth = ecm.rate_test(model, currents, cycles_per_rate=3, soc0=1.0)
    t, i, t0 = [], [], 0.0
    for i_A, q_dch, q_chg in zip(truth["i_A"], truth["q_dch_Ah"], truth["q_chg_Ah"]):
        for cur, q in ((-i_A, q_dch), (i_A, q_chg)):
            dur = 3600.0 * q / i_A
            ts = np.append(t0 + np.arange(0.0, dur, 7.0), t0 + dur)
            t.append(ts)
            i.append(np.full(len(ts), cur))
            t0 += dur
    t, i = np.concatenate(t), np.concatenate(i)
    v = ecm.simulate(model, t, i, soc0=1.0)["v_V"]
    r = analyze_log({"Test Time / s": t, "Voltage / V": v, "Current / A": i}, mass_mg=MASS_MG, mode="half",
                    capacity_mAh=1e3 * CAP_AH, figures=False)
    np.testing.assert_allclose(r.table["q_dch_mAh"], 1e3 * truth["q_dch_Ah"], rtol=1e-3)
    np.testing.assert_allclose(r.table["q_chg_mAh"], 1e3 * truth["q_chg_Ah"], rtol=1e-3)
    np.testing.assert_allclose(r.table["ce_pct"], 100 * truth["q_chg_Ah"] / truth["q_dch_Ah"], atol=0.1)
    assert [(round(b["rate"], 6), b["first_cycle"], b["last_cycle"]) for b in r.rate_blocks] == [(0.2, 1, 3), (1.0, 4, 6)]
    # Edges recorded at the instant of the step: |dV/dI| is R0 exactly (RC state is continuous).
    np.testing.assert_allclose(r.table["r_dc_ohm"], 60.0, rtol=1e-6)
    # Mean voltages straddle the OCV plateau by about the IR drop.
    assert np.all(r.table["v_chg_mean_V"] > r.table["v_dch_mean_V"])


def test_mode_from_sidecar_chemistry_beats_first_step_sign():
    log, _ = make_log(lto_cell(), plan(2), mode="full", z0=0.05)  # charge first
    assert analyze_log(log, figures=False).mode == "full"
    r = analyze_log(log, figures=False, sidecar={"model": {"cell": {"chemistry": "Gr/Li"}}})
    assert r.mode == "half" and "Gr/Li" in r.summary["conventions"]["mode_source"]


def test_rate_unit_chosen_and_checked(tmp_path, capsys):
    _, cycles, _ = paper_like_rate_plan()
    log, _ = make_log(lto_cell(), cycles, dt_s=20.0, z0=0.95)
    r = analyze_log(log, mass_mg=MASS_MG, capacity_mAh=0.35, rate_unit="mA/g", figures=False)
    assert [b["rate_unit"] for b in r.rate_blocks] == ["mA/g"] * 6
    assert r.rate_blocks[1]["rate"] == pytest.approx(0.5 * 175, rel=1e-9)
    with pytest.raises(InputError, match="rate_unit"):
        analyze_log(log, mass_mg=MASS_MG, rate_unit="C", figures=False)  # no capacity for 1C
    path = tmp_path / "run.csv"
    write_csv(log, path)
    assert cli.main(["analyze", str(path), "--dqdv-cycles", "1,x", "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == "cellbench: error: dqdv_cycles: expected comma-separated cycle numbers, not '1,x'\n"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-1e3, 1e3)), min_size=1, max_size=60))
def test_group_median_matches_numpy(pairs):
    from cellbench.analyze.groups import group_median

    g = np.array([p[0] for p in pairs])
    x = np.array([p[1] for p in pairs])
    got = group_median(x, g, 6)
    for k in range(6):
        if (g == k).any():
            assert got[k] == pytest.approx(np.median(x[g == k]), rel=1e-12, abs=1e-12)
        else:
            assert np.isnan(got[k])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 100.0), st.floats(-1e-3, 1e-3)), min_size=2, max_size=50))
def test_trapezoid_split_sums_to_the_net_integral(points):
    from cellbench.analyze.series import trapezoid_split

    t = np.cumsum([p[0] for p in points])
    i = np.array([p[1] for p in points])
    pos, neg = trapezoid_split(t, i, i)
    assert pos[-1] - neg[-1] == pytest.approx(np.trapezoid(i, t), rel=1e-9, abs=1e-15)
    assert np.all(np.diff(pos) >= 0) and np.all(np.diff(neg) >= 0)


def test_cell_kind_from_the_protocol_sample_name():
    log, _ = make_log(lto_cell(), plan(2), z0=0.95)
    r = analyze_log(log, figures=False, sidecar={"protocol": {"sample": {"name": "LTO/Li rate test"}}})
    assert r.mode == "half" and "protocol sample name" in r.summary["conventions"]["mode_source"]
    assert r.table["cycle"].tolist() == [1, 2]


def test_closed_pipe_ends_quietly(tmp_path):
    """``cellbench analyze LOG --no-figures | head -1``: no BrokenPipeError traceback."""
    import subprocess
    import sys

    log, _ = make_log(lto_cell(), plan(3), z0=0.95)
    path = tmp_path / "run.bdf.csv"
    write_csv(log, path)
    code = ("import sys; from cellbench import cli; "
            f"sys.exit(cli.main(['analyze', {str(path)!r}, '--no-figures', '--mode', 'half', "
            f"'--out', {str(tmp_path / 'o')!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()                     # the reader goes away before anything is read
    err = proc.stderr.read().decode()
    assert proc.wait() == 0 and "Traceback" not in err and "BrokenPipe" not in err


def test_a_last_cycle_cut_mid_half_gets_no_ce():
    log, _ = make_log(lto_cell(), plan(3), z0=0.95, columns=())
    whole = analyze_log(log, mode="half", figures=False).table["ce_pct"]
    assert np.all(np.isfinite(whole))
    # stop the log 40 % into the last charge: that cycle's CE would be about 40 %
    i = log["Current / A"]
    last_chg = np.flatnonzero(i > 0)
    last_chg = last_chg[last_chg > np.flatnonzero(i < 0)[-1]]
    cut = last_chg[int(0.4 * len(last_chg))]
    short = {k: v[:cut] for k, v in log.items()}
    ce = analyze_log(short, mode="half", figures=False).table["ce_pct"]
    assert np.all(np.isfinite(ce[:-1])) and np.isnan(ce[-1])


def test_impedance_and_rest_records_are_not_discharges():
    """An EIS sequence with a non-zero mean current, then a real discharge: only the
    discharge counts."""
    t = np.arange(200.0)
    i = np.where(t < 100, -0.1, -1e-3)
    kind = np.where(t < 100, "EIS", "CC_DCH")
    r = analyze_log({"Test Time / s": t, "Voltage / V": np.full(t.size, 3.6), "Current / A": i,
                     "Step Type": kind}, mode="full", figures=False)
    # 100 discharge records 1 s apart: 99 s inside the step and half the edge interval
    assert r.table["q_dch_mAh"].sum() == pytest.approx(1e-3 * 99.5 / 3600 * 1e3, rel=1e-6)
