"""Per-tick safety check: the protocol's limits and the board's own limits.

Units: voltage in integer uV, current in integer nA (> 0 charges the cell), charge in
integer nAh, time in integer ms. The check reads the board's last calibrated sample
(board.v_uV, board.i_nA) and allocates nothing.

A protocol limit must be exceeded continuously for ``delay_ms`` before it trips (0 trips
on the first tick that exceeds it), so one noisy sample cannot end a week-long test. The
board's own limits (board.max_uV, board.min_uV, board.max_nA) trip at once: they protect
the hardware. A trip switches the current off in the same tick (board.off()).

Hardware faults (docs/link.md "Hardware faults") are recognised from signatures that no
healthy cell and board produce, each on N consecutive samples while the source is on
(board.setpoint_nA != 0); when another limit trips on a sample, a signature present on
that same sample is reported at once, so the record says why the limit was crossed:
  OPEN_CIRCUIT  |i| < |set|/4 and the terminal at the source's compliance voltage on
                the side the setpoint drives it to (OPEN_TICKS)
  SHORT         |v| <= _SHORT_uV while |i| >= |set|/2 (SHORT_TICKS)
  SOURCE        |i - set| > |set|/5 + full scale of the range/50, neither of the above
                (SOURCE_TICKS)
  ADC_STUCK     both raw ADC sums identical tick after tick (STUCK_TICKS)
  ADC_RAIL      a raw sum at the converter's rail: any tick while RUNNING (_RAIL_TICKS)

The board interface these checks read (board.Board has it; every simulated or test
board must too, there is no silent skip): ``setpoint_nA`` (last applied setpoint, 0 =
off), ``range`` (index of the selected current range) and ``range_fs_nA`` (full scale of
each range, smallest first), ``compliance_lo_uV`` / ``compliance_hi_uV`` (the source's
output range), ``raw_v`` / ``raw_i`` (the last sample's raw ADC sums, converter units)
and ``raw_lo`` / ``raw_hi`` (the sums with every conversion at a rail).

Fault bits (also in docs/link.md; the record field ``fault`` carries them):
"""

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


OVER_VOLTAGE = const(1)       # v_uV > safety.max_uV
UNDER_VOLTAGE = const(2)      # v_uV < safety.min_uV
OVER_CURRENT = const(4)       # i_nA > safety.max_nA or i_nA < safety.min_nA
OVER_CHARGE = const(8)        # |charge moved in the step| > safety.max_q_nAh
BOARD_LIMIT = const(16)       # outside the board's own max_uV / min_uV / max_nA
OPEN_CIRCUIT = const(32)      # source on, no current, terminal at the compliance voltage
SHORT = const(64)             # voltage collapsed to ~0 under current
ADC_STUCK = const(128)        # identical raw readings for many ticks while current flows
SOURCE = const(256)           # measured current does not follow the setpoint
WATCHDOG = const(512)         # reserved: a reset is reported by the INTERRUPTED event instead
INTERNAL = const(1024)        # an exception in the tick loop (current switched off)
ADC_RAIL = const(2048)        # an ADC reads at its rail (saturated)

NAMES = ("OVER_VOLTAGE", "UNDER_VOLTAGE", "OVER_CURRENT", "OVER_CHARGE", "BOARD_LIMIT",
         "OPEN_CIRCUIT", "SHORT", "ADC_STUCK", "SOURCE", "WATCHDOG", "INTERNAL", "ADC_RAIL")

# Detection bounds, in consecutive samples (ticks) showing the signature.
OPEN_TICKS = const(2)
SHORT_TICKS = const(3)
SOURCE_TICKS = const(3)
STUCK_TICKS = const(10)       # 16x oversampled noisy sums repeat by chance far less than that
_RAIL_TICKS = const(2)
_SHORT_uV = const(3000)        # below a graphite half cell's 5-10 mV cut-off
_COMPLIANCE_MARGIN_uV = const(100000)
_I_MIN_nA = const(1000)        # smaller setpoints are not checked against the measurement

KEYS = ("max_uV", "min_uV", "max_nA", "min_nA", "max_q_nAh", "delay_ms")


def limits(board, section):
    """The limits of a step table's ``safety`` section (a dict or None); the keys it
    leaves out get the board's own limits (no charge limit, no delay)."""
    lim = {"max_uV": board.max_uV, "min_uV": board.min_uV, "max_nA": board.max_nA,
           "min_nA": -board.max_nA, "max_q_nAh": 0, "delay_ms": 0}
    if section:
        for key in KEYS:
            if key in section:
                lim[key] = section[key]
    return lim


