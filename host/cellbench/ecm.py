"""Equivalent-circuit model (ECM) simulation of a cell model (see cellbench.model).

Units: seconds, amperes, volts, ohms, ampere-hours. Current ``i`` > 0 charges the cell;
SoC ``z`` rises on charge. The model (docs/design.md, models/README.md)::

    v       = OCV(z) + M(z)*h + M0*s + R0(z)*i + sum_j v_rc[j]
    dz/dt   = eff(i)*i / (3600*C)           eff = coulombic_efficiency on charge, 1 otherwise
    dv_j/dt = -v_j/tau_j + i*R_j/tau_j
    dh/dt   = -|i*gamma/(3600*C)| * (h - sign(i))
    s       = sign(i) when i != 0, else the previous s

M(z) is ``hysteresis.m_V``, or half the gap of the ``ocv`` charge/discharge branches
when the model has both (as the simulated board's plant does).

With ``i`` constant over an interval every state has a closed form, so both simulators
here are exact for piecewise-constant current whatever the time step:

* :func:`simulate` replays a current series (for example a log's) open loop.
* :func:`run_step`, :func:`cycle` and :func:`rate_test` run CC steps to a voltage cutoff
  (rate tests, tuning, tests) with the simulator-only ``fade`` section applied (capacity
  fade and resistance growth per equivalent full cycle, first-cycle irreversible
  capacity; models/README.md, the same rules as the simulated board's plant), and find
  each cutoff time exactly.
"""

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq

from . import model as cellmodel
from .errors import InputError
from .fit.data import run_current_A
from .fit.filters import held_sign, hysteresis_state, rc_response
from .sim.mpy.simcell import capacity_fraction, stress_weight  # the plant's ageing law

SECONDS_PER_HOUR = 3600.0


# --------------------------------------------------------------------------- open loop

def simulate(model: dict, t_s, i_A, soc0: float, h0: float = 0.0, v_rc0=None,
             s0: float = 0.0, counter_Ah=None) -> dict:
    """Open-loop response of ``model`` to the current series ``i_A`` sampled at ``t_s``.

    ``i_A[k]`` (A, charge-positive) is the current at ``t_s[k]`` and over the interval up
    to ``t_s[k+1]`` (the last value only enters the last voltage). ``soc0`` (0..1), ``h0``
    (-1..1), ``v_rc0`` (V per RC pair, default 0) and ``s0`` (the sign of the last current
    before the series) are the state at ``t_s[0]``. Fade is not applied here.

    ``counter_Ah`` (an imported log's: the tester's own net charge counter at each record,
    cellbench.fit.data.tester_counter_Ah) counts each interval's charge as the fit does
    (:func:`cellbench.fit.data.interval_charge_Ah`: the counter's step where the two
    records' currents bracket it, else the held current): SoC, the RC pairs and the
    hysteresis state follow the interval's mean current, charge / duration, while R0 and
    Butler-Volmer see the record's own current at its time. A decaying CV current, or a
    step that ends at a record before a rest, then moves SoC by what the tester counted,
    not by the record's current held over the next interval.

    Returns numpy arrays: ``v_V`` (terminal voltage), ``soc``, ``v_rc`` (shape (n, pairs)),
    ``h``, ``ocv_V``.
    """
    t, i = _series(t_s, i_A)
    run = i if counter_Ah is None else _counted_current_A(t, i, counter_Ah)
    dt = np.diff(t)
    cap_As = model["capacity_Ah"] * SECONDS_PER_HOUR
    eff = np.where(run > 0, model["coulombic_efficiency"], 1.0)
    soc = float(soc0) + np.concatenate(([0.0], np.cumsum(eff[:-1] * run[:-1] * dt) / cap_As))
    s = held_sign(i, 0.0, s0)
    v_rc = np.column_stack([rc_response(t, run, pair["tau_s"], cellmodel.rc_r(model, k, soc), v0)
                            for k, (pair, v0) in enumerate(zip(model["rc"], _initial_rc(model, v_rc0)))]
                           or [np.zeros((t.size, 0))])
    h = hysteresis_state(t, run, model["hysteresis"]["gamma"], model["capacity_Ah"], h0)
    ocv_V = cellmodel.ocv(model, soc)
    v = (ocv_V + cellmodel.hysteresis_V(model, soc) * h + model["hysteresis"]["m0_V"] * s
         + cellmodel.r0(model, soc) * i + v_rc.sum(axis=1) + cellmodel.butler_volmer_V(model, soc, i))
    return {"v_V": v, "soc": soc, "v_rc": v_rc, "h": h, "ocv_V": ocv_V}


