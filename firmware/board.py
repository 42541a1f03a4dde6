"""Board layer: the only firmware module that imports ``machine``.

Turns the board file (``board.json``, see boards/README.md) and the optional calibration
(``calibration.json``) into a :class:`Board` that sets a current and reads the cell.

Units: voltages in integer microvolts (``_uV``), currents in integer nanoamps (``_nA``,
> 0 charges the cell), ADC values in converter codes. Every scale factor is worked out once
at load as an integer multiply-and-shift, so :meth:`Board.sample` uses only small ints
(below 2**30, which MicroPython keeps off the heap) and allocates nothing.
"""

import json
import time

import machine

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):  # type: ignore[misc]
        return x


_SUB = const(16)  # RP2040 codes are summed in 1/16 LSB so the correction table can hold fractions
_DENSE_MIN = const(256)  # more non-zero corrections than this: a 4096-byte table, not a dict
_DENSE_ZERO = const(128)  # a dense table holds delta (1/16 LSB) + _DENSE_ZERO in one unsigned byte
_WDT_MAX_MS = const(8388)  # the RP2040 watchdog's longest timeout
_ADS_CONFIG = const(1)  # ADS1115 register addresses
_ADS_RESULT = const(0)
ADS_PGA = {6144: 0, 4096: 1, 2048: 2, 1024: 3, 512: 4, 256: 5}  # fsr_mV -> PGA bits
ADS_DR = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}  # sps -> DR bits


def _dense_table():
    """4096 codes with delta 0: one 4 KB allocation, filled in place."""
    table = bytearray(4096)
    for c in range(4096):
        table[c] = _DENSE_ZERO
    return table


