"""The board file (``board.json``, boards/README.md) and the calibration
(``calibration.json``) read into a board's integer scales, tables and limits.

Plain Python without ``machine`` (imports under CPython): board.py builds the hardware
objects (pins, source, converters), this module the numbers they are driven with. Board
imports it at boot (board.load) and drops it after, so its bytecode holds no heap while
a run goes on; what runs every tick is board.py's.

Units: voltages in integer microvolts (``_uV``), currents in integer nanoamps (``_nA``,
> 0 charges the cell), ADC values in converter codes. Every scale factor is an integer
multiply-and-shift (``scaler``, applied by ``board.mul``) whose intermediates stay below
2**30, so sampling uses only small ints and allocates nothing.
"""

import json

SUB = 16  # RP2040 codes are summed in 1/16 LSB so the correction table can hold fractions
DENSE_MIN = 256  # more non-zero corrections than this: a 4096-byte table, not a dict
DENSE_ZERO = 128  # a dense table holds delta (1/16 LSB) + DENSE_ZERO in one unsigned byte
ADS_PGA = {6144: 0, 4096: 1, 2048: 2, 1024: 3, 512: 4, 256: 5}  # fsr_mV -> PGA bits
ADS_DR = {8: 0, 16: 1, 32: 2, 64: 3, 128: 4, 250: 5, 475: 6, 860: 7}  # sps -> DR bits


def load(board_cls, board_path, cal_path):
    """``board_cls(cfg, cal)`` from the board file and (if present) the calibration file,
    its current off and the watchdog running (board ``wdt_ms``).

    A calibration for another board id is refused: it is not applied and ``cal_error``
    says why. A calibration file that is not valid JSON, or has values of the wrong type,
    is refused the same way. A broken board file raises (nothing to fall back to).
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
        b = board_cls(cfg, cal)
    except (TypeError, ValueError, KeyError, AttributeError) as ex:
        if cal is None:
            raise  # the board file itself is broken: nothing to fall back to
        b = board_cls(cfg, None)  # a calibration the firmware cannot use is refused whole
        cal_error = "calibration: unusable (%r)" % ex
    b.cal_error = b.cal_error or cal_error
    b.off()
    b.start_watchdog(cfg.get("wdt_ms", 5000))
    return b


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def limits(b, cfg, cal):
    """Identity, tick, oversampling, the board's limits and the calibration's id onto b;
    returns the calibration to apply ({} for none: missing, or for another board)."""
    b.id = str(cfg["id"])
    b.tick_ms = int(cfg.get("tick_ms", 1000))
    b.oversample = max(1, min(64, int(cfg.get("oversample", 16))))
    lim = cfg["limits"]
    b.max_uV = int(round(lim["max_V"] * 1e6))
    b.min_uV = int(round(lim["min_V"] * 1e6))
    b.max_nA = int(round(lim["max_mA"] * 1e6))
    # The source's output range: a terminal there means no cell (safety.py OPEN_CIRCUIT).
    comp = cfg.get("compliance_V") or [0.0, 5.0]
    b.compliance_lo_uV = int(round(comp[0] * 1e6))
    b.compliance_hi_uV = int(round(comp[1] * 1e6))
    b.calibration_id = ""
    b.cal_error = ""
    if cal is not None and cal.get("board") != b.id:
        b.cal_error = "calibration: board %r does not match %r" % (cal.get("board"), b.id)
        cal = None
    if cal is not None:
        b.calibration_id = str(cal.get("id") or "%s@%s" % (b.id, cal.get("created", "")))
    return cal or {}


def ranges(b, cur):
    """Current ranges sorted smallest first; |I| <= margin * full scale picks a range."""
    rs = sorted(cur["ranges"], key=lambda r: r["full_scale_mA"])
    b._ranges = rs
    b.range_names = [str(r["name"]) for r in rs]
    b.range_fs_nA = [int(round(r["full_scale_mA"] * 1e6)) for r in rs]
    margin = float(cur.get("range_margin", 0.9))
    b._pick_nA = [int(fs * margin) for fs in b.range_fs_nA]
    b._pick_nA[-1] = b.range_fs_nA[-1]  # the largest range is used up to full scale
    b.range_max_nA = b.range_fs_nA[-1]
    b._limit_nA = min(b.range_max_nA, b.max_nA)


def source(b, src):
    """The source's full-scale code, mid-scale (0 A) code and per-range code <-> nA scales."""
    kind = src["type"]
    if kind not in ("pwm", "mcp4725"):
        raise ValueError("source.type: unknown %r" % kind)
    b._src_type = kind
    b._full = 65535 if kind == "pwm" else 4095
    b._mid_code = (b._full + 1) // 2
    # code = (full + floor(i * full / fs) + 1) >> 1 and back: i = (2 code - full) * fs / full
    b._to_code = [scaler(b._full / fs, fs) for fs in b.range_fs_nA]
    b._to_nA = [scaler(fs / b._full, b._full) for fs in b.range_fs_nA]