def _series(t_s, i_A):
    t = np.asarray(t_s, dtype=float).ravel()
    i = np.asarray(i_A, dtype=float).ravel()
    if t.size == 0 or t.size != i.size:
        raise InputError(f"current: {i.size} values for {t.size} times")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(i))):
        raise InputError("time/current: must be finite")
    if np.any(np.diff(t) < 0):
        raise InputError("time: must not decrease")
    return t, i


def _counted_current_A(t: np.ndarray, i: np.ndarray, counter_Ah) -> np.ndarray:
    """Per sample, the mean current (A) over the interval after it as the tester's counter
    counted it (fit.data.interval_current_A); the last sample keeps the record's current."""
    counter = np.asarray(counter_Ah, dtype=float).ravel()
    if counter.size != t.size:
        raise InputError(f"counter: {counter.size} values for {t.size} times")
    return run_current_A(t, i, counter)


def _initial_rc(model: dict, v_rc0):
    pairs = len(model["rc"])
    values = np.zeros(pairs) if v_rc0 is None else np.asarray(v_rc0, dtype=float).ravel()
    if values.size != pairs:
        raise InputError(f"v_rc0: needs {pairs} values, one per RC pair")
    return values


# --------------------------------------------------------------------------- CC steps

# Fade moves the parameters continuously with throughput; a step is split into pieces
# of at most this many equivalent full cycles, each with its parameters held constant.
FADE_CHUNK_EFC = 0.01


@dataclass
class CellState:
    """State of a simulated cell between steps (SI units; see the module docstring).

    ``q_chg_Ah``/``q_dch_Ah`` are the cumulative charge through the terminals in each
    direction (they drive the fade); ``irreversible_Ah`` is the first-cycle side capacity
    not yet consumed; ``t_s`` is the time simulated so far.
    """

    soc: float
    v_rc: np.ndarray
    h: float = 0.0
    s: float = 0.0
    q_chg_Ah: float = 0.0
    q_dch_Ah: float = 0.0
    irreversible_Ah: float = 0.0
    t_s: float = 0.0
    dose: float = 0.0          # stressed equivalent full cycles (charge-transfer growth)

    def cycles(self, model: dict) -> float:
        """Equivalent full cycles so far: throughput / (2 * fresh capacity)."""
        return (self.q_chg_Ah + self.q_dch_Ah) / (2.0 * model["capacity_Ah"])


def new_state(model: dict, soc0: float, h0: float = 0.0) -> CellState:
    """A rested, fresh cell at SoC ``soc0`` with its first-cycle irreversible capacity ahead."""
    return CellState(soc=float(soc0), v_rc=np.zeros(len(model["rc"])), h=float(h0),
                     irreversible_Ah=model["fade"]["first_cycle_irreversible_Ah"])


def aged_capacity_Ah(model: dict, cycles: float) -> float:
    """Capacity after ``cycles`` equivalent full cycles:
    C*max(0.05, 1 - capacity_sqrt*sqrt(n) - capacity_per_cycle*n)."""
    fade = model["fade"]
    return model["capacity_Ah"] * capacity_fraction(fade["capacity_sqrt"], fade["capacity_per_cycle"], cycles)


def resistance_scale(model: dict, cycles: float) -> float:
    """Factor on R0 and every RC resistance after ``cycles`` cycles: 1 + resistance_per_cycle*n."""
    return 1.0 + model["fade"]["resistance_per_cycle"] * cycles


