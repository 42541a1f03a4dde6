"""The model's own error: held-out voltage residuals as a table over SoC and C-rate.

The residuals come from :func:`cellbench.fit.refine.solve` (each fold predicted by the
coefficients fitted on the others, states running through the whole log). Each row goes
to its nearest (SoC, C-rate) knot; a cell's sigma is the weighted RMS of its residuals
less the measurement noise (the filter adds its own voltage noise; counting it twice
would make the band too wide). Cells with too few samples take the value of the
nearest populated C-rate below them in their SoC row (the error grows with current, so
the table is made non-decreasing in C-rate), rows with none that of the nearest
populated SoC row; beyond the highest C-rate the data reached, sigma grows in
proportion to the C-rate (nothing seen there: assume the worst that is still smooth).
Held-out residuals of one current direction say nothing of the other: a model fitted on
a discharge alone (its OCV that branch less an IR drop) may be off on a charge by as much
as the whole polarisation it predicts (the other branch lies across the OCV). The table
has no sign, so when the rows under current all go one way, sigma under current is at
least that polarisation, C-rate x capacity x the model's steady resistance (R0 plus the
RC pairs'): the band stays honest on the branch never seen, at the cost of a wider one on
the branch seen. When no low-rate full sweep could be held out (the OCV needed them all),
no residual tests a sweep as a whole: a sweep's offset in SoC (a first charge after a long
rest, an efficiency that differs from cycle to cycle) hides in the fit's own SoC, and the
per-knot residuals of the sweeps' C-rate claim a fraction of a millivolt. Under current
sigma then claims no less than the blocks' overall held-out RMS (``floor_V``).
Units: V, C-rate = |i| / (capacity_Ah * 1/h).

Which current indexes the table (measured on the PyBaMM cells, docs/estimator.md): the
model's error lives in its states, not in the present current. After a sustained load
the cell relaxes differently from the model, so a rest right after 1-2C inherits the
load's error (NMC811 drive-b: 3.7 mV at rest at 40 % SoC, where the characterisation
log's rests, mostly relaxed or after 10 s pulses, measure the noise alone; LFP drive-b:
15-20 mV at rest after a 0.9C charge at 70 %, where the rest column holds 1.4 mV). A table
looked up at the present current cannot say so. :func:`look_current_A` is the current
that built the polarisation: |i| now, or the recent current decayed with the model's
slowest time constant if larger. Binned by it (``look_A``), the rows right after a load
count at the load's C-rate and the rest column holds relaxed rests only; the filter must
then look the table up at the same current (firmware/ekf.py does not yet, so the fit
still bins by the present current).
"""

import numpy as np

SOC_KNOTS = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
C_KNOTS = np.array([0.0, 0.1, 0.5, 1.0, 2.0])
MIN_WEIGHT = 20.0            # samples (thinning weights) a cell needs to stand on its own
MIN_SPAN = 0.2               # SoC a current direction's rows must span to count as seen


def voltage_noise_V(logs: list) -> float:
    """Sample-to-sample voltage noise (V): robust std of the differences during rests."""
    values = []
    for log in logs:
        rest = np.zeros(log.t_s.size, dtype=bool)
        for step in log.steps:
            if step.sign == 0:
                rest[step.start + 1:step.stop] = True
        d = np.diff(log.v_V)[rest[1:]]
        if d.size > 10:
            values.append(1.4826 * float(np.median(np.abs(d - np.median(d)))) / np.sqrt(2.0))
    return float(np.median(values)) if values else 0.0


def look_current_A(t_s: np.ndarray, i_A: np.ndarray, tau_s: float) -> np.ndarray:
    """Per sample, the current the model's error follows (A, >= 0): the largest of
    |i_j| * exp(-(t_k - t_j) / ``tau_s``) over samples j <= k, i.e. |i| now, or an earlier
    larger current decayed with the model's slowest time constant ``tau_s`` (s; <= 0:
    |i| itself). The recursion m_k = max(|i_k|, m_(k-1) * exp(-dt/tau)) is what a filter
    keeps per sample; here it runs in the log domain (cumulative maximum of
    log|i_j| + t_j/tau) so a 500k-sample log costs no Python loop."""
    t, mag = np.asarray(t_s, dtype=float), np.abs(np.asarray(i_A, dtype=float))
    if not tau_s > 0 or mag.size == 0:
        return mag
    scaled = (t - t[0]) / tau_s
    with np.errstate(divide="ignore"):
        peak = np.maximum.accumulate(np.log(mag) + scaled)
    return np.maximum(mag, np.exp(peak - scaled))     # |i| exact where it is the largest