class Safety:
    """Limits of one run plus the time each protocol limit has been exceeded so far."""

    def __init__(self, board):
        self.board = board
        # The board interface of the hardware checks (module docstring).
        self.fs_nA = board.range_fs_nA
        self.comp_lo_uV = board.compliance_lo_uV
        self.comp_hi_uV = board.compliance_hi_uV
        self.configure(None)

    def configure(self, section):
        """Take the limits from a validated ``safety`` section (missing keys: board limits).

        max_nA >= 0 bounds charge current, min_nA <= 0 bounds discharge current,
        max_q_nAh = 0 means no charge limit, delay_ms >= 0.
        """
        lim = limits(self.board, section)
        self.max_uV = lim["max_uV"]
        self.min_uV = lim["min_uV"]
        self.max_nA = lim["max_nA"]
        self.min_nA = lim["min_nA"]
        self.max_q_nAh = lim["max_q_nAh"]
        self.delay_ms = lim["delay_ms"]
        self.reset()

    def reset(self):
        """Forget how long limits have been exceeded (at the start of a run).

        The *_ms counters are 0 inside the limit, else 1 + ms since it was first exceeded.
        """
        self.ov_ms = 0
        self.uv_ms = 0
        self.oc_ms = 0
        self.oq_ms = 0
        # Hardware signatures: consecutive samples showing each (see hardware()).
        self.n_open = 0
        self.n_short = 0
        self.n_source = 0
        self.n_stuck = 0
        self.n_rail = 0
        self.last_va = -1
        self.last_ia = -1

    def _held(self, over, held, dt_ms):
        # 0 while inside the limit; otherwise 1 + the ms since the first sample outside it
        # (the offset keeps "just went outside" distinct from "inside").
        if not over:
            return 0
        if held == 0:
            return 1
        return held + dt_ms

    def check(self, q_step_nAh, dt_ms):
        """Check the last sample; return the fault bits (0 = fine). Trips switch off.

        ``q_step_nAh``: charge moved in the current step (>= 0); ``dt_ms``: the time since
        the previous check, so ``delay_ms`` is measured in real elapsed time.
        """
        b = self.board
        v = b.v_uV
        i = b.i_nA
        bits = 0
        if v > b.max_uV or v < b.min_uV or i > b.max_nA or i < -b.max_nA:
            bits = BOARD_LIMIT
        self.ov_ms = self._held(v > self.max_uV, self.ov_ms, dt_ms)
        self.uv_ms = self._held(v < self.min_uV, self.uv_ms, dt_ms)
        self.oc_ms = self._held(i > self.max_nA or i < self.min_nA, self.oc_ms, dt_ms)
        self.oq_ms = self._held(0 < self.max_q_nAh < q_step_nAh, self.oq_ms, dt_ms)
        d = self.delay_ms + 1
        if self.ov_ms >= d:
            bits |= OVER_VOLTAGE
        if self.uv_ms >= d:
            bits |= UNDER_VOLTAGE
        if self.oc_ms >= d:
            bits |= OVER_CURRENT
        if self.oq_ms >= d:
            bits |= OVER_CHARGE
        bits |= self.hardware(bits != 0)
        if bits:
            b.off()
        return bits

    def hardware(self, tripped):
        """Fault bits of the hardware signatures on the last sample (module docstring).

        A signature counts once seen on its N consecutive samples, or at once when
        ``tripped`` (another limit ends the run on this sample). Small ints only.
        """
        b = self.board
        bits = self._adc(b, tripped)
        sp = b.setpoint_nA
        if -_I_MIN_nA < sp < _I_MIN_nA:
            self.n_open = 0
            self.n_short = 0
            self.n_source = 0
            return bits
        v = b.v_uV
        i = b.i_nA
        mag = sp if sp > 0 else -sp
        am = i if i > 0 else -i
        if sp > 0:
            at_comp = v >= self.comp_hi_uV - _COMPLIANCE_MARGIN_uV
        else:
            at_comp = v <= self.comp_lo_uV + _COMPLIANCE_MARGIN_uV
        is_open = am * 4 < mag and at_comp
        is_short = am * 2 >= mag and -_SHORT_uV <= v <= _SHORT_uV
        err = i - sp
        if err < 0:
            err = -err
        k = b.range if b.range < len(self.fs_nA) else len(self.fs_nA) - 1
        is_src = not is_open and not is_short and err > mag // 5 + self.fs_nA[k] // 50
        self.n_open = self.n_open + 1 if is_open else 0
        self.n_short = self.n_short + 1 if is_short else 0
        self.n_source = self.n_source + 1 if is_src else 0
        if is_open and (tripped or self.n_open >= OPEN_TICKS):
            bits |= OPEN_CIRCUIT
        if is_short and (tripped or self.n_short >= SHORT_TICKS):
            bits |= SHORT
        if is_src and (tripped or self.n_source >= SOURCE_TICKS):
            bits |= SOURCE
        return bits

    def _adc(self, b, tripped):
        va = b.raw_v
        ia = b.raw_i
        bits = 0
        rail = va >= b.raw_hi or ia >= b.raw_hi or ia <= b.raw_lo
        self.n_rail = self.n_rail + 1 if rail else 0
        if rail and (tripped or self.n_rail >= _RAIL_TICKS):
            bits |= ADC_RAIL
        # Stuck: only meaningful while current flows (a resting, noiseless channel may
        # legitimately repeat); both channels must repeat, tick after tick.
        flowing = b.setpoint_nA != 0
        same = flowing and va == self.last_va and ia == self.last_ia
        self.n_stuck = self.n_stuck + 1 if same else 0
        self.last_va = va
        self.last_ia = ia
        if self.n_stuck >= STUCK_TICKS - 1:  # N identical samples = N - 1 repeats
            bits |= ADC_STUCK
        return bits