def measure(b, cfg, cal):
    """Voltage and current scales from raw converter sums, the converters' rails (raw_lo,
    raw_hi: safety.py ADC_RAIL) and, on the RP2040's ADC, its correction table."""
    n = b.oversample
    vg = float(cal.get("voltage", {}).get("gain", 1.0))
    b._v_off = int(round(float(cal.get("voltage", {}).get("offset_V", 0.0)) * 1e6))
    divider = float(cfg["voltage"]["divider"])
    b._ext = cfg.get("measure", "rp2040") == "ads1115"
    b._dense_zero = DENSE_ZERO
    if b._ext:
        ext = cfg["ext_adc"]
        _ads(b, ext)
        volt_per_unit = ext["fsr_V"] / 32768 / n
        max_x = 32768 * n
        b.raw_hi = 32767 * n
        b.raw_lo = -32768 * n
    else:
        b._corr, b._dense = _correction_table(cal.get("adc_correction"))
        volt_per_unit = cfg["adc"]["vref_V"] / 4096 / SUB / n
        max_x = 4096 * SUB * n
        b.raw_hi = (4095 * SUB - SUB // 2) * n  # every conversion at code 4095
        b.raw_lo = (SUB // 2) * n               # every conversion at code 0
    b._v_num, b._v_s, b._v_b = scaler(volt_per_unit / divider * 1e6 * vg, max_x)
    _current_scale(b, cfg["current"], cal.get("current", {}), volt_per_unit, max_x)


def _current_scale(b, cur, cal_cur, volt_per_unit, max_x):
    """Per range: i_nA = mul(x, i_num, ...) + i_c with i_c holding mid-scale and offset."""
    mid_V = float(cur["mid_V"])
    b._i_num = []
    b._i_s = []
    b._i_b = []
    b._i_c = []
    for r in b._ranges:
        c = cal_cur.get(r["name"], {})
        g = float(c.get("gain", 1.0))
        ohm = r["sense_ohm"] * r["gain"]  # volts at the ADC per amp in the cell
        num, s, sb = scaler(volt_per_unit / ohm * 1e9 * g, max_x)
        b._i_num.append(num)
        b._i_s.append(s)
        b._i_b.append(sb)
        b._i_c.append(int(round(float(c.get("offset_A", 0.0)) * 1e9 - g * mid_V / ohm * 1e9)))


def _ads(b, ext):
    """The ADS1115's address, conversion wait and the config words of both channels."""
    b._ads_addr = int(ext.get("addr", 72))
    pga = ADS_PGA[int(round(ext["fsr_V"] * 1000))]
    sps = int(ext.get("sps", 860))
    dr = ADS_DR[sps]
    b._ads_wait_us = 1000000 // sps + 100
    # config: OS=1 start, MUX=100+ch single-ended, PGA, MODE=1 single-shot, DR, comparator off
    hi = lambda ch: 0x80 | ((4 + ch) << 4) | (pga << 1) | 1
    lo = (dr << 5) | 0x03
    b._ads_v = bytearray((hi(int(ext["voltage_ch"])), lo))
    b._ads_i = bytearray((hi(int(ext["current_ch"])), lo))
    b._ads_buf = bytearray(2)


def _correction_table(corr):
    """``(sparse, dense)`` deltas in 1/16 LSB from a {code: delta_codes} map, a 4096
    list, or ``{"segments": ...}`` (see _segment_table).

    Up to DENSE_MIN non-zero deltas (the RP2040's few DNL spikes): a small dict and
    dense None. More (a full-range table such as the published default): {} and a
    4 KB bytearray holding delta + DENSE_ZERO per code (a dict that size would cost
    tens of KB), deltas clamped to +-8 LSB.
    """
    if isinstance(corr, dict) and "segments" in corr:
        return {}, _segment_table(corr["segments"])

    def items():
        if isinstance(corr, list):
            return enumerate(corr)
        return ((int(k), v) for k, v in (corr or {}).items())

    n = 0
    for code, delta in items():
        if int(round(float(delta) * SUB)) and 0 <= code < 4096:
            n += 1
    dense = n > DENSE_MIN
    table = _dense_table() if dense else {}
    for code, delta in items():
        d = int(round(float(delta) * SUB))
        if d and 0 <= code < 4096:
            table[code] = _dense_entry(d) if dense else d
    return ({}, table) if dense else (table, None)


def _segment_table(segments):
    """Dense table from ``[[first, last, delta_first, delta_last], ...]`` (LSB): linear
    within each segment of codes. A full-range table (the published default) stays
    a few hundred bytes of JSON instead of 4096 entries to parse."""
    table = _dense_table()
    for seg in segments:
        a, b = max(0, int(seg[0])), min(4095, int(seg[1]))
        d0, d1 = float(seg[2]), float(seg[3])
        for c in range(a, b + 1):
            d = d0 if b == a else d0 + (d1 - d0) * (c - a) / (b - a)
            table[c] = _dense_entry(int(round(d * SUB)))
    return table


def _dense_table():
    """4096 codes with delta 0: one 4 KB allocation, filled in place."""
    table = bytearray(4096)
    for c in range(4096):
        table[c] = DENSE_ZERO
    return table


def _dense_entry(d):
    """A delta in 1/16 LSB as a dense table byte (clamped to what a byte holds)."""
    return (-DENSE_ZERO if d < -DENSE_ZERO else (127 if d > 127 else d)) + DENSE_ZERO


def scaler(r, max_x):
    """Integer factors ``(num, s, b)`` such that ``board.mul(x, num, s, b) ==
    floor(x * num / 2**s)`` with ``num / 2**s`` within 0.5/num of ``r`` (> 0), for any
    ``|x| <= max_x``.

    Every intermediate in ``board.mul`` stays below 2**30, MicroPython's small-int limit
    on the RP2040, so scaling never allocates. Raises ValueError when the result itself
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
