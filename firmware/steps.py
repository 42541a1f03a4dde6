"""The step engine: runs a validated step table (docs/design.md "Step table") tick by tick.

Units: voltage uV, current nA (> 0 charges the cell), time ms, charge nAh, energy uWh,
all integers. Each tick the caller (firmware/runtick.py) does: board.sample(), count(dt_ms),
safety check, control(dt_ms); if control() says the step ended it records the last point
of the step and then calls advance(). count() and control() allocate nothing: they use
only small ints, attribute stores and a preallocated array('i') of accumulators. LOAD
compiles a table into Engine.steps and Engine.loops (firmware/runsetup.py); the journal
keeps the run's position (firmware/runjournal.py writes it, recovery.py reads it back).

Charge is counted exactly: |i_nA| * dt_ms goes into a remainder in nA*ms
(3_600_000 nA*ms = 1 nAh) and whole nAh move to the counter, so no charge is lost to
rounding however short the ticks. i*dt overflows a small int (20 mA for 60 s is 1.2e12
nA*ms), so the product is split (see _add_charge). Energy is accumulated from those
whole nAh: each nAh completed in a tick adds that tick's voltage times 1 nAh (v*i*dt
itself would need 50-bit products). The sub-nAh remainder is thus priced at a later
tick's voltage: the energy error is at most 1 nAh times (the highest voltage plus the
total voltage travelled), e.g. 0.006 uWh per full 0.01-3 V cycle, plus the truncation
of the uWh count.
"""

from array import array


try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


REST = const(0)
CC_CHG = const(1)
CC_DCH = const(2)
CV_CHG = const(3)
CV_DCH = const(4)

# Step kinds after compilation (the table's string tags).
_K_CC = const(0)
_K_CV = const(1)
_K_OCV = const(2)
_K_LOOP = const(3)
KINDS = {"CC": _K_CC, "CV": _K_CV, "OCV": _K_OCV, "LOOP": _K_LOOP}

MAX_LOOP_COUNT = const(1000000)        # most repeats of a LOOP (its counter in Engine.loops)

_NAH_nAms = const(3600000)             # 1 nAh in nA*ms
_CHUNK_ms = const(60000)               # longest dt counted in one piece (keeps products small)

# Accumulator slots in Engine.acc: [whole, remainder, ...].
Q_CHG = const(0)        # q_chg_nAh, remainder nA*ms
Q_DCH = const(2)        # q_dch_nAh, remainder nA*ms
Q_STEP = const(4)       # q_step_nAh (|charge| moved in this step), remainder nA*ms
E_CHG = const(6)        # e_chg_uWh, remainder mV*nAh (1e-6 uWh), remainder uV*nAh (1e-9 uWh)
E_DCH = const(9)        # e_dch_uWh, likewise
N_ACC = const(12)

# CV control (see Engine._cv).
_CV_GAIN_num = const(500)              # i += e_uV * 500 / R_ohm nA: half a Newton step on v = E + R*i
_CV_GAIN_PAST_num = const(1000)        # a full Newton step once the voltage is past the target
_CV_ERR_MAX_uV = const(50000)          # clamp on the error per tick: bounds the step of the setpoint
CV_BAND_uV = const(10000)             # |v - target| within which "|i| <= until_nA" ends the step
_R_DEFAULT_ohm = const(100)            # before any measurement: a coin cell's series resistance
_R_MIN_ohm = const(1)
_R_MAX_ohm = const(1000000)
_R_MIN_STEP_nA = const(10000)          # current steps smaller than this don't update the estimate
_SIGN_MARGIN_uV = const(20000)         # CV sign from target vs voltage when they differ by more


def _sign(x):
    if x > 0:
        return 1
    if x < 0:
        return -1
    return 0


