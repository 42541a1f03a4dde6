"""The plant of the simulated board: an equivalent-circuit coin cell behind the board's
current source, sense amplifier and ADCs.

Two layers, both plain Python that runs under MicroPython (in the simulated board) and
CPython (host tests import it):

* :class:`Cell`: the model of docs/design.md (SI units, current > 0 charges):
  ``v = OCV(z) + M(z)*h + M0*s + R0(z)*i + sum(v_rc)``, integrated exactly for a current
  that is constant over each interval (exponential discretisation of the RC pairs and of
  the hysteresis state). Extras a fitted model need not have: charge/discharge OCV
  branches (then M(z) is half their gap, replacing hysteresis.m_V), ageing (the
  ``fade`` section, docs/ageing.md): capacity lost as ``sqrt`` plus linear in equivalent
  full cycles n = throughput / (2 * fresh capacity), every resistance growing linearly
  in n, the charge-transfer pair rc[0] growing linearly in a current-weighted dose (its
  state in ``dose``/``rct_mult``, written to the state file with every truth row), and
  ``fade.first_cycle_irreversible_Ah``: side-reaction charge consumed during discharge
  until used up, at the rate that spreads it over one full first discharge, so the
  first cycle's coulombic efficiency is C / (C + irreversible).
* :class:`Plant`: the board around the cell. It advances the cell lazily to the virtual
  now whenever the firmware reads an ADC or changes the source, relay or range, with the
  current the source actually delivers: ``setpoint * (1 + gain) + offset_A`` (the sim
  section's ``source_error`` per range), 0 with the relay open. The ideal ADC inputs are
  cached per virtual time, so the 2 * oversample reads of a tick only add noise (a
  seeded table, integers) and the RP2040 DNL transfer (integers): no heap per read.

Environment (set by cellbench.sim.start_board): CELLBENCH_SIM_CELL (model JSON path),
CELLBENCH_SIM_SOC0 (initial SoC; default the model's ``sim_soc0``, else the board's
``sim.soc0``, else 1.0), CELLBENCH_SIM_SEED, CELLBENCH_SIM_TRUTH (CSV of truth rows
``t_s,i_A,v_V,soc,q_chg_Ah,q_dch_Ah`` every ``sim.truth_dt_s`` and at every current
change, each row handed to the OS at once), CELLBENCH_SIM_STATS (memory/time statistics, see
:meth:`Plant.write_stats`), CELLBENCH_SIM_FAULTS (comma-separated ``kind@t_s``, t_s in virtual seconds since boot):
``open``: the cell is removed, the terminal then reads the compliance limit in the
direction of the setpoint and no current flows; ``short``: the terminals are shorted
(SHORT_OHM) behind the sense resistor, the source's current flows through the short and
not the cell; ``stuck``: every ADC input returns the code it read first after t_s;
``saturate``: every ADC input reads its top code (RP2040 4095, ADS1115 32767);
``source``: the current source's gain collapses to SOURCE_COLLAPSE of its setpoint.

Restart after a kill (a power cut of the simulated board): the plant appends a state
line (STATE_SUFFIX file next to the truth CSV) with every truth row; a new plant started
with the same truth path continues from the last complete state line (cell state and
time), appending to the truth file, so the cell's SoC and charge counters carry on.
"""

import json
import math
import os
from array import array

try:
    from micropython import mem_total as _mem_total
except (ImportError, AttributeError):  # CPython, or a build without memory statistics
    def _mem_total():
        return 0

ADC_Q = 1024  # fixed point of the simulated RP2040 input: 1/1024 LSB
NOISE_N = 1024  # entries in the seeded standard-normal table
NOISE_Q = 1024  # its fixed point
STATS_DT_US = 600000000  # virtual time between lines of the stats file
SHORT_OHM = 0.01  # a shorted cell's terminals (the relay's contact and the short)
SOURCE_COLLAPSE = 0.1  # delivered / set current once the source's gain collapses
STATE_SUFFIX = ".state"
FAULT_KINDS = ("open", "short", "stuck", "saturate", "source")


def _getenv(name, default=None):
    v = os.getenv(name)
    return default if v is None or v == "" else v


