"""The run journal: where a run was, kept in flash so that a reset does not lose it.

A board reset (watchdog, brown-out, power cut) clears RAM; the journal file in the
board's filesystem (``journal.bin`` in the cwd, the flash root) keeps the last saved
position of the run: the step (step_no, loop counters), step_count, cycle, the integer
charge and energy counters with their remainders, the next seq, the estimator's SoC, the
capacity and charge-transfer resistance it has learned (with their std: a reset must not
throw away tens of cycles of learning), and the step table's checksum (firmware/runjournal.py fills it).

Two alternating slots, each _SLOT_WORDS int32 words: data words then the CRC-32 of their
bytes. Entry n is written to slot n % 2, so a write torn by a reset (a truncated or
half-written slot) leaves the other slot, the previous entry, intact; load() takes the
valid slot with the larger generation number. Units as in the record: ms, nAh, uWh, ppm,
mohm.

Flash wear (RP2040 boards: 2 MB QSPI NOR, 100k erase cycles per 4 KB sector, littlefs
over ~1.4 MB = ~350 blocks with dynamic wear levelling): a journal write rewrites the
file's data block and commits its metadata, at most ~2 block erases. runjournal.py
writes at step boundaries, at most every JOURNAL_MS within a long step and never more
often than every GAP_MS (a boundary inside the gap waits for it), plus once per
SEQ_STRIDE seqs. Worst case (a step ending on every 10 s): 8640 writes/day = 17k
erases/day over 350 blocks = 50 cycles/block/day: 100k cycles last 5.5 years of
continuous worst-case cycling; a usual protocol (steps of an hour, 5 min saves) writes
~300/day: centuries.
A write blocks the tick it happens in for the sector erase and program (tens of ms on
the RP2040, with interrupts off); main.py skips a tick that comes late rather than
bursting, and charge is counted over the real elapsed ms, so nothing is lost.
"""

from array import array
import binascii

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_MAGIC = const(0x434A4E32)  # "CJN2": journal format 2 (format 1 had no capacity/resistance
                            # words; its entries are "no entry", as a torn write is)
MAX_LOOPS = const(64)      # LOOP steps a journal can hold counters for

# Word offsets in a slot: the one statement of the layout (runjournal.py fills the W_
# words and the step engine's E_ words from W_ENGINE on).
_W_MAGIC = const(0)
_W_GEN = const(1)       # entry number, +1 per write
W_ACTIVE = const(2)    # 1: a run is in progress (RUNNING, PAUSED, FULL); 0: it ended
W_TABLE = const(3)     # the step table's checksum (CRC-32 of the LOAD JSON, 30 bits)
W_T_LO = const(4)      # run time at the save: t_ms = W_T_HI << 30 | W_T_LO
W_T_HI = const(5)
W_SEQ = const(6)       # the next seq at the save
W_SOC = const(7)       # estimator soc_ppm (-1: none)
W_STD = const(8)       # estimator soc_std_ppm
W_FAULT = const(9)     # the run's fault bits
W_CAP = const(10)      # estimator cap_nAh, capacity (-1: none)
W_CAP_STD = const(11)  # estimator cap_std_nAh
W_R = const(12)        # estimator r_mohm, charge-transfer resistance (-1: none)
W_R_STD = const(13)    # estimator r_std_mohm
W_ENGINE = const(14)   # the step engine's words start here; offsets from it:
E_STEP_NO = const(0)
E_STEP_COUNT = const(1)
E_CYCLE = const(2)
E_FIRST_SIGN = const(3)
E_LAST_SIGN = const(4)
E_R_OHM = const(5)
E_I_CMD = const(6)     # i_cmd_nA: a CV step starts again from its last setpoint
E_STEP_TYPE = const(7)
E_ACC = const(8)       # steps.Engine.acc, N_ACC words
E_N_LOOPS = const(20)  # number of LOOP steps in the table
E_LOOPS = const(21)    # their remaining counts in table order, up to MAX_LOOPS words
N_DATA = const(W_ENGINE + E_LOOPS + MAX_LOOPS)
_SLOT_WORDS = const(N_DATA + 1)  # + the CRC word
SLOT_BYTES = const(_SLOT_WORDS * 4)


def t_ms(words):
    """The run time (ms) an entry's words hold."""
    return (words[W_T_HI] << 30) | words[W_T_LO]


def _crc_word(words):
    # CRC-32 of the data words' bytes, folded into a signed int32 for the 'i' array.
    c = binascii.crc32(memoryview(words)[:N_DATA]) & 0xFFFFFFFF
    return c - 0x100000000 if c & 0x80000000 else c


class Journal:
    """Two-slot journal in the file ``path``. ``words`` is the entry being built/read."""

    def __init__(self, path="journal.bin"):
        self.path = path
        self.words = array("i", bytes(SLOT_BYTES))
        self.gen = 0
        self.error = ""   # the last write's failure, "" if none

    def load(self):
        """Read the newest valid entry into ``words``; True if there is one.

        A missing file, a short file, a slot with a bad magic or CRC (torn write) are
        all "no entry" for that slot; never raises.
        """
        best = -1
        slot = array("i", bytes(SLOT_BYTES))
        try:
            f = open(self.path, "rb")
        except OSError:
            return False
        try:
            for k in range(2):
                f.seek(k * SLOT_BYTES)
                n = f.readinto(slot)
                if n != SLOT_BYTES or slot[_W_MAGIC] != _MAGIC or slot[N_DATA] != _crc_word(slot):
                    continue
                if slot[_W_GEN] > best:
                    best = slot[_W_GEN]
                    for j in range(_SLOT_WORDS):
                        self.words[j] = slot[j]
        except OSError:
            pass
        finally:
            f.close()
        if best < 0:
            return False
        self.gen = best
        return True

    def save(self):
        """Write ``words`` as the next entry (the other slot); True if it was written.

        Never raises: a flash error is kept in ``error`` and the run goes on.
        """
        w = self.words
        self.gen += 1
        w[_W_MAGIC] = _MAGIC
        w[_W_GEN] = self.gen
        w[N_DATA] = _crc_word(w)
        try:
            try:
                f = open(self.path, "r+b")
            except OSError:
                f = open(self.path, "w+b")
            try:
                f.seek((self.gen & 1) * SLOT_BYTES)
                f.write(w)
            finally:
                f.close()
        except OSError as ex:
            self.error = "journal: " + repr(ex)[:40]
            return False
        self.error = ""
        return True
