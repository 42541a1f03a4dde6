"""Records: when to take one (Trigger) and where they wait for the host (Ring).

Records and events share one sequence (seq, counting from 0 at boot, never reused) and
one ring of preallocated integer arrays, one array per field, so storing a record
allocates nothing and costs _BYTES_PER_SLOT bytes of RAM. A slot stays until the host
acknowledges its seq (ACK frees everything up to and including it); the ring never
overwrites an unacknowledged slot: put() returns -1 instead and the caller pauses.

Units follow the record fields of docs/design.md: t_ms, v_uV, i_nA, charge nAh,
energy uWh, SoC ppm, capacity nAh, resistance mohm; current > 0 charges the cell.
"""

from array import array
import gc
import struct

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


FIELDS = ("t_ms", "v_uV", "i_nA", "step_count", "step_index", "cycle", "step_no",
          "step_type", "fault", "q_chg_nAh", "q_dch_nAh", "q_step_nAh", "e_chg_uWh",
          "e_dch_uWh", "soc_ppm", "soc_std_ppm", "cap_nAh", "cap_std_nAh", "r_mohm",
          "r_std_mohm")
# t_ms unsigned (49 days); step_no < 65536, step_type < 256, fault < 65536. The
# estimator's capacity (nAh) and charge-transfer resistance (mohm) with their std
# (-1: no estimate) need int32: a coin cell's 0.35 mAh is 350000 nAh, 58 ohm 58000 mohm.
CODES = "IiiiiiHBHiiiiiiiiiii"
_BYTES_PER_SLOT = const(74)   # the arrays above plus the kind byte (chunk headers not counted)

# Run time is kept as t_hi * T_WRAP + t_lo ms (controller.Controller.t_ms) so the per-tick sums
# stay MicroPython small ints (< 2**30 on the RP2040; t_ms itself passes that after 12.4
# days, and each tick would then allocate). 10**9 ms = 11.6 days; t_lo + a tick < 2**30.
T_WRAP = const(1000000000)

# Slot kinds: 0 is a record, the rest are events (their name is the link's event kind).
RECORD = const(0)
EVENTS = ("", "START", "END", "FAULT", "FULL", "STOP", "PAUSE", "RESUME", "ESTIMATOR",
          "RECOVER")
EV_START = const(1)
EV_END = const(2)
EV_FAULT = const(3)
EV_FULL = const(4)
EV_STOP = const(5)
EV_PAUSE = const(6)
EV_RESUME = const(7)
EV_ESTIMATOR = const(8)
EV_RECOVER = const(9)


_CHUNK_SHIFT = const(6)                 # columns are stored in chunks of 64 slots (<= 256 bytes):
                                # they fit the holes MODEL leaves, so the larger blocks stay
                                # free for the link (make_ring)
_CHUNK = const(1 << _CHUNK_SHIFT)
_CHUNK_MASK = const(_CHUNK - 1)


def _column(code, capacity):
    # Chunks, not one array: after imports the heap is fragmented into holes of a few KB
    # or less, and a 6 KB column would not find one. Each chunk comes from a zeroed bytearray so
    # it is allocated once, at its final size.
    size = struct.calcsize(code)
    out = []
    left = capacity
    while left > 0:
        n = min(left, _CHUNK)
        out.append(array(code, bytearray(size * n)))
        left -= n
    return out


class Ring:
    """capacity slots; seqs tail..head-1 are held (unacknowledged), head is the next seq.

    Slot k of field f is cols[f][k >> _CHUNK_SHIFT][k & _CHUNK_MASK].
    """

    def __init__(self, capacity, first_seq=0):
        self.cap = capacity
        self.cols = [_column(c, capacity) for c in CODES]
        self.kind = [bytearray(min(_CHUNK, capacity - k)) for k in range(0, capacity, _CHUNK)]
        self.head = first_seq
        self.tail = first_seq

    def count(self):
        return self.head - self.tail

    def free(self):
        return self.cap - (self.head - self.tail)

    def holds(self, seq):
        return self.tail <= seq < self.head

    def put(self, kind, t_ms, v_uV, i_nA, step_count, step_index, cycle, step_no,
            step_type, fault, q_chg_nAh, q_dch_nAh, q_step_nAh, e_chg_uWh, e_dch_uWh,
            soc_ppm, soc_std_ppm, cap_nAh, cap_std_nAh, r_mohm, r_std_mohm):
        """Store one record (kind 0) or event; return its seq, or -1 when the ring is full."""
        if self.head - self.tail >= self.cap:
            return -1
        k = self.head % self.cap
        ch = k >> _CHUNK_SHIFT
        j = k & _CHUNK_MASK
        c = self.cols
        self.kind[ch][j] = kind
        c[0][ch][j] = t_ms
        c[1][ch][j] = v_uV
        c[2][ch][j] = i_nA
        c[3][ch][j] = step_count
        c[4][ch][j] = step_index
        c[5][ch][j] = cycle
        c[6][ch][j] = step_no
        c[7][ch][j] = step_type
        c[8][ch][j] = fault
        c[9][ch][j] = q_chg_nAh
        c[10][ch][j] = q_dch_nAh
        c[11][ch][j] = q_step_nAh
        c[12][ch][j] = e_chg_uWh
        c[13][ch][j] = e_dch_uWh
        c[14][ch][j] = soc_ppm
        c[15][ch][j] = soc_std_ppm
        c[16][ch][j] = cap_nAh
        c[17][ch][j] = cap_std_nAh
        c[18][ch][j] = r_mohm
        c[19][ch][j] = r_std_mohm
        self.head += 1
        return self.head - 1

    def values(self, seq):
        """The field values of a held seq (a new list), in FIELDS order."""
        k = seq % self.cap
        ch = k >> _CHUNK_SHIFT
        j = k & _CHUNK_MASK
        return [col[ch][j] for col in self.cols]

    def kind_of(self, seq):
        k = seq % self.cap
        return self.kind[k >> _CHUNK_SHIFT][k & _CHUNK_MASK]

    def line(self, seq):
        """The link body for a held seq: ``R seq fields...`` or ``E seq KIND {json}``."""
        vals = self.values(seq)
        kind = self.kind_of(seq)
        if kind == RECORD:
            return "R %d " % seq + " ".join([str(x) for x in vals])
        # Events carry the run's position so the host can place them without the record.
        return 'E %d %s {"t_ms":%d,"step_count":%d,"step_no":%d,"cycle":%d,"fault":%d}' % (
            seq, EVENTS[kind], vals[0], vals[3], vals[6], vals[5], vals[8])

    def ack(self, seq):
        """Free every slot up to and including seq; return False if seq was never sent."""
        if seq >= self.head:
            return False
        if seq >= self.tail:
            self.tail = seq + 1
        return True


