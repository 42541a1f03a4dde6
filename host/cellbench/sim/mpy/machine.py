"""Mock ``machine`` for the simulated board: the rp2 port's classes, forwarding to the plant.

Pin writes (relay, range select), PWM duty and the MCP4725 DAC drive the plant's source;
ADC reads and the ADS1115 come from it (simcell.py). The watchdog runs on virtual time:
if it is not fed within its timeout, a line goes to stderr and the process exits with
status WDT_EXIT, which is how a watchdog reset looks from outside. ``reset()`` exits
with RESET_EXIT.
"""

import json
import sys

import simcell
import time as _clock  # the virtual clock (time.py next to this file)

WDT_EXIT = 86
RESET_EXIT = 87

_plant = simcell.plant()


def _sense_errors(plant):
    """Gain and offset errors of the simulated sense paths (sim section ``sense_error``).

    What the ADCs see (both the RP2040 and the ADS1115) becomes, at the cell's terms,
    ``V * (1 + gain) + offset_V`` and, per range, ``I * (1 + gain) + offset_A``, as the
    divider's and sense resistors' tolerances and the amplifiers' offsets would make it;
    the plant's truth keeps the real V and I, which is what a calibration must recover.
    Wraps the plant's input update on this one instance, so simcell.py stays exact.
    """
    with open("board.json") as f:
        err = (json.load(f).get("sim") or {}).get("sense_error") or {}
    if not err:
        return
    v = err.get("voltage") or {}
    vg = 1.0 + float(v.get("gain", 0.0))
    vo = float(v.get("offset_V", 0.0))
    cur = err.get("current") or {}
    ig = [1.0 + float((cur.get(r["name"]) or {}).get("gain", 0.0)) for r in plant.ranges]
    io = [float((cur.get(r["name"]) or {}).get("offset_A", 0.0)) for r in plant.ranges]
    update = plant._update_inputs  # the exact one, bound to this plant
    half = simcell.ADC_Q // 2

    def update_with_errors():
        update()
        k = plant.range_index()
        plant.va_V = (plant.v_V * vg + vo) * plant.divider
        plant.ia_V = plant.mid_V + (plant.i_A * ig[k] + io[k]) * plant.v_per_A
        plant.xq[plant.v_pin] = int(plant.va_V * plant.q_per_V) + half
        plant.xq[plant.i_pin] = int(plant.ia_V * plant.q_per_V) + half

    plant._update_inputs = update_with_errors
    update_with_errors()


_sense_errors(_plant)


def _pin_id(p):
    return p.id if isinstance(p, Pin) else p


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 8
    IRQ_FALLING = 4

    def __init__(self, id, mode=-1, pull=-1, *, value=None, **kw):
        self.id = id
        self._v = 0
        self.mode = mode
        if value is not None:
            self.value(value)

    def init(self, mode=-1, pull=-1, *, value=None, **kw):
        if value is not None:
            self.value(value)

    def value(self, x=None):
        if x is None:
            return self._v
        self._v = 1 if x else 0
        _plant.set_pin(self.id, self._v)

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def high(self):
        self.value(1)

    def low(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self._v)

    def irq(self, handler=None, trigger=0, **kw):
        return None


class ADC:
    CORE_TEMP = 4

    def __init__(self, id, **kw):
        ch = _pin_id(id)
        self._pin = ch + 26 if isinstance(ch, int) and 0 <= ch <= 3 else ch

    def read_u16(self):
        return _plant.adc_u16(self._pin)


class PWM:
    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        self._pin = _pin_id(dest)
        self._freq = 1907
        self._duty = 0
        self.init(freq=freq, duty_u16=duty_u16)

    def init(self, *, freq=None, duty_u16=None, duty_ns=None, invert=False):
        if freq is not None:
            self._freq = int(freq)
        if duty_u16 is not None:
            self.duty_u16(duty_u16)

    def freq(self, hz=None):
        if hz is None:
            return self._freq
        self._freq = int(hz)

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = max(0, min(65535, int(value)))
        if self._pin == _plant.pwm_pin:
            _plant.set_code(self._duty, 65535)

    def duty_ns(self, value=None):
        if value is None:
            return self._duty * 1000000000 // (65536 * self._freq)
        self.duty_u16(int(value) * 65536 * self._freq // 1000000000)

    def deinit(self):
        # a stopped PWM slice drives its pin low: full negative setpoint, as on hardware
        self.duty_u16(0)


class _Ads1115:
    """Registers 0 (conversion) and 1 (config); single-shot converts on write with OS=1."""

    def __init__(self):
        self.ptr = 0
        self.config = 0x8583
        self.result = 0

    def _convert(self):
        mux = (self.config >> 12) & 7
        fsr = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)[(self.config >> 9) & 7]
        self.result = _plant.ads_code(mux - 4 if mux >= 4 else -1, fsr) & 0xFFFF

    def write(self, data):
        if len(data) >= 1:
            self.ptr = data[0] & 3
        if len(data) >= 3 and self.ptr == 1:
            self.config = (data[1] << 8) | data[2]
            if self.config & 0x8000 or not self.config & 0x0100:
                self._convert()  # single-shot start, or continuous mode

    def read(self, n):
        if self.ptr == 0:
            if not self.config & 0x0100:
                self._convert()  # continuous: a fresh conversion per read
            v = self.result
        else:
            v = self.config | 0x8000  # OS = 1: not converting
        return bytes(((v >> 8) & 0xFF, v & 0xFF))[:n]


