"""Figures: checked through the matplotlib objects (labels, series, data ranges)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from cellbench.analyze import analyze_log, figures
from cellbench.analyze.synthetic import PlateauCell, make_log

CAP_AH = 0.35e-3
MASS_MG = 2.0


@pytest.fixture(scope="module")
def rate_result():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,), r0_ohm=60.0)
    cycles = []
    for rate, depth in ((0.2, 0.9), (1.0, 0.7), (0.2, 0.8)):
        i_A, t_s = rate * CAP_AH, depth * 3600 / rate
        cycles += [{"i_dch_A": i_A, "t_dch_s": t_s, "i_chg_A": i_A, "t_chg_s": t_s}] * 2
    log, truth = make_log(cell, cycles, dt_s=10.0, z0=0.95, columns=("cycle", "capacity", "soc"))
    return analyze_log(log, mass_mg=MASS_MG, capacity_mAh=0.35, mode="half", figures=False), truth


def test_voltage_capacity_lines_per_branch_and_range(rate_result):
    r, truth = rate_result
    fig = figures.plot_voltage_capacity(r, [1, 6])
    ax = fig.axes[0]
    assert ax.get_xlabel() == "capacity / mAh/g" and ax.get_ylabel() == "voltage / V"
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["cycle 1 charge", "cycle 1 discharge",
                                                "cycle 6 charge", "cycle 6 discharge"]
    # Each branch runs from 0 to the cycle's specific capacity (truth / mass).
    x_end = [ln.get_xdata()[-1] for ln in lines]
    expect = [1e3 * truth[k][c - 1] / (MASS_MG / 1e3) for c in (1, 6) for k in ("q_chg_Ah", "q_dch_Ah")]
    np.testing.assert_allclose(x_end, expect, rtol=1e-3)
    assert all(ln.get_xdata()[0] == 0 for ln in lines)
    assert all(1.0 <= y <= 2.5 for ln in lines for y in (min(ln.get_ydata()), max(ln.get_ydata())))


def test_rate_capability_one_series_per_block(rate_result):
    r, truth = rate_result
    ax = figures.plot_rate_capability(r).axes[0]
    lines = ax.get_lines()
    assert [len(ln.get_xdata()) for ln in lines] == [2, 2, 2]
    # one colour and one legend entry per rate: the returning 0.2C block shares the first's
    assert [ln.get_color() for ln in lines] == ["C0", "C1", "C0"]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["0.2C", "1C"]
    fig = ax.figure
    fig.canvas.draw()
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.x0 >= axes_box.x1            # beside the axes, not over the data
    y = np.concatenate([ln.get_ydata() for ln in lines])
    np.testing.assert_allclose(y, 1e3 * truth["q_dch_Ah"] / (MASS_MG / 1e3), rtol=1e-3)
    assert ax.get_ylabel() == "discharge capacity / mAh/g"


def test_cycling_capacity_and_ce_on_twin_axes(rate_result):
    r, _ = rate_result
    fig = figures.plot_cycling(r)
    ax, ax2 = fig.axes
    assert len(ax.get_lines()) == 2 and len(ax2.get_lines()) == 1
    assert ax.get_xlabel() == "cycle" and "coulombic efficiency" in ax2.get_ylabel()
    ce = ax2.get_lines()[0].get_ydata()
    np.testing.assert_allclose(ce, 100.0, atol=0.1)
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5, 6]


def test_dqdv_one_line_per_curve(rate_result):
    r, _ = rate_result
    ax = figures.plot_dqdv(r).axes[0]
    assert len(ax.get_lines()) == len(r.dqdv) > 0
    assert ax.get_xlabel() == "voltage / V" and "mAh/(g V)" in ax.get_ylabel()
    for ln in ax.get_lines():
        x, y = ln.get_xdata(), ln.get_ydata()
        assert 1.0 <= x.min() and x.max() <= 2.5
        assert 1.45 < x[np.argmax(y)] < 1.65  # the plateau
    colour = {}
    for c, ln in zip(r.dqdv, ax.get_lines()):       # a cycle's two branches share a colour
        assert colour.setdefault(c["cycle"], ln.get_color()) == ln.get_color()
    assert len(set(colour.values())) == len(colour)


def test_resistance_per_cycle(rate_result):
    r, _ = rate_result
    ax = figures.plot_resistance(r).axes[0]
    (line,) = ax.get_lines()
    assert ax.get_ylabel() == "DC resistance / ohm"
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(line.get_ydata(), 60.0, rtol=1e-9)  # the cell's R0


def test_soc_band_and_coulomb_count(rate_result):
    r, _ = rate_result
    fig = figures.plot_soc(r)
    ax = fig.axes[0]
    est, counted = ax.get_lines()
    assert est.get_label() == "estimated SoC" and counted.get_label() == "coulomb-counted SoC"
    assert len(ax.collections) == 1  # the +-1 sigma band
    # The log's "estimate" is the true SoC, so coulomb counting from it reproduces it.
    np.testing.assert_allclose(counted.get_ydata(), est.get_ydata(), atol=1e-6)
    assert 0.0 <= min(est.get_ydata()) and max(est.get_ydata()) <= 1.0


def test_no_soc_figure_without_estimator():
    cell = PlateauCell(CAP_AH, plateaus_V=(1.55,), weights=(0.9,))
    cyc = [{"i_dch_A": 0.07e-3, "t_dch_s": 9000.0, "i_chg_A": 0.07e-3, "t_chg_s": 9000.0}]
    log, _ = make_log(cell, cyc, z0=0.95)
    r = analyze_log(log, mass_mg=MASS_MG, mode="half", figures=False)
    assert figures.plot_soc(r) is None


def test_save_figures_writes_pngs(rate_result, tmp_path):
    r, _ = rate_result
    paths = figures.save_figures(r, tmp_path, plot_cycles=[1, 2])
    assert sorted(p.name for p in paths) == ["cycling.png", "dqdv.png", "rate_capability.png",
                                            "resistance.png", "soc.png", "voltage_capacity.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rate_labels_are_readable():
    from cellbench.analyze.rates import rate_label
    assert rate_label(3000.0, "mA") == "3 A" and rate_label(1500.0, "mA") == "1.5 A"
    assert rate_label(0.35, "mA") == "0.35 mA" and rate_label(175.0, "mA/g") == "175 mA/g"
    assert rate_label(0.2, "C") == "0.2C" and rate_label(10.0, "C") == "10C"
    assert rate_label(12345.0, "mA/g") == "12300 mA/g"
    assert all("e+" not in rate_label(x, u) for x in (1e-4, 0.5, 3e3, 4e5) for u in ("mA", "mA/g", "C"))


def test_cycling_plot_keeps_every_point_inside_the_axes(rate_result):
    r, _ = rate_result
    ax = figures.plot_cycling(r).axes[0]
    top = max(max(ln.get_ydata()) for ln in ax.get_lines())
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] > top * 1.02
    ax2 = ax.figure.axes[1]
    ce = ax2.get_lines()[0].get_ydata()
    ce = ce[np.isfinite(ce)]
    lo, hi = ax2.get_ylim()
    span = hi - lo
    assert lo < ce.min() - 0.02 * span and ce.max() + 0.02 * span < hi