@dataclass
class _Segment:
    """Closed form of every state over a piece of CC step with constant parameters, from t = 0."""

    model: dict
    state: CellState
    i_A: float
    cap_As: float
    r_scale: float
    soc_rate: float            # dz/dt once the irreversible capacity is used up (1/s)
    soc_rate_irr: float        # dz/dt while it is being consumed (1/s)
    t_irr_s: float             # when it runs out (inf if never in this piece)
    irr_share: float = 0.0     # fraction of |i| feeding side reactions until then
    rct_scale: float = 1.0     # charge-transfer growth on rc[0] (fade.rct_per_cycle * dose)
    taus: np.ndarray = field(init=False)
    r_rc: np.ndarray = field(init=False)

    def __post_init__(self):
        self.taus = np.array([p["tau_s"] for p in self.model["rc"]])
        # An SoC table is read at the piece's start (pieces are short for such models).
        self.r_rc = np.array([cellmodel.rc_r(self.model, k, self.state.soc)
                              for k in range(len(self.model["rc"]))]) * self.r_scale
        self.r_rc[:1] *= self.rct_scale
        # Snapshot the start state: the caller updates `state` in place afterwards.
        self.z0, self.v_rc0 = self.state.soc, np.array(self.state.v_rc, dtype=float)
        self.h0, self.s0 = self.state.h, self.state.s

    def soc(self, t):
        t_before = np.minimum(t, self.t_irr_s)
        return self.z0 + self.soc_rate_irr * t_before + self.soc_rate * (t - t_before)

    def v_rc(self, t):
        target = self.r_rc * self.i_A
        decay = np.exp(-np.multiply.outer(t, 1.0 / self.taus))
        return target + (self.v_rc0 - target) * decay

    def h(self, t):
        sign = math.copysign(1.0, self.i_A) if self.i_A else 0.0
        rate = abs(self.i_A * self.model["hysteresis"]["gamma"]) / self.cap_As
        return sign + (self.h0 - sign) * np.exp(-rate * t)

    def voltage(self, t):
        z = self.soc(t)
        s = math.copysign(1.0, self.i_A) if self.i_A else self.s0
        r0 = cellmodel.r0(self.model, z) * self.r_scale
        return (cellmodel.ocv(self.model, z) + cellmodel.hysteresis_V(self.model, z) * self.h(t)
                + self.model["hysteresis"]["m0_V"] * s + r0 * self.i_A + self.v_rc(t).sum(axis=-1)
                + cellmodel.butler_volmer_V(self.model, z, self.i_A))

    def time_to_soc_limit(self) -> float:
        """Seconds until SoC reaches 0 (discharge) or 1 (charge); inf at rest."""
        if self.i_A == 0:
            return math.inf
        goal = 1.0 if self.i_A > 0 else 0.0
        if math.isfinite(self.t_irr_s):
            z_irr = self.z0 + self.soc_rate_irr * self.t_irr_s
            if (goal - z_irr) * self.i_A <= 0:       # the limit comes first
                return max(0.0, (goal - self.z0) / self.soc_rate_irr)
            return self.t_irr_s + (goal - z_irr) / self.soc_rate
        return max(0.0, (goal - self.z0) / self.soc_rate)


def _segment(model: dict, state: CellState, i_A: float) -> _Segment:
    cycles = state.cycles(model)
    cap_As = aged_capacity_Ah(model, cycles) * SECONDS_PER_HOUR
    r_scale = resistance_scale(model, cycles)
    rct_scale = 1.0 + model["fade"]["rct_per_cycle"] * state.dose
    eff = model["coulombic_efficiency"] if i_A > 0 else 1.0
    rate = eff * i_A / cap_As
    q_irr0 = model["fade"]["first_cycle_irreversible_Ah"]
    if i_A < 0 and state.irreversible_Ah > 0:
        # A fixed share of the discharge current feeds side reactions until the
        # irreversible capacity is used up; the share is sized so that a full first
        # discharge delivers capacity + irreversible capacity.
        share = q_irr0 / (q_irr0 + model["capacity_Ah"])
        t_irr = state.irreversible_Ah * SECONDS_PER_HOUR / (abs(i_A) * share)
        return _Segment(model, state, i_A, cap_As, r_scale, rate, rate * (1.0 - share), t_irr, share,
                        rct_scale)
    return _Segment(model, state, i_A, cap_As, r_scale, rate, rate, math.inf, 0.0, rct_scale)