def _interp_uniform(z, z0, dz, ys):
    """Linear interpolation on a uniform grid, extrapolating the end segments."""
    n = len(ys) - 1
    u = (z - z0) / dz
    k = int(u) if u > 0 else 0
    if k > n - 1:
        k = n - 1
    return ys[k] + (ys[k + 1] - ys[k]) * (u - k)


def capacity_fraction(per_sqrt_cycle, per_cycle, cycles):
    """Capacity left after ``cycles`` equivalent full cycles, as a fraction of the fresh one:
    ``1 - per_sqrt_cycle*sqrt(n) - per_cycle*n``, floored at 0.05. The square root is an
    SEI-like film whose growth slows as it thickens (diffusion through it); the linear term
    is a steady loss of cyclable lithium and active material per cycle."""
    return max(0.05, 1.0 - per_sqrt_cycle * math.sqrt(cycles) - per_cycle * cycles)


def stress_weight(i_A, stress_current_A, exponent):
    """Weight of charge passed at current ``i_A`` in the charge-transfer dose:
    ``(|i| / stress_current_A) ** exponent`` (1 when the exponent is 0). A steep power of the
    current is the interface damage that appears at high current density (lithium plating
    on graphite, voids at the lithium-metal counter electrode of a solid cell)."""
    if not exponent:
        return 1.0
    return (abs(i_A) / stress_current_A) ** exponent


