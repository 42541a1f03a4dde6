"""Per-tick safety check: the protocol's limits and the board's own limits.

Units: voltage in integer uV, current in integer nA (> 0 charges the cell), charge in
integer nAh, time in integer ms. The check reads the board's last calibrated sample
(board.v_uV, board.i_nA) and allocates nothing.

A protocol limit must be exceeded continuously for ``delay_ms`` before it trips (0 trips
on the first tick that exceeds it), so one noisy sample cannot end a week-long test. The
board's own limits (board.max_uV, board.min_uV, board.max_nA) trip at once: they protect
the hardware. A trip switches the current off in the same tick (board.off()).

Fault bits (also in docs/link.md; the record field ``fault`` carries them):
"""

OVER_VOLTAGE = 1       # v_uV > safety.max_uV
UNDER_VOLTAGE = 2      # v_uV < safety.min_uV
OVER_CURRENT = 4       # i_nA > safety.max_nA or i_nA < safety.min_nA
OVER_CHARGE = 8        # |charge moved in the step| > safety.max_q_nAh
BOARD_LIMIT = 16       # outside the board's own max_uV / min_uV / max_nA
OPEN_CIRCUIT = 32      # reserved: relay closed but no current flows
SHORT = 64             # reserved: voltage collapsed under current
ADC_STUCK = 128        # reserved: identical raw readings for many ticks
SOURCE = 256           # reserved: measured current does not follow the setpoint
WATCHDOG = 512         # reserved: the board restarted from a watchdog reset
INTERNAL = 1024        # an exception in the tick loop (current switched off)

NAMES = ("OVER_VOLTAGE", "UNDER_VOLTAGE", "OVER_CURRENT", "OVER_CHARGE", "BOARD_LIMIT",
         "OPEN_CIRCUIT", "SHORT", "ADC_STUCK", "SOURCE", "WATCHDOG", "INTERNAL")

KEYS = ("max_uV", "min_uV", "max_nA", "min_nA", "max_q_nAh", "delay_ms")


def defaults(board):
    """The limits a step table gets for the keys its ``safety`` section leaves out."""
    return {"max_uV": board.max_uV, "min_uV": board.min_uV, "max_nA": board.max_nA,
            "min_nA": -board.max_nA, "max_q_nAh": 0, "delay_ms": 0}


class Safety:
    """Limits of one run plus the time each protocol limit has been exceeded so far."""

    def __init__(self, board):
        self.board = board
        self.configure(None)

    def configure(self, section):
        """Take the limits from a validated ``safety`` section (missing keys: board limits).

        max_nA >= 0 bounds charge current, min_nA <= 0 bounds discharge current,
        max_q_nAh = 0 means no charge limit, delay_ms >= 0.
        """
        lim = defaults(self.board)
        if section:
            for key in KEYS:
                if key in section:
                    lim[key] = section[key]
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
        if bits:
            b.off()
        return bits
