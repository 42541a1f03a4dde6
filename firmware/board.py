"""Board layer: the only firmware module that imports ``machine``.

Turns the board file (``board.json``, see boards/README.md) and the optional calibration
(``calibration.json``) into a :class:`Board` that sets a current and reads the cell. The
files are read, and their scales and tables worked out, by boardfile.py (imported at boot
and dropped after); this module holds the hardware objects and what runs every tick.

Units: voltages in integer microvolts (``_uV``), currents in integer nanoamps (``_nA``,
> 0 charges the cell), ADC values in converter codes. Every scale factor is worked out once
at load as an integer multiply-and-shift, so :meth:`Board.sample` uses only small ints
(below 2**30, which MicroPython keeps off the heap) and allocates nothing.
"""

import sys
import time

import machine

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_WDT_MAX_MS = const(8388)  # the RP2040 watchdog's longest timeout
_ADS_CONFIG = const(1)  # ADS1115 register addresses
_ADS_RESULT = const(0)


def mul(x, num, s, b):
    """``floor(x * num / 2**s)`` exactly, for a signed small int ``x``, without big ints.

    x = hi * 2**b + lo; hi * num is split at 2**(s - b) and its remainder joins lo * num.
    """
    t = (x >> b) * num
    sb = s - b
    return (t >> sb) + ((((t & ((1 << sb) - 1)) << b) + (x & ((1 << b) - 1)) * num) >> s)