def _fade_chunk_s(model: dict, i_A: float) -> float:
    fade = model["fade"]
    tables = any(isinstance(p["r_ohm"], list) for p in model["rc"])
    if i_A == 0 or not (fade["capacity_per_cycle"] or fade["resistance_per_cycle"] or tables
                        or fade["capacity_sqrt"] or fade["rct_per_cycle"]):
        return math.inf
    return FADE_CHUNK_EFC * 2.0 * model["capacity_Ah"] * SECONDS_PER_HOUR / abs(i_A)


def run_step(model: dict, state: CellState, i_A: float, until_V=None, until_s=None,
             dt_s: float = 1.0, tick_s: float = 0.0) -> dict:
    """Run one CC step (or a rest when ``i_A`` == 0) from ``state``, updating it in place.

    The step ends at the first time the terminal voltage reaches ``until_V`` (falling to
    it on discharge, rising to it on charge), after ``until_s`` seconds, or when SoC
    reaches 0 or 1, whichever comes first. Voltage is evaluated on a grid of ``dt_s`` and
    the crossing is then solved exactly on the closed form (brentq). With ``tick_s`` > 0
    the voltage end is instead noticed the way a tester sampling every ``tick_s`` does: at
    the first tick at or after the crossing, and no earlier than one tick into the step.

    Returns {"i_A", "duration_s", "capacity_Ah" (|i|*duration, what a tester counts),
    "end" ("voltage" | "time" | "soc"), "v_end_V", "soc_end"}.
    """
    if until_V is None and until_s is None:
        raise InputError("step: needs until_V or until_s")
    if i_A == 0 and until_s is None:
        raise InputError("step: a rest needs until_s")
    i_A = float(i_A)
    chunk_s = _fade_chunk_s(model, i_A)
    elapsed, end, v_end = 0.0, None, math.nan
    while end is None:
        seg = _segment(model, state, i_A)
        limits = {"soc": seg.time_to_soc_limit(),
                  "time": math.inf if until_s is None else float(until_s) - elapsed}
        t_piece = min(min(limits.values()), chunk_s)
        t_cut = _cutoff_time(seg, float(until_V), t_piece, dt_s) if until_V is not None and i_A else None
        if t_cut is not None:
            if tick_s > 0:
                noticed = max(tick_s, math.ceil((elapsed + t_cut) / tick_s - 1e-9) * tick_s)
                t_cut = min(noticed - elapsed, limits["soc"], limits["time"])
            t_piece, end = t_cut, "voltage"
        elif t_piece < chunk_s:
            end = min(limits, key=lambda name: limits[name])
        v_end = _advance(seg, state, t_piece)
        elapsed += t_piece
    return {"i_A": i_A, "duration_s": elapsed, "capacity_Ah": abs(i_A) * elapsed / SECONDS_PER_HOUR,
            "end": end, "v_end_V": v_end, "soc_end": state.soc}


def _cutoff_time(seg: _Segment, until_V: float, t_end: float, dt_s: float):
    """First time in [0, t_end] at which the voltage reaches until_V, or None."""
    direction = 1.0 if seg.i_A > 0 else -1.0
    grid = np.append(np.arange(0.0, t_end, dt_s), t_end)
    beyond = direction * (seg.voltage(grid) - until_V) >= 0
    if not beyond.any():
        return None
    k = int(np.argmax(beyond))
    if k == 0:
        return 0.0
    f = lambda t: float(seg.voltage(np.array([t]))[0]) - until_V
    return brentq(f, grid[k - 1], grid[k], xtol=1e-9, rtol=1e-12)