class Engine:
    """Runs one step table on one board; all state is in small-int attributes.

    Public state (the record fields): step_count, step_index, cycle, step_no, step_type,
    i_cmd_nA (the current setpoint), step_ms, done; charge and energy in acc (Q_CHG,
    Q_DCH, Q_STEP in nAh, E_CHG, E_DCH in uWh, each followed by its remainders).
    """

    def __init__(self, board):
        self.board = board
        self.acc = array("i", [0] * N_ACC)
        self.steps = []
        self.loops = array("i")
        self.hi_nA = 0
        self.lo_nA = 0
        self.r_ohm = _R_DEFAULT_ohm
        self._clear()

    def _clear(self):
        for k in range(N_ACC):
            self.acc[k] = 0
        self.step_no = 0
        self.step_count = 0
        self.step_index = 0
        self.step_type = REST
        self.step_ms = 0
        self.cycle = 1
        self.first_sign = 0
        self.last_sign = 0
        self.i_cmd_nA = 0
        self.v0_uV = 0
        self.i0_nA = 0
        self.done = False

    # ------------------------------------------------------------ run control

    def start(self):
        """Begin a run at step 0: counters cleared, cycle 1, step_count 1."""
        self._clear()
        for k in range(len(self.steps)):
            s = self.steps[k]
            if s[0] == _K_LOOP:
                self.loops[k] = s[2]
        self.r_ohm = _R_DEFAULT_ohm
        self._enter(0)

    def stop(self):
        """Switch the current off (end of run, fault, pause)."""
        self.board.off()

    def resume(self):
        """Re-apply the current step's output after a pause."""
        self._apply()

    def advance(self):
        """Go to the next step (following LOOPs); return False when the protocol is done."""
        no = self.step_no + 1
        steps = self.steps
        while no < len(steps):
            s = steps[no]
            if s[0] != _K_LOOP:
                self._enter(no)
                return True
            if self.loops[no] > 0:
                self.loops[no] -= 1
                no = s[1]
            else:
                self.loops[no] = s[2]  # re-arm for the next pass of an enclosing loop
                no += 1
        self.done = True
        self.board.off()
        return False

    def _enter(self, no):
        b = self.board
        s = self.steps[no]
        self.step_no = no
        self.step_count += 1
        self.step_index = -1
        self.step_ms = 0
        self.acc[Q_STEP] = 0
        self.acc[Q_STEP + 1] = 0
        # Remember the operating point before the current changes: the first sample of
        # the step then measures the cell's resistance (see _learn_r).
        self.v0_uV = b.v_uV
        self.i0_nA = b.i_nA
        sign = self._step_sign(s)
        if s[0] == _K_CC:
            self.i_cmd_nA = s[1]
            self.step_type = (REST, CC_CHG, CC_DCH)[sign]
        elif s[0] == _K_CV:
            # Bumpless start: keep the previous setpoint if it drives the same way.
            if _sign(self.i_cmd_nA) != sign:
                self.i_cmd_nA = 0
            self.step_type = CV_CHG if sign > 0 else CV_DCH
            self._cv(s[1], b.v_uV)  # correct with the last sample now, not a tick late
        else:
            self.i_cmd_nA = 0
            self.step_type = REST
        self._count_cycle(sign)
        self._apply()

    def _step_sign(self, s):
        if s[0] == _K_CC:
            return _sign(s[1])
        if s[0] != _K_CV:
            return 0
        # CV: charge if the target is clearly above the voltage, discharge if clearly
        # below; near it (CC -> CV hand-over) continue in the direction of travel.
        d = s[1] - self.board.v_uV
        if d > _SIGN_MARGIN_uV:
            return 1
        if d < -_SIGN_MARGIN_uV:
            return -1
        if self.last_sign:
            return self.last_sign
        return 1 if d >= 0 else -1

    def _count_cycle(self, sign):
        # design.md: a cycle starts when a step of the first active step's sign starts
        # after a step of the opposite sign ran.
        if sign == 0:
            return
        if self.first_sign == 0:
            self.first_sign = sign
        elif sign == self.first_sign and self.last_sign == -sign:
            self.cycle += 1
        self.last_sign = sign

    def _apply(self):
        s = self.steps[self.step_no]
        if s[0] == _K_CV or (s[0] == _K_CC and s[1] != 0):
            self.board.set_current(self.i_cmd_nA)
        else:
            self.board.off()

    # ------------------------------------------------------------ per tick

    def count(self, dt_ms):
        """Add the last sample's charge and energy over dt_ms (the real elapsed ms)."""
        while dt_ms > _CHUNK_ms:
            self._count(_CHUNK_ms)
            dt_ms -= _CHUNK_ms
        if dt_ms > 0:
            self._count(dt_ms)

    def _count(self, dt_ms):
        b = self.board
        i = b.i_nA
        v = b.v_uV
        if v < 0:
            v = 0  # a cell does not return energy through a negative reading
        acc = self.acc
        if i > 0:
            n = _add_charge(acc, Q_CHG, i, dt_ms)
            _add_energy(acc, E_CHG, v, n)
            _add_charge(acc, Q_STEP, i, dt_ms)
        elif i < 0:
            n = _add_charge(acc, Q_DCH, -i, dt_ms)
            _add_energy(acc, E_DCH, v, n)
            _add_charge(acc, Q_STEP, -i, dt_ms)

    def control(self, dt_ms):
        """Advance step time, regulate CV, and return True when the step's end is reached."""
        self.step_index += 1
        self.step_ms += dt_ms
        if self.step_index == 0:
            self._learn_r()
        s = self.steps[self.step_no]
        k = s[0]
        v = self.board.v_uV
        if k == _K_CC:
            if s[3] and ((s[1] > 0 and v >= s[3]) or (s[1] < 0 and v <= s[3])):
                return True
            return 0 < s[2] <= self.step_ms
        if k == _K_CV:
            i = self.board.i_nA
            if s[2] and self.step_ms >= s[2]:
                return True
            near = -CV_BAND_uV <= v - s[1] <= CV_BAND_uV
            if s[3] and near and -s[3] <= i <= s[3]:
                return True
            self._cv(s[1], v)
            return False
        return self.step_ms >= s[1]

    def _cv(self, target_uV, v_uV):
        """Integral control of the current setpoint toward the target voltage.

        The board is a current source and the cell is roughly v = E + R*i, so a step of
        e/R in current removes the error e; half of it (_CV_GAIN_num = 1000/2) converges
        without overshoot even when the slow RC part doubles the effective resistance.
        Once the voltage is past the target (toward the safety limit) the full step is
        taken, to get back quickly. The setpoint is the integrator, clamped to the step's
        direction and the current limits, so it cannot wind up.
        """
        e = target_uV - v_uV
        if e > _CV_ERR_MAX_uV:
            e = _CV_ERR_MAX_uV
        elif e < -_CV_ERR_MAX_uV:
            e = -_CV_ERR_MAX_uV
        g = _CV_GAIN_num
        if (e < 0) == (self.step_type == CV_CHG):
            g = _CV_GAIN_PAST_num  # past the target, toward the safety limit: correct fully
        i = self.i_cmd_nA + e * g // self.r_ohm
        if self.step_type == CV_CHG:
            lo = 0
            hi = self.hi_nA
        else:
            lo = self.lo_nA
            hi = 0
        if i > hi:
            i = hi
        elif i < lo:
            i = lo
        if i != self.i_cmd_nA:
            self.i_cmd_nA = i
            self.board.set_current(i)

    def _learn_r(self):
        # The voltage jump over the first tick of a step, divided by the current jump,
        # is the cell's fast resistance: the CV loop gain is scaled by it.
        di = self.board.i_nA - self.i0_nA
        if -_R_MIN_STEP_nA < di < _R_MIN_STEP_nA:
            return
        dv = self.board.v_uV - self.v0_uV
        if dv > 1000000:
            dv = 1000000
        elif dv < -1000000:
            dv = -1000000
        r = dv * 1000 // di
        if r < _R_MIN_ohm:
            return  # noise or a relaxing cell, not a resistance: keep the estimate
        if r > _R_MAX_ohm:
            r = _R_MAX_ohm
        self.r_ohm = r


