"""The emulated board: the official MicroPython rp2 image on an emulated RP2040 (rp2040js,
driven by driver.mjs in a Node process) with the simulated cell behind its peripherals.

The plant is cellbench.sim's (``simcell.Plant``, the equivalent-circuit cell and the
board's analog side), here on the host instead of inside the unix port, on the emulator's
clock: every ADC conversion the chip starts is answered with the plant's 12-bit code at
that emulated instant (noise and the RP2040-E11 non-linearity included; a batch of the
channel's next codes comes with it, which the driver uses for at most the plant's 1 ms step
and drops at any pin or duty change, so a tick costs one round trip per channel), and every change
of the relay, range and LED pins or of the PWM duty that sets the current is handed to
the plant when the chip makes it. The PWM setpoint the plant sees is the slice's real duty
(compare / (top + 1)), not the duty_u16 the firmware asked for.

:class:`EmuBoard` is a :class:`cellbench.transport.Transport` over the chip's USB CDC
serial port, so the host's link code talks to it as to a serial port.
"""

import json
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from ..errors import InputError
from ..sim.mpy import simcell
from ..transport import Transport
from . import runtime

# Wall seconds the link waits for a reply (session.Session reads it): the emulator runs
# 2-4x slower than real time while the core is busy, more on a loaded machine, and a
# MODEL line (8 KB through the USB CDC, then parsed) keeps it busy for seconds.
REPLY_TIMEOUT_S = 60.0
FLASH_CACHE = Path(tempfile.gettempdir()) / "cellbench-emu-flash"  # installed flashes (start_board)
PIN_EVENTS = 10000  # watched-pin changes kept (EmuBoard.pin_events)
TEMP_SENSOR_CODE = 876  # ADC channel 4 at 27 degC: 0.706 V of 3.3 V in 12 bits
ADC_FIRST_PIN = 26  # ADC channel k is GPIO 26 + k