class _Mcp4725:
    """12-bit DAC; drives the plant's source only when the board's source is this DAC."""

    def __init__(self, drives):
        self.code = 2048
        self.drives = drives

    def write(self, data):
        if len(data) >= 2 and not data[0] & 0xC0:  # fast write; PD bits 0x30 power it down
            self.code = 0 if data[0] & 0x30 else ((data[0] & 0x0F) << 8) | data[1]
        elif len(data) >= 3:  # write DAC register (0x40) or DAC + EEPROM (0x60)
            self.code = (data[1] << 4) | (data[2] >> 4)
        else:
            return
        if self.drives:
            _plant.set_code(self.code, 4095)

    def read(self, n):
        return bytes((0xC0, self.code >> 4, (self.code & 15) << 4, 0, 0))[:n]


_devices = {}


def _bus_devices():
    """Both I2C parts of the board are fitted: the ADS1115 (ext_adc's address, else 0x48)
    and the MCP4725 (the source's address, else 0x60)."""
    if not _devices:
        ext = _plant.ext or {}
        _devices[int(ext.get("addr", 72))] = _Ads1115()
        dac = _plant.dac_addr
        _devices[96 if dac is None else dac] = _Mcp4725(dac is not None)
    return _devices


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self._dev = _bus_devices()

    def _get(self, addr):
        d = self._dev.get(addr)
        if d is None:
            raise OSError(19)  # ENODEV: no ACK from that address
        return d

    def scan(self):
        return sorted(self._dev)

    def writeto(self, addr, buf, stop=True):
        self._get(addr).write(bytes(buf))
        return len(buf)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self._get(addr).write(bytes((memaddr,)) + bytes(buf))

    def readfrom(self, addr, nbytes, stop=True):
        return self._get(addr).read(nbytes)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._get(addr).read(len(buf))
        for k in range(len(data)):
            buf[k] = data[k]

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self._get(addr).write(bytes((memaddr,)))
        return self._get(addr).read(nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        self._get(addr).write(bytes((memaddr,)))
        self.readfrom_into(addr, buf)


class WDT:
    """Watchdog on virtual time: unfed for ``timeout`` ms -> stderr line, exit WDT_EXIT."""

    def __init__(self, id=0, timeout=5000):
        self.timeout_us = int(timeout) * 1000
        self.fed_us = _clock.now_us()
        self.feeds = 0
        _clock.add_hook(self._check)

    def feed(self):
        self.fed_us = _clock.now_us()
        self.feeds += 1

    def _check(self, now_us):
        if now_us - self.fed_us > self.timeout_us:
            sys.stderr.write("machine.WDT: watchdog reset at t=%.3f s (not fed for %d ms)\n"
                             % (now_us * 1e-6, (now_us - self.fed_us) // 1000))
            sys.exit(WDT_EXIT)


class Timer:
    """Virtual-time timer; callbacks run when virtual time passes their due time."""

    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, *, mode=1, freq=-1, period=-1, tick_hz=1000, callback=None):
        self._cb = None
        self._due = 0
        self._period_us = 0
        self._mode = mode
        _clock.add_hook(self._check)
        if callback is not None:
            self.init(mode=mode, freq=freq, period=period, tick_hz=tick_hz, callback=callback)

    def init(self, *, mode=1, freq=-1, period=-1, tick_hz=1000, callback=None):
        self._mode = mode
        self._period_us = int(1000000 / freq) if freq > 0 else int(period * 1000000 // tick_hz)
        self._due = _clock.now_us() + self._period_us
        self._cb = callback

    def deinit(self):
        self._cb = None

    def _check(self, now_us):
        while self._cb is not None and now_us >= self._due:
            cb = self._cb
            if self._mode == Timer.PERIODIC:
                self._due += max(1, self._period_us)
            else:
                self._cb = None
            cb(self)


def reset():
    sys.stderr.write("machine.reset() at t=%.3f s\n" % (_clock.now_us() * 1e-6))
    sys.exit(RESET_EXIT)


soft_reset = reset


def bootloader(value=None):
    reset()


def unique_id():
    return bytes((0xE6, 0x61, 0x38, 0x97, 0x5B, 0x4A, 0x2D, 0x31))


def freq(hz=None):
    return 125000000 if hz is None else None


def idle():
    _clock.advance_us(1000)  # rp2 idles until the next 1 ms system tick at the latest


def lightsleep(ms=0):
    _clock.advance_us(int(ms) * 1000)


deepsleep = lightsleep


def disable_irq():
    return 0


def enable_irq(state=0):
    return None