def _advance(seg: _Segment, state: CellState, t_end: float) -> float:
    """Move ``state`` to ``t_end`` into the segment; return the terminal voltage there."""
    t = np.array([t_end])
    v_end = float(seg.voltage(t)[0])
    q_Ah = abs(seg.i_A) * t_end / SECONDS_PER_HOUR
    if seg.irr_share:
        used_Ah = seg.irr_share * abs(seg.i_A) * min(t_end, seg.t_irr_s) / SECONDS_PER_HOUR
        state.irreversible_Ah = max(0.0, state.irreversible_Ah - used_Ah)
    state.soc = float(seg.soc(t)[0])
    state.v_rc = seg.v_rc(t)[0]
    state.h = float(seg.h(t)[0])
    fade = seg.model["fade"]
    state.dose += (stress_weight(seg.i_A, fade["stress_current_A"], fade["stress_exponent"])
                   * q_Ah / (2.0 * seg.model["capacity_Ah"]))
    if seg.i_A > 0:
        state.q_chg_Ah += q_Ah
    elif seg.i_A < 0:
        state.q_dch_Ah += q_Ah
    if seg.i_A:
        state.s = math.copysign(1.0, seg.i_A)
    state.t_s += t_end
    return v_end


def cycle(model: dict, steps, soc0: float = 1.0, h0: float = 0.0, dt_s: float = 1.0,
          state: "CellState | None" = None, tick_s: float = 0.0) -> list:
    """Run a list of steps, each ``(i_A, until_V, until_s)`` (``None`` = not set), in order.

    Starts from ``state`` if given (it is updated), else from a fresh rested cell at
    ``soc0``. ``dt_s`` and ``tick_s`` are passed to :func:`run_step`. Returns one
    :func:`run_step` result per step.
    """
    state = state if state is not None else new_state(model, soc0, h0)
    return [run_step(model, state, i, until_V, until_s, dt_s, tick_s) for i, until_V, until_s in steps]


def rate_test(model: dict, currents_A, cycles_per_rate: int = 5, soc0: float = 1.0,
              discharge_first: bool = True, dt_s: float = 1.0, window_V=None,
              tick_s: float = 0.0, rest_s: float = 0.0) -> dict:
    """CC cycling to the window limits, ``cycles_per_rate`` cycles at each |current| in A.

    Each cycle is a discharge then a charge (or the reverse when ``discharge_first`` is
    False), each followed by a rest of ``rest_s`` seconds (none when 0); ``tick_s`` > 0
    ends steps on a tester's sampling grid (see :func:`run_step`). Returns numpy arrays,
    one entry per cycle: ``i_A`` (the |current|), ``q_dch_Ah``, ``q_chg_Ah``.
    """
    low_V, high_V = window_V or model["window_V"]
    state = new_state(model, soc0)
    rows = []
    for current in currents_A:
        dch, chg = (-abs(current), low_V, None), (abs(current), high_V, None)
        halves = [dch, chg] if discharge_first else [chg, dch]
        steps = [halves[0], (0.0, None, rest_s), halves[1], (0.0, None, rest_s)] if rest_s else halves
        for _ in range(cycles_per_rate):
            done = [r for r in cycle(model, steps, dt_s=dt_s, state=state, tick_s=tick_s) if r["i_A"]]
            q = {r["i_A"] < 0: r["capacity_Ah"] for r in done}
            rows.append((abs(current), q[True], q[False]))
    i_A, q_dch, q_chg = (np.array(col) for col in zip(*rows))
    return {"i_A": i_A, "q_dch_Ah": q_dch, "q_chg_Ah": q_chg}


def average_per_rate(result: dict, cycles_per_rate: int, key: str = "q_dch_Ah") -> np.ndarray:
    """Mean of ``result[key]`` over each block of ``cycles_per_rate`` cycles."""
    return np.asarray(result[key]).reshape(-1, cycles_per_rate).mean(axis=1)