class Cell:
    """Equivalent-circuit cell state and exact constant-current integration (SI units)."""

    def __init__(self, model, soc0=1.0):
        ocv = model["ocv"]
        soc = [float(x) for x in ocv["soc"]]
        self.z0 = soc[0]
        self.dz = (soc[-1] - soc[0]) / (len(soc) - 1)
        self.ocv_V = [float(x) for x in ocv["voltage_V"]]
        hyst = model.get("hysteresis") or {}
        m = float(hyst.get("m_V", 0.0))
        if ocv.get("charge_V") and ocv.get("discharge_V"):
            m_tab = [(float(c) - float(d)) / 2 for c, d in zip(ocv["charge_V"], ocv["discharge_V"])]
        else:
            m_tab = [m] * len(soc)
        self.m_V = m_tab
        self.m0_V = float(hyst.get("m0_V", 0.0))
        self.gamma = float(hyst.get("gamma", 0.0))
        r0 = model["r0_ohm"]
        self.r0_ohm = [float(x) for x in r0] if isinstance(r0, list) else [float(r0)] * len(soc)
        self.rc = [(float(p["r_ohm"]), float(p["tau_s"])) for p in model.get("rc", [])]
        self.eta = float(model.get("coulombic_efficiency", 1.0))
        self.c0_Ah = float(model["capacity_Ah"])
        fade = model.get("fade") or {}
        self.cap_fade = float(fade.get("capacity_per_cycle", 0.0))
        self.cap_sqrt = float(fade.get("capacity_sqrt", 0.0))
        self.res_fade = float(fade.get("resistance_per_cycle", 0.0))
        self.rct_fade = float(fade.get("rct_per_cycle", 0.0))
        self.stress_A = float(fade.get("stress_current_A", 0.0))
        self.stress_exp = float(fade.get("stress_exponent", 0.0))
        self.irr_left_Ah = float(fade.get("first_cycle_irreversible_Ah", 0.0))
        self.irr_frac = self.irr_left_Ah / (self.c0_Ah + self.irr_left_Ah)
        self.z = float(soc0)
        self.v_rc = [0.0] * len(self.rc)
        self.h = 0.0
        self.s = 0.0
        self.q_chg_Ah = 0.0
        self.q_dch_Ah = 0.0
        self.cap_Ah = self.c0_Ah
        self.r_mult = 1.0
        self.dose = 0.0  # stressed equivalent full cycles: drive the charge-transfer growth
        self.rct_mult = 1.0  # on rc[0] (the charge-transfer pair), beside r_mult

    def cycles(self):
        """Equivalent full cycles so far: charge throughput / (2 * fresh capacity)."""
        return (self.q_chg_Ah + self.q_dch_Ah) / (2 * self.c0_Ah)

    STATE = ("z", "h", "s", "q_chg_Ah", "q_dch_Ah", "cap_Ah", "r_mult", "irr_left_Ah", "dose",
             "rct_mult")

    def state_line(self):
        """The cell's full state as one text line (for a restart after a kill)."""
        vals = [getattr(self, k) for k in Cell.STATE] + self.v_rc
        return " ".join(["%r" % float(x) for x in vals])

    def restore(self, line):
        """Take the state from a state_line(); ValueError if it is not one."""
        vals = [float(x) for x in line.split()]
        n = len(Cell.STATE)
        if len(vals) != n + len(self.v_rc):
            raise ValueError("state line has %d values" % len(vals))
        for k in range(n):
            setattr(self, Cell.STATE[k], vals[k])
        self.v_rc = vals[n:]

    def step(self, i_A, dt_s):
        """Advance ``dt_s`` seconds at constant current ``i_A`` (> 0 charges), exactly."""
        if dt_s <= 0:
            return
        q_Ah = i_A * dt_s / 3600.0
        side_Ah = 0.0
        if i_A > 0:
            self.q_chg_Ah += q_Ah
            dq = self.eta * q_Ah
        else:
            self.q_dch_Ah -= q_Ah
            if self.irr_left_Ah > 0:  # part of the discharge feeds the side reaction
                side_Ah = min(self.irr_left_Ah, -q_Ah * self.irr_frac)
                self.irr_left_Ah -= side_Ah
            dq = q_Ah + side_Ah
        self.z += dq / self.cap_Ah
        for k in range(len(self.rc)):
            r, tau = self.rc[k]
            a = math.exp(-dt_s / tau)
            if k == 0:
                r *= self.rct_mult
            self.v_rc[k] = self.v_rc[k] * a + r * self.r_mult * i_A * (1 - a)
        if i_A != 0:
            sgn = 1.0 if i_A > 0 else -1.0
            k = abs(i_A * self.gamma / (3600.0 * self.cap_Ah))
            self.h = sgn + (self.h - sgn) * math.exp(-k * dt_s)
            self.s = sgn
        n = self.cycles()
        self.cap_Ah = self.c0_Ah * capacity_fraction(self.cap_sqrt, self.cap_fade, n)
        self.r_mult = 1.0 + self.res_fade * n
        if i_A != 0 and self.rct_fade:
            self.dose += stress_weight(i_A, self.stress_A, self.stress_exp) * abs(q_Ah) / (2 * self.c0_Ah)
            self.rct_mult = 1.0 + self.rct_fade * self.dose

    def ocv(self):
        return _interp_uniform(self.z, self.z0, self.dz, self.ocv_V)

    def voltage(self, i_A):
        """Terminal voltage (V) with current ``i_A`` flowing now."""
        z = self.z
        v = _interp_uniform(z, self.z0, self.dz, self.ocv_V)
        v += _interp_uniform(z, self.z0, self.dz, self.m_V) * self.h + self.m0_V * self.s
        v += _interp_uniform(z, self.z0, self.dz, self.r0_ohm) * self.r_mult * i_A
        for x in self.v_rc:
            v += x
        return v


def read_states(path, n_rc):
    """The plant's state file (STATE_SUFFIX, one line per truth row) as a dict of lists:
    ``t_s`` (virtual s since the first boot) and every Cell.STATE name, e.g. ``cap_Ah``
    (capacity now), ``r_mult`` and ``rct_mult`` (the charge-transfer resistance is
    rc[0].r_ohm * r_mult * rct_mult), ``dose``. The ageing truth, for host-side checks;
    ``n_rc``: the model's RC pairs (their voltages close each line). Torn lines are skipped."""
    out = {name: [] for name in ("t_s",) + Cell.STATE}
    width = 1 + len(Cell.STATE) + n_rc
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != width:
                continue
            out["t_s"].append(int(parts[0]) * 1e-6)
            for k, name in enumerate(Cell.STATE):
                out[name].append(float(parts[k + 1]))
    return out