def _add_charge(acc, k, mag_nA, dt_ms):
    """acc[k] nAh, acc[k+1] nA*ms += mag_nA * dt_ms exactly; return the whole nAh added.

    mag_nA * dt_ms can exceed a small int, so split mag = h*3600 + l: then
    mag*dt = (h*dt // 1000) nAh + (h*dt % 1000)*3600 + l*dt nA*ms, all small.
    """
    h = mag_nA // 3600
    l = mag_nA - h * 3600
    hd = h * dt_ms
    whole = hd // 1000
    rem = acc[k + 1] + (hd - whole * 1000) * 3600 + l * dt_ms
    carry = rem // _NAH_nAms
    acc[k + 1] = rem - carry * _NAH_nAms
    whole += carry
    acc[k] += whole
    return whole


def _add_energy(acc, k, v_uV, n_nAh):
    """acc[k] uWh (+ remainders acc[k+1] mV*nAh, acc[k+2] uV*nAh) += v_uV * n_nAh.

    1 uV*nAh = 1e-9 uWh; v*n is split into mV and uV parts so no product leaves small ints.
    """
    if n_nAh == 0:
        return
    vh = v_uV // 1000
    low = acc[k + 2] + (v_uV - vh * 1000) * n_nAh
    c = low // 1000
    acc[k + 2] = low - c * 1000
    mid = acc[k + 1] + vh * n_nAh + c
    c = mid // 1000000
    acc[k + 1] = mid - c * 1000000
    acc[k] += c