class EmuBoard(Transport):
    """A running emulated RP2040 with a simulated cell.

    ``flash``: a flash saved by :meth:`save_flash` to boot instead of the bare image.
    ``readline(timeout_s)`` gives the board's serial output line by line (wall-clock
    timeout); ``t_us`` is the emulated time in microseconds, ``resets`` the emulated times
    (us) of the chip's resets and ``reset_reasons`` their causes (driver.mjs: 1 the watchdog
    timer, 2 forced by machine.reset(), 3 the host's reset), ``pins`` the last level of each watched pin (0, 1, or 2
    for not driven), ``pin_events`` their changes as (t_us, gpio, level), ``duty`` the
    PWM source's last (num, den).
    """

    reply_timeout_s = REPLY_TIMEOUT_S

    def __init__(self, cfg, cell_model, image=None, workdir=None, seed=0, soc0=None,
                 timeout_s=120.0, faults="", flash=None):
        self.cfg = cfg
        src = cfg["source"]
        if src["type"] != "pwm":
            raise InputError("source.type: the emulated board drives the cell from a PWM source only")
        image_file, bootrom = runtime.image_files(image)
        runtime.install_rp2040js()
        self.work = Path(workdir) if workdir else None
        self.truth_path = (self.work / "truth.csv") if self.work else None
        self.timeout_s = timeout_s
        self.t_us = 0
        self.cycles = 0
        self.resets = []
        self.reset_reasons = []
        self.pins = {}
        self.pin_events = deque(maxlen=PIN_EVENTS)  # (t_us, gpio, level), newest last
        self.duty = None
        self.adc_reads = 0
        self._buf = bytearray()
        self._cv = threading.Condition()
        self._wlock = threading.Lock()
        self._flash_saved = None
        self._err = []
        sim = cfg.get("sim") or {}
        if soc0 is None:
            soc0 = float(cell_model.get("sim_soc0", sim.get("soc0", 1.0)))
        self.plant = simcell.Plant(cfg, simcell.Cell(cell_model, soc0), lambda: self.t_us, seed,
                                   str(self.truth_path) if self.truth_path else None, faults)
        self._adc_pins = {int(cfg["adc"]["voltage_pin"]), int(cfg["adc"]["current_pin"])}
        self._adc_batch = int(cfg.get("oversample", 16))  # codes per round trip: a tick's worth
        watch = [int(cfg["relay_pin"]), int(cfg["led_pin"])] + [int(p) for p in cfg["current"]["range_pins"]]
        args = {"bootrom": str(bootrom), "image": str(image_file), "watch": watch, "pwm": int(src["pin"])}
        if flash is not None:
            args["flash"] = str(flash)  # boot a saved flash (image and filesystem) instead
        self.proc = subprocess.Popen([runtime.node_binary(), str(runtime.DRIVER), json.dumps(args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=runtime.HERE)
        self._reader = threading.Thread(target=self._read_driver, daemon=True)
        self._reader.start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    # ---- the driver's messages -------------------------------------------------------
    def _send(self, line):
        with self._wlock:
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # the driver ended; readline reports it

    def _read_driver(self):
        for raw in self.proc.stdout:
            parts = raw.decode().split()
            if not parts:
                continue
            kind = parts[0]
            if kind == "F":
                with self._cv:
                    self._flash_saved = parts[1]
                    self._cv.notify_all()
                continue
            self.t_us = int(parts[1])
            if kind == "A":
                ch = int(parts[2])
                self._send("a " + " ".join(str(self._adc_code(ch)) for _ in range(self._adc_batch)))
            elif kind == "S":
                with self._cv:
                    self._buf += bytes.fromhex(parts[2]) if len(parts) > 2 else b""
                    self._cv.notify_all()
            elif kind == "G":
                self._pin(int(parts[2]), int(parts[3]))
            elif kind == "W":
                self.duty = (int(parts[2]), int(parts[3]))
                self.plant.set_code(self.duty[0], max(1, self.duty[1]))
            elif kind == "T":
                self.cycles = int(parts[2])
            elif kind == "R":
                with self._cv:
                    self.resets.append(self.t_us)
                    self.reset_reasons.append(int(parts[2]))
                    self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            self._err.append(raw.decode(errors="replace"))
            del self._err[:-50]

    def _adc_code(self, channel):
        """The 12-bit code the converter gives for ``channel`` now (the plant's, for the
        board's voltage and current pins; the temperature sensor at 27 degC; else 0)."""
        self.adc_reads += 1
        pin = ADC_FIRST_PIN + channel
        if pin in self._adc_pins:
            return self.plant.adc_u16(pin) >> 4
        return TEMP_SENSOR_CODE if channel == 4 else 0

    def _pin(self, pin, level):
        # A pin nobody drives (2) reads low at the relay's and the mux's inputs (pull-downs).
        self.pins[pin] = level
        self.pin_events.append((self.t_us, pin, level))
        self.plant.set_pin(pin, 1 if level == 1 else 0)

    def flush_truth(self):
        """Write the plant's buffered truth rows out, so the truth CSV is complete up to now."""
        if self.plant._truth is not None and not self.plant._truth.closed:
            self.plant._truth.flush()

    def stderr_text(self):
        """The driver's last lines on stderr (Node errors), for error messages."""
        return "".join(self._err)

    # ---- Transport --------------------------------------------------------------------
    def write(self, data):
        """Bytes to the board's serial port (in 1 KB messages)."""
        for k in range(0, len(data), 1024):
            self._send("s " + bytes(data[k:k + 1024]).hex())

    def read_until(self, marker, timeout_s=None):
        """The serial output up to and including ``marker`` (bytes); TimeoutError after
        ``timeout_s`` wall seconds without it, EOFError when the driver has ended."""
        limit = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        with self._cv:
            while True:
                k = self._buf.find(marker)
                if k >= 0:
                    out = bytes(self._buf[:k + len(marker)])
                    del self._buf[:k + len(marker)]
                    return out
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise EOFError(f"emulated board: driver ended ({self.stderr_text()[-300:]})")
                left = limit - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"emulated board: no {marker!r} in {timeout_s} s; "
                                       f"last output {bytes(self._buf[-200:])!r}")
                self._cv.wait(min(left, 0.5))

    def readline(self, timeout_s=None):
        """One line (with its newline) from the board's serial port; b"" when none came
        in ``timeout_s`` wall seconds or once the driver has ended."""
        try:
            return self.read_until(b"\n", timeout_s)
        except (TimeoutError, EOFError):
            return b""

    def drain(self):
        """Drop what the board has written and nobody read yet; returns it."""
        with self._cv:
            out = bytes(self._buf)
            self._buf.clear()
            return out

    @property
    def eof(self):
        return self.proc.poll() is not None and not self._reader.is_alive() and not self._buf

    def reset(self):
        """Reset the chip now, as its RUN pin (a reset button or a brown-out) would: it boots
        again from the same flash (firmware, journal) while the cell and the clock go on."""
        self._send("r")

    def wait_reset(self, count, timeout_s=60.0):
        """Wait until the chip has reset ``count`` times in all; TimeoutError otherwise."""
        limit = time.monotonic() + timeout_s
        with self._cv:
            while len(self.resets) < count:
                if time.monotonic() > limit or self.proc.poll() is not None:
                    raise TimeoutError(f"emulated board: no reset in {timeout_s} s")
                self._cv.wait(0.5)

    def save_flash(self, path, timeout_s=30.0):
        """Write the chip's 16 MB flash (image, filesystem, journal) to ``path``."""
        self._send(f"f {Path(path).resolve()}")
        limit = time.monotonic() + timeout_s
        with self._cv:
            while self._flash_saved is None and time.monotonic() < limit:
                self._cv.wait(0.5)
            done, self._flash_saved = self._flash_saved, None
        if done is None:
            raise TimeoutError("emulated board: flash not saved")

    def close(self, timeout_s=10.0):
        """Stop the emulator (the chip and the cell stop with it); safe to call twice."""
        if self.proc.poll() is None:
            self._send("q")
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        self._reader.join(timeout_s)
        # The plant's truth and state files are CPython-buffered here (MicroPython writes
        # them through): close them so the truth is complete once the board is closed.
        for f in (self.plant._truth, self.plant._state):
            if f is not None and not f.closed:
                f.close()
        return self.proc.returncode


def start_board(cell, board="rp2040-emu", calibration=None, image=None, workdir=None, seed=0,
                soc0=None, faults=""):
    """Power up an emulated board with the simulated cell ``cell`` (a model path or dict),
    with the firmware installed as ``cellbench flash`` would (install.install) and main.py
    running; returns the :class:`EmuBoard`, ready for the link.

    board: board name, path or dict (its ``sim`` section sets the plant's imperfections).
    calibration: None, a path, a dict, or ``"ideal"`` (cellbench.sim.ideal_calibration:
    the exact inverse of the plant's ADC non-linearity). image: the directory of the rp2
    image and boot ROM (default $CELLBENCH_RP2_DIR). workdir: where the plant's truth
    CSV goes (a new temporary directory if None).

    The installed flash is kept (FLASH_CACHE, keyed by the image, boot ROM and every file
    installed): the next board with the same files boots it straight into main.py, as a
    flashed board does at power-up, instead of installing again through the REPL.
    """
    import hashlib
    import os

    from ..boards import load_board
    from ..jsonfile import read_json
    from ..sim import ideal_calibration
    from .install import install, install_files

    cfg = load_board(board)
    model = cell if isinstance(cell, dict) else read_json(cell, "cell")
    if calibration == "ideal":
        calibration = ideal_calibration(cfg)
    elif calibration is not None and not isinstance(calibration, dict):
        calibration = read_json(calibration, "calibration")
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cellbench-emu-"))
    work.mkdir(parents=True, exist_ok=True)
    files = install_files(cfg, calibration)
    key = hashlib.sha1()
    for part in runtime.image_files(image):
        key.update(part.read_bytes())
    for name, data in files:
        key.update(name.encode() + b"\0" + data)
    cache = FLASH_CACHE / f"{key.hexdigest()[:20]}.bin"
    if cache.is_file():
        return EmuBoard(cfg, model, image=image, workdir=work, seed=seed, soc0=soc0, faults=faults,
                        flash=cache)
    b = EmuBoard(cfg, model, image=image, workdir=work, seed=seed, soc0=soc0, faults=faults)
    try:
        install(b, cfg, files=files, reset=False)
        FLASH_CACHE.mkdir(parents=True, exist_ok=True)
        part = cache.with_suffix(f".{os.getpid()}.part")
        b.save_flash(part)
        os.replace(part, cache)  # whole or absent: concurrent starts are safe
        b.reset()
        b.wait_reset(len(b.resets) + 1)
        b.drain()  # the raw REPL's last words are not the firmware's
    except BaseException:
        b.close()
        raise
    return b