def look_rows_A(rows, tau_s: float) -> np.ndarray:
    """:func:`look_current_A` of every log of ``rows`` (:class:`.refine.Rows`), at its rows
    (A); ``tau_s``: the model's slowest RC time constant (s; 0 without RC pairs)."""
    return np.concatenate([look_current_A(log.t_s, log.i_A, tau_s)[pick]
                           for log, pick in zip(rows.logs, rows.picks)])


def _nearest(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    mids = 0.5 * (knots[1:] + knots[:-1])
    return np.searchsorted(mids, values)


def table(z: np.ndarray, i_A: np.ndarray, w: np.ndarray, residual_V: np.ndarray,
          capacity_Ah: float, noise_V: float, held_out: str, steady_ohm: float = 0.0,
          floor_V: float = 0.0, ocv_doubt_V=None, slow_ohm: float = 0.0, look_A=None,
          look_tau_s: float = 0.0) -> dict:
    """The model_error section (models/model.schema.json) from per-row held-out residuals;
    ``steady_ohm``: the model's R0 plus its RC resistances (ohm), the floor's scale when
    the rows' currents go one way only; ``floor_V``: the least sigma under current when no
    sweep was held out (0: none); ``ocv_doubt_V``: per SOC_KNOTS, the least sigma at every
    C-rate when the OCV came from a fast cycle (:func:`ocv_doubt_V`; None: none);
    ``slow_ohm``: with it, the steady resistance less the step edges' instant R0 (ohm). A
    fast cycle's long sweeps show the steady polarisation but not how fast its slow part
    (``slow_ohm``) builds and relaxes: a pulse profile can find all of it out of place,
    so sigma under current is at least C-rate x capacity x ``slow_ohm``; ``look_A``: per
    row the current the filter looks the table up at (:func:`look_current_A`; None: the
    row's present current), the one the rows are binned by (``i_A`` still decides the
    current directions seen), made with ``look_tau_s`` (s), which goes into the section for
    the filter to keep the same current."""
    c = np.abs(i_A if look_A is None else look_A) / capacity_Ah
    ok = np.isfinite(residual_V)
    a, b = _nearest(z[ok], SOC_KNOTS), _nearest(c[ok], C_KNOTS)
    shape = (SOC_KNOTS.size, C_KNOTS.size)
    weight = np.zeros(shape)
    sq = np.zeros(shape)
    np.add.at(weight, (a, b), w[ok])
    np.add.at(sq, (a, b), w[ok] * residual_V[ok] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(weight >= MIN_WEIGHT, sq / weight, np.nan)
    sigma = np.sqrt(np.maximum(var - noise_V ** 2, 0.0))
    seen_c = C_KNOTS[np.any(weight >= MIN_WEIGHT, axis=0)]
    top_c = float(seen_c.max()) if seen_c.size else 0.0
    sigma = _fill(sigma, top_c, between=look_A is not None)
    sigma[:, C_KNOTS > 0] = np.maximum(sigma[:, C_KNOTS > 0], floor_V)
    if ocv_doubt_V is not None:
        sigma = np.maximum(sigma, np.asarray(ocv_doubt_V, dtype=float)[:, None])
        sigma = np.maximum(sigma, C_KNOTS * capacity_Ah * slow_ohm)
    one_way = _one_direction(z[ok], i_A[ok], capacity_Ah)
    if one_way and steady_ohm > 0:
        sigma = np.maximum(sigma, C_KNOTS * capacity_Ah * steady_ohm)
    section = {"soc": SOC_KNOTS.tolist(), "c_rate": C_KNOTS.tolist(),
            "sigma_V": [round(float(s), 6) for s in sigma.ravel()],
            "method": (f"held-out residuals ({held_out}), RMS per nearest knot less "
                       f"{noise_V * 1e3:.2f} mV noise; C-rates above {top_c:g}C not seen: "
                       "scaled with C-rate"
                       + (f"; one current direction only ({one_way}): under current at least "
                          f"C-rate x capacity x {steady_ohm:.4g} ohm" if one_way and steady_ohm > 0 else "")
                       + (f"; no sweep held out: under current at least the blocks' "
                          f"{floor_V * 1e3:.2f} mV" if floor_V > 0 else "")
                       + ("; OCV from a fast cycle: everywhere at least the branches' half gap less "
                          f"their IR drop, under current at least C-rate x capacity x {slow_ohm:.4g} ohm"
                          if ocv_doubt_V is not None else "")
                       + ("; binned at the look-up current (|i|, or the recent current decayed with "
                          "the slowest RC time constant), empty C-rates between seen ones interpolated"
                          if look_A is not None else ""))}
    if look_A is not None and look_tau_s > 0:
        section["look_tau_s"] = round(float(look_tau_s), 3)
    return section


def ocv_doubt_V(curve: dict, steady_ohm: float) -> np.ndarray:
    """How far the OCV from a fast cycle may be off (V, per SOC_KNOTS): half the gap between
    its charge and discharge branches less their IR drop (branch current x ``steady_ohm``,
    the model's R0 plus its RC resistances). The OCV is taken as the branches' mean; the
    part of their gap the resistance does not explain (hysteresis, or diffusion that a
    rest would relax) may sit on either side of it, and fast sweeps cannot tell which."""
    half_gap = 0.5 * np.abs(np.asarray(curve["charge_V"]) - np.asarray(curve["discharge_V"]))
    unexplained = np.abs(half_gap - curve["branch_A"] * steady_ohm)
    return np.interp(SOC_KNOTS, curve["soc"], unexplained)


def _one_direction(z: np.ndarray, i_A: np.ndarray, capacity_Ah: float) -> str:
    """"charge" or "discharge" when only the rows of that sign (above C/50) span MIN_SPAN of
    SoC, else "" (both seen, or neither). A span, not a count: the few minutes of charge
    after a discharge's cut-off say nothing of the charge branch."""
    moving = np.abs(i_A) > capacity_Ah / 50.0
    spans = [float(np.ptp(z[m])) if np.any(m) else 0.0 for m in (moving & (i_A > 0), moving & (i_A < 0))]
    up, down = (span >= MIN_SPAN for span in spans)
    if up == down:
        return ""
    return "charge" if up else "discharge"


def _fill(sigma: np.ndarray, top_c: float, between: bool = False) -> np.ndarray:
    """Fill empty cells (see the module docstring); all-empty gives zeros. ``between``: an
    empty C-rate between two populated ones in its SoC row takes the straight line between
    them instead of the one below (for a table looked up at the decayed current: every
    relaxation sweeps through those C-rates with the load's error decaying in proportion)."""
    out = sigma.copy()
    for row in out:
        seen = np.flatnonzero(np.isfinite(row))
        if seen.size:
            row[:seen[0]] = row[seen[0]]
            if between:
                gap = ~np.isfinite(row)
                gap[seen[-1]:] = False
                row[gap] = np.interp(C_KNOTS[gap], C_KNOTS[seen], row[seen])
            for k in range(1, row.size):
                if not np.isfinite(row[k]):
                    row[k] = row[k - 1]
            np.maximum.accumulate(row, out=row)
    have = np.flatnonzero(np.all(np.isfinite(out), axis=1))
    if not have.size:
        return np.zeros_like(out)
    for a in range(out.shape[0]):
        if a not in have:
            out[a] = out[have[np.argmin(np.abs(SOC_KNOTS[have] - SOC_KNOTS[a]))]]
    if top_c > 0:
        beyond = C_KNOTS > top_c
        k_top = int(np.flatnonzero(C_KNOTS == top_c)[0]) if np.any(C_KNOTS == top_c) else -1
        if k_top >= 0:
            out[:, beyond] = out[:, [k_top]] * (C_KNOTS[beyond] / top_c)
    return out