class Board:
    """A coin-cell channel: current source, range switch, relay, ADCs, LED and watchdog.

    Public attributes (read-only for callers): ``id``, ``tick_ms``, ``oversample``,
    ``max_uV``/``min_uV``/``max_nA`` (board limits), ``range_max_nA``, ``v_uV``/``i_nA``
    (last calibrated sample), ``calibration_id`` ("" when none applied), ``cal_error``
    (why a calibration file was refused, "" otherwise), ``range`` (index of the selected
    current range, smallest first) and ``setpoint_nA`` (last applied setpoint); for the
    hardware checks of safety.py also ``range_fs_nA`` (each range's full scale),
    ``compliance_lo_uV``/``compliance_hi_uV``, ``raw_v``/``raw_i`` (the last sample's raw
    ADC sums) and ``raw_lo``/``raw_hi`` (those sums at the converters' rails).
    """

    # Set by boardfile from the board file and calibration (named here for the type check;
    # annotations alone cost no heap): sampling, source and range scales and tables.
    oversample: int
    _ext: bool
    _v_num: int
    _v_s: int
    _v_b: int
    _v_off: int
    _i_num: list
    _i_s: list
    _i_b: list
    _i_c: list
    _corr: dict
    _dense: "bytearray | None"
    _dense_zero: int
    _ads_addr: int
    _ads_wait_us: int
    _ads_v: bytearray
    _ads_i: bytearray
    _ads_buf: bytearray
    _src_type: str
    _full: int
    _mid_code: int
    _to_code: list
    _to_nA: list
    _ranges: list
    _pick_nA: list
    _limit_nA: int

    def __init__(self, cfg, cal=None):
        import boardfile  # the board file's numbers; board.load drops the module after
        cal = boardfile.limits(self, cfg, cal)
        boardfile.ranges(self, cfg["current"])
        boardfile.source(self, cfg["source"])
        boardfile.measure(self, cfg, cal)
        self.v_uV = 0
        self.i_nA = 0
        self.raw_v = 0  # raw sums of the last sample, in converter units
        self.raw_i = 0
        self.setpoint_nA = 0
        self.range = 0
        self._i2c_bus = {}
        self._i2c_freq = cfg.get("i2c_freq_hz", 400000)
        self._setup_pins(cfg)
        self._setup_source(cfg, cfg["source"])
        self._setup_measure(cfg)
        self._wdt = None
        self.wdt_ms = 0   # watchdog timeout once started (0: not running)

    # ---- construction: the hardware objects ---------------------------------------
    def _setup_pins(self, cfg):
        self._relay = machine.Pin(int(cfg["relay_pin"]), machine.Pin.OUT, value=0)
        self._led = machine.Pin(int(cfg["led_pin"]), machine.Pin.OUT, value=0)
        self._range_pins = [machine.Pin(int(p), machine.Pin.OUT, value=0)
                            for p in cfg["current"]["range_pins"]]

    def _i2c(self, bus, spec):
        if bus not in self._i2c_bus:
            self._i2c_bus[bus] = machine.I2C(bus, scl=machine.Pin(int(spec["scl"])),
                                             sda=machine.Pin(int(spec["sda"])),
                                             freq=int(self._i2c_freq))
        return self._i2c_bus[bus]

    def _setup_source(self, cfg, src):
        """The PWM or MCP4725 source (its type checked by boardfile.source), at 0 A."""
        if self._src_type == "pwm":
            self._pwm = machine.PWM(machine.Pin(int(src["pin"])))
            self._pwm.freq(int(src.get("freq_hz", 1908)))  # 1908: div 1, TOP 65513 (doc.source)
        else:
            bus = int(src.get("i2c", 0))
            pins = src if "sda" in src else (cfg.get("ext_adc") or {})
            self._dac = self._i2c(bus, pins)
            self._dac_addr = int(src.get("addr", 96))
            self._dac_buf = bytearray(2)
        self._write_code(self._mid_code)

    def _setup_measure(self, cfg):
        """The converters: the ADS1115 on its I2C bus, or the RP2040's two ADC pins."""
        if self._ext:
            ext = cfg["ext_adc"]
            self._ads = self._i2c(int(ext.get("i2c", 0)), ext)
        else:
            adc = cfg["adc"]
            self._vadc = machine.ADC(int(adc["voltage_pin"]))
            self._iadc = machine.ADC(int(adc["current_pin"]))

    # ---- sampling -----------------------------------------------------------------
    def _sum_adc(self):
        """Sums of ``oversample`` corrected 12-bit codes (1/16 LSB) of both channels.

        Reads alternate between the channels so both sums cover the same moment.
        """
        vadc = self._vadc
        iadc = self._iadc
        corr = self._corr
        va = 0
        ia = 0
        k = self.oversample
        tab = self._dense
        if tab is not None:
            z = self._dense_zero
            while k:
                c = vadc.read_u16() >> 4
                va += (c << 4) + tab[c] - z
                c = iadc.read_u16() >> 4
                ia += (c << 4) + tab[c] - z
                k -= 1
        while k:
            c = vadc.read_u16() >> 4
            va += (c << 4) + corr.get(c, 0)
            c = iadc.read_u16() >> 4
            ia += (c << 4) + corr.get(c, 0)
            k -= 1
        self.raw_v = va
        self.raw_i = ia

    def _sum_ads(self, config):
        """Sum of ``oversample`` single-shot ADS1115 conversions (signed 16-bit codes)."""
        acc = 0
        k = self.oversample
        while k:
            acc += self._ads_once(config)
            k -= 1
        return acc

    def sample(self):
        """Read voltage and current (oversampled, calibrated) into ``v_uV`` and ``i_nA``."""
        if self._ext:
            self.raw_v = self._sum_ads(self._ads_v)
            self.raw_i = self._sum_ads(self._ads_i)
        else:
            self._sum_adc()
        self.v_uV = mul(self.raw_v, self._v_num, self._v_s, self._v_b) + self._v_off
        k = self.range
        self.i_nA = mul(self.raw_i, self._i_num[k], self._i_s[k], self._i_b[k]) + self._i_c[k]

    # ---- calibration --------------------------------------------------------------
    def code_histogram(self, ch, n):
        """``{code: count}`` of ``n`` raw conversions of channel ``ch`` (0 voltage, 1 current).

        Raw: RP2040 12-bit codes before the correction table, or ADS1115 signed 16-bit
        codes; no scaling, no calibration. The host fits calibrations from these
        (cellbench.calibrate), whatever calibration the board has loaded. Allocates and
        takes n conversions, so it is for the idle board only, never for a tick.
        """
        counts: dict = {}
        if self._ext:
            config = self._ads_v if ch == 0 else self._ads_i
            for k in range(n):
                c = self._ads_once(config)
                counts[c] = counts.get(c, 0) + 1
                if k & 255 == 255:
                    self.feed()  # an ADS1115 conversion takes ~1.3 ms
        else:
            adc = self._vadc if ch == 0 else self._iadc
            for k in range(n):
                c = adc.read_u16() >> 4
                counts[c] = counts.get(c, 0) + 1
        return counts

    def _ads_once(self, config):
        """One single-shot ADS1115 conversion (signed 16-bit code); allocates nothing."""
        buf = self._ads_buf
        self._ads.writeto_mem(self._ads_addr, _ADS_CONFIG, config)
        time.sleep_us(self._ads_wait_us)
        tries = 10
        while tries:  # the OS bit reads 1 once the conversion is done
            self._ads.readfrom_mem_into(self._ads_addr, _ADS_CONFIG, buf)
            if buf[0] & 0x80:
                break
            time.sleep_us(100)
            tries -= 1
        self._ads.readfrom_mem_into(self._ads_addr, _ADS_RESULT, buf)
        code = (buf[0] << 8) | buf[1]
        return code - 65536 if code & 0x8000 else code

    # ---- output -------------------------------------------------------------------
    def _write_code(self, code):
        if self._src_type == "pwm":
            self._pwm.duty_u16(code)
        else:
            buf = self._dac_buf
            buf[0] = (code >> 8) & 0x0F  # fast-write command: power-down bits 00
            buf[1] = code & 0xFF
            self._dac.writeto(self._dac_addr, buf)

    def _select_range(self, k):
        if k != self.range:
            self._write_code(self._mid_code)  # 0 A while the set and sense resistors switch
            levels = self._ranges[k]["select"]
            for j in range(len(self._range_pins)):
                self._range_pins[j].value(levels[j])
            self.range = k

    def set_current(self, i_nA):
        """Source ``i_nA`` (> 0 charges): pick the range, set the source, close the relay.

        ``i_nA`` is clamped to the smaller of ``range_max_nA`` and the board's ``max_nA``.
        Returns the applied setpoint in nA after quantisation to the source's code.
        """
        lim = self._limit_nA
        i = lim if i_nA > lim else (-lim if i_nA < -lim else int(i_nA))
        mag = -i if i < 0 else i
        k = 0
        while k < len(self._pick_nA) - 1 and mag > self._pick_nA[k]:
            k += 1
        self._select_range(k)
        num, s, b = self._to_code[k]
        code = (self._full + mul(i, num, s, b) + 1) >> 1
        code = 0 if code < 0 else (self._full if code > self._full else code)
        self._write_code(code)
        self._relay.value(1)
        num, s, b = self._to_nA[k]
        self.setpoint_nA = mul(2 * code - self._full, num, s, b)
        return self.setpoint_nA

    def off(self):
        """Open the relay and set the source to mid-scale (0 A). Never raises."""
        try:
            self._relay.value(0)
        except Exception:
            pass
        try:
            self._write_code(self._mid_code)
        except Exception:
            pass
        self.setpoint_nA = 0

    def led(self, on):
        """Status LED on (truthy) or off."""
        self._led.value(1 if on else 0)

    def start_watchdog(self, timeout_ms):
        """Start the hardware watchdog (clamped to the RP2040's 1..8388 ms)."""
        self.wdt_ms = max(1, min(_WDT_MAX_MS, int(timeout_ms)))
        self._wdt = machine.WDT(timeout=self.wdt_ms)

    def feed(self):
        """Feed the watchdog (no-op before it is started)."""
        if self._wdt is not None:
            self._wdt.feed()


def load(board_path="board.json", cal_path="calibration.json"):
    """The Board from the board file and (if present) the calibration file, its current
    off and the watchdog running (boardfile.load says what is refused and how)."""
    import boardfile
    try:
        return boardfile.load(Board, board_path, cal_path)
    finally:
        sys.modules.pop("boardfile", None)  # boot-only code: no heap during a run