_HOLD_MIN = const(1024)     # smallest block held for the link: room for any reply or record line
_HOLD_BYTES = const(8192)   # held in such blocks while the ring is made (the rest of the
                            # reserve may be holes: the estimator and GC need no large blocks)


def make_ring(max_slots, reserve_bytes, first_seq=0, min_slots=64):
    """A Ring as large as the heap allows (up to max_slots) with reserve_bytes left free
    in blocks of at least _HOLD_MIN bytes.

    Under CPython (no gc.mem_free) simply Ring(max_slots). On the board the size comes
    from gc.mem_free(). What the link allocates after START (a reply, a record line, a
    JSON document: a few hundred bytes to a few KB each) needs contiguous blocks, and
    after MODEL the heap is a scatter of holes: counting free bytes is not enough (a
    ring that left 40 KB free in holes of at most 500 bytes failed the next STATUS).
    So while the ring is made, bytearrays hold _HOLD_BYTES of the reserve in the largest
    blocks the heap has (_hold), the ring's small chunks fill the holes around them, and the held
    blocks are freed for the link. If the heap refuses the ring, it shrinks by a sixteenth
    and tries again; if it leaves less than the reserve, it shrinks by the slots that
    cover the shortfall at what a slot was measured to cost (chunk headers and all:
    10-15 % above _BYTES_PER_SLOT), plus 1/64 for the holes a smaller ring leaves.
    """
    try:
        gc.mem_free()
    except AttributeError:
        return Ring(max_slots, first_seq)
    gc.collect()
    free0 = gc.mem_free()
    n = max(min_slots, min(max_slots, (free0 - reserve_bytes) // _BYTES_PER_SLOT))
    while True:
        hold = _hold(min(reserve_bytes, _HOLD_BYTES))
        short = 0
        try:
            ring = Ring(n, first_seq)
            hold = None
            gc.collect()
            left = gc.mem_free()
            if left >= reserve_bytes or n == min_slots:
                return ring
            short = (reserve_bytes - left) // ((free0 - left) // n + 1) + 1
            del ring
        except MemoryError:
            del hold  # the held blocks go back to the heap before the retry
            if n == min_slots:
                raise
        gc.collect()
        n = max(min_slots, n - short - n // 64 if short else n * 15 // 16)


def _hold(nbytes):
    # The largest blocks the heap has, halving the size on each refusal, until nbytes are
    # held or no block of _HOLD_MIN is left (the list is what keeps them alive).
    held = []
    size = nbytes
    total = 0
    while total < nbytes and size >= _HOLD_MIN:
        try:
            held.append(bytearray(size))
            total += size
        except MemoryError:
            size //= 2
    return held


class Trigger:
    """Decides when a sample becomes a record: every dt_ms, or on |dv| >= dv_uV or
    |di| >= di_nA since the last record (0 switches a criterion off; all three off
    records every tick), plus whenever the caller forces one (step start and end).

    A record falls due up to half a tick early (slack_ms), so a tick that ran a few ms
    late does not push the next record a whole tick later: "every dt_ms" then means every
    dt_ms / tick_ms ticks, which is what a host replaying the log expects.

    Times are taken modulo T_WRAP (the caller passes link's t_lo, or any t_ms), so the
    per-tick test is small-int arithmetic however long the run. A dt_ms of T_WRAP or
    more (11.6 days; steptable.validate allows up to 2**30) records every T_WRAP - 1 ms.
    """

    def __init__(self):
        self.configure(0, 0, 0)

    def configure(self, dt_ms, dv_uV, di_nA, slack_ms=0):
        self.dt_ms = min(dt_ms, T_WRAP - 1)
        self.slack_ms = slack_ms
        self.dv_uV = dv_uV
        self.di_nA = di_nA
        self.mark(0, 0, 0)

    def mark(self, t_ms, v_uV, i_nA):
        """Remember the last recorded point."""
        self.t_ms = t_ms % T_WRAP
        self.v_uV = v_uV
        self.i_nA = i_nA

    def due(self, t_ms, v_uV, i_nA):
        if not (self.dt_ms or self.dv_uV or self.di_nA):
            return True
        if self.dt_ms:
            dt = t_ms % T_WRAP - self.t_ms
            if dt < 0:
                dt += T_WRAP  # t wrapped since the mark
            if dt + self.slack_ms >= self.dt_ms:
                return True
        dv = v_uV - self.v_uV
        if self.dv_uV and (dv >= self.dv_uV or -dv >= self.dv_uV):
            return True
        di = i_nA - self.i_nA
        return bool(self.di_nA) and (di >= self.di_nA or -di >= self.di_nA)