def dnl_blocks(sim):
    """Per 1024-code block of the simulated RP2040 ADC: (spike, span, narrow, wide) or None.

    Widths in 1/ADC_Q LSB. The spike bin (``sim.adc_dnl_lsb`` {code: extra width in LSB},
    rounded to 1/ADC_Q) is wider by d LSB and the ``span`` bins on each side of it
    (``sim.adc_dnl_span``, default 8) narrower by d / (2 span) each, so the error stays
    local: codes further away read exactly, and a sparse correction table fixes it.
    """
    span = int(sim.get("adc_dnl_span", 8))
    blocks = [None] * 4
    for key, d in (sim.get("adc_dnl_lsb") or {}).items():
        code = int(key)
        dn = int(round(float(d) * ADC_Q / (2 * span)))
        if dn and span <= code % 1024 < 1024 - span:
            blocks[code // 1024] = (code % 1024, span, ADC_Q - dn, ADC_Q + 2 * span * dn)
    return blocks


def adc_code(xq, blocks):
    """12-bit code for input ``xq`` (LSB * ADC_Q, already offset by +0.5 LSB to round)."""
    if xq <= 0:
        return 0
    b = xq // (1024 * ADC_Q)
    if b > 3:
        return 4095
    u = xq - b * 1024 * ADC_Q
    blk = blocks[b]
    if blk is None:
        return b * 1024 + u // ADC_Q
    p, span, nw, sw = blk
    v = u - (p - span) * ADC_Q
    if v < 0 or u >= (p + span + 1) * ADC_Q:
        return b * 1024 + u // ADC_Q
    e = span * nw
    if v < e:
        return b * 1024 + p - span + v // nw
    if v < e + sw:
        return b * 1024 + p
    return b * 1024 + p + 1 + (v - e - sw) // nw


def adc_correction(sim):
    """The exact sparse correction for the simulated ADC: {code: delta in LSB} such that
    ``code + delta`` is the centre of the input range that reads ``code`` (others: 0)."""
    out = {}
    for b, blk in enumerate(dnl_blocks(sim)):
        if blk is None:
            continue
        p, span, nw, sw = blk
        for k in range(p - span, p + span + 1):
            j = k - (p - span)
            lo = j * nw if k <= p else span * nw + sw + (k - p - 1) * nw
            w = sw if k == p else nw
            centre = (p - span) + (lo + w / 2) / ADC_Q - 0.5
            out[str(b * 1024 + k)] = round(centre - k, 4)
    return out


class _Lcg:
    """30-bit LCG: deterministic, and small-int only on the 64-bit unix port."""

    def __init__(self, seed):
        self.s = (int(seed) * 2654435761 + 1) & 0x3FFFFFFF

    def next(self):
        self.s = (self.s * 1103515245 + 12345) & 0x3FFFFFFF
        return self.s


def _normal_table(lcg):
    """NOISE_N standard-normal samples * NOISE_Q as ints (Box-Muller on the LCG)."""
    tab = array("h", bytes(2 * NOISE_N))
    n = 0
    while n < NOISE_N:
        u1 = ((lcg.next() >> 6) + 1) / (1 << 24)
        u2 = (lcg.next() >> 6) / (1 << 24)
        r = math.sqrt(-2.0 * math.log(u1))
        tab[n] = max(-32767, min(32767, int(round(r * math.cos(2 * math.pi * u2) * NOISE_Q))))
        tab[n + 1] = max(-32767, min(32767, int(round(r * math.sin(2 * math.pi * u2) * NOISE_Q))))
        n += 2
    return tab


class Plant:
    """The board's analog side and the cell, advanced lazily in virtual time."""

    def __init__(self, board, cell, clock, seed=0, truth_path=None, faults="", stats_path=None):
        sim = board.get("sim") or {}
        self.clock = clock  # callable returning virtual microseconds
        self.cell = cell
        self.t_us = clock()
        adc = board["adc"]
        self.vref_V = float(adc["vref_V"])
        self.v_pin = int(adc["voltage_pin"])
        self.i_pin = int(adc["current_pin"])
        self.divider = float(board["voltage"]["divider"])
        cur = board["current"]
        self.mid_V = float(cur["mid_V"])
        self.ranges = sorted(cur["ranges"], key=lambda r: r["full_scale_mA"])
        self.range_pins = [int(p) for p in cur["range_pins"]]
        self.pin_level = {}
        self.relay_pin = int(board["relay_pin"])
        self.relay = 0
        src = board["source"]
        self.pwm_pin = int(src["pin"]) if src["type"] == "pwm" else None
        self.dac_addr = int(src.get("addr", 96)) if src["type"] == "mcp4725" else None
        self.code = 32768 if self.pwm_pin is not None else 2048
        self.full = 65535 if self.pwm_pin is not None else 4095
        self.compliance_V = [float(x) for x in board.get("compliance_V", [0.0, 5.0])]
        errs = sim.get("source_error") or {}
        self.src_err = [(float((errs.get(r["name"]) or {}).get("gain", 0.0)),
                         float((errs.get(r["name"]) or {}).get("offset_A", 0.0))) for r in self.ranges]
        self.ext = board.get("ext_adc") or None
        self.q_per_V = ADC_Q * 4096 / self.vref_V  # ideal RP2040 input per ADC volt
        self._range_changed()
        self.blocks = dnl_blocks(sim)
        self.dnl_zone = bytearray(4096)  # 1 where the DNL transfer differs from x // Q
        for b in range(4):
            if self.blocks[b] is not None:
                p, span = self.blocks[b][0], self.blocks[b][1]
                for c in range(b * 1024 + p - span - 1, b * 1024 + p + span + 2):
                    self.dnl_zone[c] = 1
        lcg = _Lcg(seed)
        self.noise = _normal_table(lcg)
        self.rs = lcg.s  # noise PRNG state (30-bit LCG, inlined in adc_u16)
        self.adc_sig = int(round(float(sim.get("adc_noise_lsb", 0.0)) * ADC_Q))
        self.ads_sig = float(sim.get("ads1115_noise_lsb", 0.0))
        self.truth_dt_us = int(float(sim.get("truth_dt_s", 10.0)) * 1e6)
        self.faults = self._parse_faults(faults)
        self.removed = False
        self.shorted = False
        self.stuck = False
        self.saturated = False
        self.adc_fault = False  # stuck or saturated: adc_u16 leaves its fast path
        self.frozen = {}  # ADC pin -> the code a stuck converter keeps returning
        self.src_scale = 1.0
        self.t0_us = 0  # virtual time before this boot (restart after a kill)
        self._state = None
        self.i_A = 0.0
        self.v_V = cell.voltage(0.0)
        self.xq = {}  # ADC pin -> ideal input (LSB * ADC_Q, +0.5 LSB)
        self.ticks = 0  # lazy advances (about one per firmware tick)
        self.alloc_bytes = 0  # heap the plant itself allocated while advancing
        self._truth = None
        self._truth_last_us = -1
        self._stats = open(stats_path, "w") if stats_path else None
        self._stats_last_us = self.t_us
        if truth_path:
            resumed = self._restore(truth_path + STATE_SUFFIX)
            self._truth = open(truth_path, "a" if resumed else "w")
            if not resumed:
                self._truth.write("t_s,i_A,v_V,soc,q_chg_Ah,q_dch_Ah\n")
            self._state = open(truth_path + STATE_SUFFIX, "a" if resumed else "w")
        self._update_inputs()
        self._row()

    @staticmethod
    def _parse_faults(text):
        out = []
        for item in (text or "").split(","):
            if "@" in item:
                kind, t = item.strip().split("@")
                if kind not in FAULT_KINDS:
                    raise ValueError("CELLBENCH_SIM_FAULTS: unknown fault %r" % kind)
                out.append((kind, int(float(t) * 1e6)))
        return out

    def _restore(self, state_path):
        """Continue from the last complete line of a previous plant's state file."""
        try:
            with open(state_path, "rb") as f:  # only its tail: the file grows with the run
                size = f.seek(0, 2)
                f.seek(max(0, size - 2048))
                lines = f.read().decode().split("\n")
        except (OSError, UnicodeError):
            return False
        if size > 2048:
            lines = lines[1:]  # cut by the seek
        for line in reversed(lines[:-1]):  # the last is empty, or torn by the kill
            parts = line.split(" ", 1)
            try:
                self.cell.restore(parts[1])
                self.t0_us = int(parts[0])
                return True
            except (ValueError, IndexError):
                continue
        return False

    # ---- state ------------------------------------------------------------------
    def range_index(self):
        """Index (smallest first) of the range whose select levels the pins show."""
        for k in range(len(self.ranges)):
            levels = self.ranges[k]["select"]
            ok = True
            for j in range(len(self.range_pins)):
                if self.pin_level.get(self.range_pins[j], 0) != levels[j]:
                    ok = False
            if ok:
                return k
        return 0

    def delivered_A(self):
        """Current the source pushes into the cell now (A, > 0 charges)."""
        if not self.relay or self.removed:
            return 0.0
        k = self.range_index()
        fs = self.ranges[k]["full_scale_mA"] * 1e-3
        gain, off = self.src_err[k]
        return ((self.code / self.full - 0.5) * 2 * fs * (1 + gain) + off) * self.src_scale

    def terminal_V(self):
        """Terminal voltage: the cell's, or the compliance limit once the cell is removed."""
        if self.removed:
            if not self.relay:
                return 0.0
            return self.compliance_V[1] if self.code * 2 > self.full else self.compliance_V[0]
        if self.shorted:
            return self.i_A * SHORT_OHM
        return self.cell.voltage(self.i_A)

    def sync(self, force=False):
        """Integrate the cell up to the virtual now (at least 1 ms, unless forced)."""
        now = self.clock()
        if now - self.t_us < 1000 and not (force and now > self.t_us):
            return
        m0 = _mem_total()
        while now > self.t_us:  # split at truth-row and fault times so rows land on them
            t = min(now, self._truth_last_us + self.truth_dt_us) if self._truth else now
            for kind, tf in self.faults:
                if self.t_us < tf < t:
                    t = tf
            self.cell.step(0.0 if self.shorted else self.i_A, (t - self.t_us) * 1e-6)
            self.t_us = t
            self._apply_faults()
            if self._truth and t - self._truth_last_us >= self.truth_dt_us:
                self.v_V = self.terminal_V()
                self._row()
        self.ticks += 1
        self._update_inputs()
        self.alloc_bytes += _mem_total() - m0
        if self._stats and now - self._stats_last_us >= STATS_DT_US:
            self._stats_last_us = now
            self.write_stats(self._stats)

    def _apply_faults(self):
        for kind, tf in self.faults:
            if self.t_us < tf:
                continue
            if kind == "open" and not self.removed:
                self.removed = True
                self.i_A = 0.0
            elif kind == "short":
                self.shorted = True
            elif kind == "stuck":
                self.stuck = self.adc_fault = True
            elif kind == "saturate":
                self.saturated = self.adc_fault = True
            elif kind == "source" and self.src_scale == 1.0:
                self.src_scale = SOURCE_COLLAPSE
                self.i_A = self.delivered_A()

    def _update_inputs(self):
        """Recompute terminal voltage and the ideal ADC inputs for the current state."""
        self.v_V = self.terminal_V()
        self.va_V = self.v_V * self.divider
        self.ia_V = self.mid_V + self.i_A * self.v_per_A
        self.xq[self.v_pin] = int(self.va_V * self.q_per_V) + ADC_Q // 2
        self.xq[self.i_pin] = int(self.ia_V * self.q_per_V) + ADC_Q // 2

    def changed(self):
        """The source, relay or range changed: integrate to now, then apply it."""
        self.sync(force=True)
        if self._truth and self._truth_last_us != self.t_us:
            self._row()
        self.i_A = self.delivered_A()
        self._update_inputs()
        self._row()

    def _row(self):
        if not self._truth:
            return
        c = self.cell
        t_us = self.t0_us + self.t_us
        i_cell = 0.0 if self.shorted else self.i_A
        self._truth.write("%.6f,%.9e,%.6f,%.8f,%.9e,%.9e\n" % (
            t_us * 1e-6, i_cell, self.v_V, c.z, c.q_chg_Ah, c.q_dch_Ah))
        if self._state:
            self._state.write("%d %s\n" % (t_us, c.state_line()))
        # no flush(): MicroPython's posix files write() straight to the OS (no user-space
        # buffer), so a killed process leaves every row; flush() would fsync (~2 ms each)
        self._truth_last_us = self.t_us

    # ---- board-facing inputs ----------------------------------------------------
    def set_pin(self, pin, level):
        if self.pin_level.get(pin) == level:
            return
        self.pin_level[pin] = level
        if pin == self.relay_pin:
            self.relay = level
            self.changed()
        elif pin in self.range_pins:
            self._range_changed()
            self.changed()

    def _range_changed(self):
        r = self.ranges[self.range_index()]
        self.v_per_A = r["sense_ohm"] * r["gain"]  # sense amplifier output per cell amp

    def set_code(self, code, full):
        if code != self.code or full != self.full:
            self.code = code
            self.full = full
            self.changed()

    def adc_u16(self, pin):
        """One RP2040 conversion of GPIO ``pin`` as read_u16() returns it.

        Hot path (2 * oversample calls per tick): small ints only and few locals, so the
        unix port neither allocates nor heap-allocates a call frame; the DNL transfer
        runs only for codes near a spike.
        """
        if self.clock() - self.t_us >= 1000:
            self.sync()
        if self.adc_fault:
            return self._faulty_u16(pin)
        s = (self.rs * 1103515245 + 12345) & 0x3FFFFFFF
        self.rs = s
        xq = self.xq.get(pin, 0) + ((self.noise[s >> 20] * self.adc_sig) >> 10)
        code = xq >> 10  # ADC_Q = 1024
        if code < 0 or code > 4095 or self.dnl_zone[code]:
            code = adc_code(xq, self.blocks)
        return (code << 4) | (code >> 8)

    def _faulty_u16(self, pin):
        # Saturated: the top code. Stuck: the first code read after the fault, forever.
        if self.saturated:
            return 0xFFFF
        code = self.frozen.get(pin)
        if code is None:
            self.adc_fault = False
            code = self.frozen[pin] = self.adc_u16(pin)
            self.adc_fault = True
        return code

    def ads_code(self, ch, fsr_V):
        """One ADS1115 conversion of input ``ch`` (signed 16-bit code, noise included)."""
        self.sync()
        ext = self.ext or {}
        if ch == int(ext.get("voltage_ch", 0)):
            v = self.va_V
        elif ch == int(ext.get("current_ch", 1)):
            v = self.ia_V
        else:
            v = 0.0
        if self.saturated:
            return 32767
        if self.stuck:
            code = self.frozen.get(-1 - ch)
            if code is not None:
                return code
        self.rs = (self.rs * 1103515245 + 12345) & 0x3FFFFFFF
        x = v / fsr_V * 32768 + self.noise[self.rs >> 20] / NOISE_Q * self.ads_sig
        code = int(math.floor(x + 0.5))
        code = -32768 if code < -32768 else (32767 if code > 32767 else code)
        if self.stuck:
            self.frozen[-1 - ch] = code
        return code

    def write_stats(self, f):
        """One line (every STATS_DT_US of virtual time, to CELLBENCH_SIM_STATS): virtual s,
        lazy advances (about one per firmware tick), heap bytes allocated so far in total
        (micropython.mem_total) and by the plant itself, live heap after a collection and
        the heap's size (gc.mem_alloc / mem_free; 0 under CPython)."""
        try:
            import gc

            gc.collect()
            live = gc.mem_alloc()
            size = live + gc.mem_free()
        except (ImportError, AttributeError):
            live = size = 0
        f.write("%d %d %d %d %d %d\n" % (self.t_us // 1000000, self.ticks, _mem_total(),
                                         self.alloc_bytes, live, size))


_plant = None


def plant():
    """The simulated board's plant, built on first use from ./board.json and the env."""
    global _plant
    if _plant is None:
        import time as vclock

        with open("board.json") as f:
            board = json.load(f)
        sim = board.get("sim") or {}
        with open(_getenv("CELLBENCH_SIM_CELL")) as f:
            model = json.load(f)
        soc0 = float(_getenv("CELLBENCH_SIM_SOC0", model.get("sim_soc0", sim.get("soc0", 1.0))))
        seed = int(_getenv("CELLBENCH_SIM_SEED", sim.get("seed", 0)))
        _plant = Plant(board, Cell(model, soc0), vclock.now_us, seed,
                       _getenv("CELLBENCH_SIM_TRUTH"), _getenv("CELLBENCH_SIM_FAULTS", ""),
                       _getenv("CELLBENCH_SIM_STATS"))
    return _plant