def _dense_entry(d):
    """A delta in 1/16 LSB as a dense table byte (clamped to what a byte holds)."""
    return (-_DENSE_ZERO if d < -_DENSE_ZERO else (127 if d > 127 else d)) + _DENSE_ZERO


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def scaler(r, max_x):
    """Integer factors ``(num, s, b)`` such that ``mul(x, num, s, b) == floor(x * num / 2**s)``
    with ``num / 2**s`` within 0.5/num of ``r`` (> 0), for any ``|x| <= max_x``.

    Every intermediate in :func:`mul` stays below 2**30, MicroPython's small-int limit on
    the RP2040, so scaling never allocates. Raises ValueError when the result itself
    could not fit.
    """
    bits = 1
    while (1 << bits) <= max_x:
        bits += 1
    best = None
    for b in range(bits + 1):  # the split that leaves room for the largest num
        num_max = 1 << (29 - max(b, bits - b))
        s = b
        if r * (1 << s) >= num_max:
            continue
        while s < 28 and r * (1 << (s + 1)) < num_max:
            s += 1
        num = int(r * (1 << s) + 0.5)
        if best is None or num > best[0]:
            best = (num, s, b)
    if best is None:
        raise ValueError("scale factor too large for small-int arithmetic")
    return best


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

    def __init__(self, cfg, cal=None):
        self.id = str(cfg["id"])
        self.tick_ms = int(cfg.get("tick_ms", 1000))
        self.oversample = max(1, min(64, int(cfg.get("oversample", 16))))
        lim = cfg["limits"]
        self.max_uV = int(round(lim["max_V"] * 1e6))
        self.min_uV = int(round(lim["min_V"] * 1e6))
        self.max_nA = int(round(lim["max_mA"] * 1e6))
        # The source's output range: a terminal there means no cell (safety.py OPEN_CIRCUIT).
        comp = cfg.get("compliance_V") or [0.0, 5.0]
        self.compliance_lo_uV = int(round(comp[0] * 1e6))
        self.compliance_hi_uV = int(round(comp[1] * 1e6))
        self.v_uV = 0
        self.i_nA = 0
        self.raw_v = 0  # raw sums of the last sample, in converter units
        self.raw_i = 0
        self.setpoint_nA = 0
        self.range = 0
        self.calibration_id = ""
        self.cal_error = ""
        if cal is not None and cal.get("board") != self.id:
            self.cal_error = "calibration: board %r does not match %r" % (cal.get("board"), self.id)
            cal = None
        if cal is not None:
            self.calibration_id = str(cal.get("id") or "%s@%s" % (self.id, cal.get("created", "")))
        self._i2c_bus = {}
        self._setup_pins(cfg)
        self._setup_ranges(cfg["current"])
        self._setup_source(cfg, cfg["source"])
        self._setup_measure(cfg, cal or {})
        self._wdt = None
        self.wdt_ms = 0   # watchdog timeout once started (0: not running)

    # ---- construction -------------------------------------------------------------
    def _setup_pins(self, cfg):
        self._relay = machine.Pin(int(cfg["relay_pin"]), machine.Pin.OUT, value=0)
        self._led = machine.Pin(int(cfg["led_pin"]), machine.Pin.OUT, value=0)
        self._range_pins = [machine.Pin(int(p), machine.Pin.OUT, value=0)
                            for p in cfg["current"]["range_pins"]]

    def _setup_ranges(self, cur):
        """Sort ranges smallest first; |I| <= margin * full scale picks a range."""
        rs = sorted(cur["ranges"], key=lambda r: r["full_scale_mA"])
        self._ranges = rs
        self.range_names = [str(r["name"]) for r in rs]
        self.range_fs_nA = [int(round(r["full_scale_mA"] * 1e6)) for r in rs]
        margin = float(cur.get("range_margin", 0.9))
        self._pick_nA = [int(fs * margin) for fs in self.range_fs_nA]
        self._pick_nA[-1] = self.range_fs_nA[-1]  # the largest range is used up to full scale
        self.range_max_nA = self.range_fs_nA[-1]
        self._limit_nA = min(self.range_max_nA, self.max_nA)

    def _i2c(self, bus, spec):
        if bus not in self._i2c_bus:
            self._i2c_bus[bus] = machine.I2C(bus, scl=machine.Pin(int(spec["scl"])),
                                             sda=machine.Pin(int(spec["sda"])),
                                             freq=int(self._i2c_freq))
        return self._i2c_bus[bus]

    def _setup_source(self, cfg, src):
        self._i2c_freq = cfg.get("i2c_freq_hz", 400000)
        self._src_type = src["type"]
        if self._src_type == "pwm":
            self._pwm = machine.PWM(machine.Pin(int(src["pin"])))
            self._pwm.freq(int(src.get("freq_hz", 1908)))  # 1908: div 1, TOP 65513 (doc.source)
            self._full = 65535
        elif self._src_type == "mcp4725":
            bus = int(src.get("i2c", 0))
            pins = src if "sda" in src else (cfg.get("ext_adc") or {})
            self._dac = self._i2c(bus, pins)
            self._dac_addr = int(src.get("addr", 96))
            self._dac_buf = bytearray(2)
            self._full = 4095
        else:
            raise ValueError("source.type: unknown %r" % self._src_type)
        self._mid_code = (self._full + 1) // 2
        # code = (full + floor(i * full / fs) + 1) >> 1 and back: i = (2 code - full) * fs / full
        self._to_code = [scaler(self._full / fs, fs) for fs in self.range_fs_nA]
        self._to_nA = [scaler(fs / self._full, self._full) for fs in self.range_fs_nA]
        self._write_code(self._mid_code)

    def _setup_measure(self, cfg, cal):
        n = self.oversample
        vg = float(cal.get("voltage", {}).get("gain", 1.0))
        self._v_off = int(round(float(cal.get("voltage", {}).get("offset_V", 0.0)) * 1e6))
        divider = float(cfg["voltage"]["divider"])
        self._ext = cfg.get("measure", "rp2040") == "ads1115"
        if self._ext:
            ext = cfg["ext_adc"]
            self._setup_ads(ext)
            volt_per_unit = ext["fsr_V"] / 32768 / n
            max_x = 32768 * n
            # Raw sums (raw_v, raw_i) at which a converter is at its rail (safety.py ADC_RAIL).
            self.raw_hi = 32767 * n
            self.raw_lo = -32768 * n
        else:
            adc = cfg["adc"]
            self._vadc = machine.ADC(int(adc["voltage_pin"]))
            self._iadc = machine.ADC(int(adc["current_pin"]))
            self._corr, self._dense = self._correction_table(cal.get("adc_correction"))
            volt_per_unit = adc["vref_V"] / 4096 / _SUB / n
            max_x = 4096 * _SUB * n
            self.raw_hi = (4095 * _SUB - _SUB // 2) * n  # every conversion at code 4095
            self.raw_lo = (_SUB // 2) * n                # every conversion at code 0
        self._v_num, self._v_s, self._v_b = scaler(volt_per_unit / divider * 1e6 * vg, max_x)
        self._setup_current_scale(cfg["current"], cal.get("current", {}), volt_per_unit, max_x)

    def _setup_current_scale(self, cur, cal_cur, volt_per_unit, max_x):
        """Per range: i_nA = mul(x, i_num, ...) + i_c with i_c holding mid-scale and offset."""
        mid_V = float(cur["mid_V"])
        self._i_num = []
        self._i_s = []
        self._i_b = []
        self._i_c = []
        for r in self._ranges:
            c = cal_cur.get(r["name"], {})
            g = float(c.get("gain", 1.0))
            ohm = r["sense_ohm"] * r["gain"]  # volts at the ADC per amp in the cell
            num, s, b = scaler(volt_per_unit / ohm * 1e9 * g, max_x)
            self._i_num.append(num)
            self._i_s.append(s)
            self._i_b.append(b)
            self._i_c.append(int(round(float(c.get("offset_A", 0.0)) * 1e9 - g * mid_V / ohm * 1e9)))

    def _correction_table(self, corr):
        """``(sparse, dense)`` deltas in 1/16 LSB from a {code: delta_codes} map, a 4096
        list, or ``{"segments": ...}`` (see _segment_table).

        Up to _DENSE_MIN non-zero deltas (the RP2040's few DNL spikes): a small dict and
        dense None. More (a full-range table such as the published default): {} and a
        4 KB bytearray holding delta + _DENSE_ZERO per code (a dict that size would cost
        tens of KB), deltas clamped to +-8 LSB.
        """
        if isinstance(corr, dict) and "segments" in corr:
            return {}, self._segment_table(corr["segments"])

        def items():
            if isinstance(corr, list):
                return enumerate(corr)
            return ((int(k), v) for k, v in (corr or {}).items())

        n = 0
        for code, delta in items():
            if int(round(float(delta) * _SUB)) and 0 <= code < 4096:
                n += 1
        dense = n > _DENSE_MIN
        table = _dense_table() if dense else {}
        for code, delta in items():
            d = int(round(float(delta) * _SUB))
            if d and 0 <= code < 4096:
                table[code] = _dense_entry(d) if dense else d
        return ({}, table) if dense else (table, None)

    def _segment_table(self, segments):
        """Dense table from ``[[first, last, delta_first, delta_last], ...]`` (LSB): linear
        within each segment of codes. A full-range table (the published default) stays
        a few hundred bytes of JSON instead of 4096 entries to parse."""
        table = _dense_table()
        for seg in segments:
            a, b = max(0, int(seg[0])), min(4095, int(seg[1]))
            d0, d1 = float(seg[2]), float(seg[3])
            for c in range(a, b + 1):
                d = d0 if b == a else d0 + (d1 - d0) * (c - a) / (b - a)
                table[c] = _dense_entry(int(round(d * _SUB)))
        return table

    def _setup_ads(self, ext):
        self._ads = self._i2c(int(ext.get("i2c", 0)), ext)
        self._ads_addr = int(ext.get("addr", 72))
        pga = ADS_PGA[int(round(ext["fsr_V"] * 1000))]
        sps = int(ext.get("sps", 860))
        dr = ADS_DR[sps]
        self._ads_wait_us = 1000000 // sps + 100
        # config: OS=1 start, MUX=100+ch single-ended, PGA, MODE=1 single-shot, DR, comparator off
        hi = lambda ch: 0x80 | ((4 + ch) << 4) | (pga << 1) | 1
        lo = (dr << 5) | 0x03
        self._ads_v = bytearray((hi(int(ext["voltage_ch"])), lo))
        self._ads_i = bytearray((hi(int(ext["current_ch"])), lo))
        self._ads_buf = bytearray(2)

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
            while k:
                c = vadc.read_u16() >> 4
                va += (c << 4) + tab[c] - _DENSE_ZERO
                c = iadc.read_u16() >> 4
                ia += (c << 4) + tab[c] - _DENSE_ZERO
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
    """Build the Board from the board file and (if present) the calibration file.

    The current is off and the watchdog running (board ``wdt_ms``) on return. A calibration
    for another board id is refused: it is not applied and ``cal_error`` says why. A
    calibration file that is not valid JSON, or has values of the wrong type, is refused
    the same way.
    """
    cfg = _read_json(board_path)
    cal = None
    cal_error = ""
    try:
        cal = _read_json(cal_path)
    except OSError:
        pass  # no calibration: nominal scale factors
    except ValueError:
        cal_error = "calibration: not valid JSON"
    if cal is not None and not isinstance(cal, dict):
        cal, cal_error = None, "calibration: must be a JSON object"
    try:
        b = Board(cfg, cal)
    except (TypeError, ValueError, KeyError, AttributeError) as ex:
        if cal is None:
            raise  # the board file itself is broken: nothing to fall back to
        b = Board(cfg, None)  # a calibration the firmware cannot use is refused whole
        cal_error = "calibration: unusable (%r)" % ex
    b.cal_error = b.cal_error or cal_error
    b.off()
    b.start_watchdog(cfg.get("wdt_ms", 5000))
    return b
