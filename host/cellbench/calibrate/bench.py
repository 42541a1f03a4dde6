"""Where the calibration points come from: the bench (what is connected) and the reference.

A :class:`Bench` gives the procedure a live :class:`cellbench.link.Link` and makes each
stimulus present: a reference voltage across the cell terminals, or a load the current
source can drive. The reference value of each point (what a calibrated multimeter
reads) comes from the user (:class:`TypedReference`), a fixture file
(:class:`FixtureReference`) or, on the simulated board, the plant's truth file
(:class:`TruthReference`). Units: V and A (current > 0 charges the cell).
"""

import json
import time
from pathlib import Path

from ..errors import InputError
from ..jsonfile import read_json
from ..link import Link

SIM_LOAD_V = (0.2, 4.6)    # the simulated reference source spans this (V at SoC 0..1)
SIM_LOAD_OHM = 50.0        # its series resistance: 20 mA moves the terminal by 1 V
SIM_LOAD_REST_V = 2.4      # where it sits for the current points


def _number(text, field):
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise InputError(f"{field}: {text!r} is not a number") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise InputError(f"{field}: {text!r} is not a finite number")
    return x


class SerialBench:
    """A real board on a serial port; the user connects what each stage needs."""

    settle_s = 0.25  # the source's 20 Hz output filter settles in well under this

    def __init__(self, port, say=print, ask=input, confirm=False):
        from ..transport import SerialTransport

        self.transport = SerialTransport(port)
        self.link = Link(self.transport)
        self.say = say
        self.ask = ask
        self.confirm = confirm  # wait for Enter at each voltage point (values from a fixture)

    def current_load(self, max_A):
        self.say("Connect the current load: a large rechargeable cell (a Li-ion 18650 near "
                 "3.7 V, or a NiMH AA) in series with the multimeter's current input "
                 f"(a range that reads +-{max_A * 1e3:.0f} mA) across the cell terminals.")
        self.ask("Press Enter when it is connected. ")

    def voltage_source(self, target_V, k):
        self.link.command("STOP")  # current off and relay open: the input only measures
        self.say(f"Voltage point {k + 1}: connect a reference voltage of about {target_V:.2f} V "
                 "across the cell terminals (a bench supply or a cell) and the multimeter, "
                 "in V, across the same terminals.")
        if self.confirm:
            self.ask("Press Enter when it is connected. ")

    def close(self):
        try:
            self.link.command("STOP")
        finally:
            self.transport.close()


class SimBench:
    """The simulated board with a reference source instead of a cell.

    The "cell" is a model whose open-circuit voltage rises linearly over SIM_LOAD_V with
    SoC, behind SIM_LOAD_OHM and with a capacity so large that calibration currents do
    not move it: a bench supply with a series resistor. A voltage point restarts the
    simulated board with the SoC that gives the target voltage (like connecting
    another reference). ``board``: a board name or file with a ``sim`` section.
    ``start``: what powers a board up (cellbench.sim.start_board's arguments); the
    emulated RP2040's cellbench.emu.board.start_board for ``rp2040-emu``.
    """

    settle_s = 0.0

    def __init__(self, board, workdir, seed=0, start=None):
        self.board = board
        self.start = start
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.model_path = self.workdir / "reference-source.json"
        self.model_path.write_text(json.dumps(reference_source_model()))
        self.sim = None
        self.link = None
        self.starts = 0

    def _restart(self, volts):
        from ..sim import start_board

        start = self.start or start_board
        self.close()
        lo, hi = SIM_LOAD_V
        soc0 = min(1.0, max(0.0, (volts - lo) / (hi - lo)))
        # a fresh directory each time: the plant resumes a cell found in an old one
        self.starts += 1
        self.sim = start(str(self.model_path), board=self.board, seed=self.seed + self.starts,
                               workdir=self.workdir / f"board{self.starts}", soc0=soc0)
        self.link = Link(self.sim)
        self.link.command("ID")

    def current_load(self, max_A):
        self._restart(SIM_LOAD_REST_V)

    def voltage_source(self, target_V, k):
        self._restart(target_V)

    def close(self):
        if self.sim is not None:
            self.sim.close()
            self.sim = None


def reference_source_model():
    """The simulated calibration source as a model file (docs/design.md, SI units)."""
    lo, hi = SIM_LOAD_V
    n = 11
    return {"schema_version": 1,
            "cell": {"name": "calibration reference source", "chemistry": "none",
                     "notes": f"linear {lo}-{hi} V source behind {SIM_LOAD_OHM} ohm"},
            "capacity_Ah": 1.0e6, "window_V": [lo, hi],
            "ocv": {"soc": [k / (n - 1) for k in range(n)],
                    "voltage_V": [lo + (hi - lo) * k / (n - 1) for k in range(n)]},
            "r0_ohm": SIM_LOAD_OHM, "rc": [],
            "hysteresis": {"m_V": 0.0, "m0_V": 0.0, "gamma": 0.0},
            "coulombic_efficiency": 1.0}


class TypedReference:
    """The user types what the multimeter reads (V, or mA for currents)."""

    def __init__(self, ask=input, say=print, tries=3):
        self.ask = ask
        self.say = say
        self.tries = tries

    def _read(self, prompt, field):
        for attempt in range(self.tries):
            text = self.ask(prompt).strip()
            try:
                return _number(text, field)
            except InputError as e:
                if attempt == self.tries - 1:
                    raise
                self.say(f"  {e}; try again")
        raise AssertionError("unreachable")

    def voltage(self, target_V, k):
        return self._read(f"  type the multimeter reading in V (about {target_V:.2f}): ",
                          f"voltage[{k}]")

    def current(self, set_A, k):
        return 1e-3 * self._read(f"  the board sources {set_A * 1e3:+.4f} mA; "
                                 "type the multimeter reading in mA: ", f"current[{k}]")


class FixtureReference:
    """Reference values from a fixture file (boards/README.md, "Calibration fixture").

    ``{"voltage_V": [..], "current": [{"set_mA": .., "ref_mA": ..}, ..]}``: the reference
    voltages connected in turn, as a reference meter read them; and the setpoints to
    force with what a reference meter read at each (the source is repeatable for a
    given setpoint and load, so a jig can be characterised once).
    """

    def __init__(self, path):
        spec = read_json(path, "fixture")
        self.voltages_V = [_number(v, f"fixture.voltage_V[{k}]")
                           for k, v in enumerate(spec.get("voltage_V") or [])]
        self.currents = []
        for k, p in enumerate(spec.get("current") or []):
            if not isinstance(p, dict):
                raise InputError(f"fixture.current[{k}]: must be {{\"set_mA\", \"ref_mA\"}}")
            self.currents.append((1e-3 * _number(p.get("set_mA"), f"fixture.current[{k}].set_mA"),
                                  1e-3 * _number(p.get("ref_mA"), f"fixture.current[{k}].ref_mA")))
        if len(self.voltages_V) < 2:
            raise InputError("fixture.voltage_V: need at least 2 reference voltages")
        if len(self.currents) < 2:
            raise InputError("fixture.current: need at least 2 points")

    def voltage(self, target_V, k):
        return self.voltages_V[k]

    def current(self, set_A, k):
        return self.currents[k][1]


class TruthReference:
    """The simulated plant's own record (its truth file) as the reference meter."""

    def __init__(self, bench):
        self.bench = bench

    def _last(self, column):
        from ..sim import read_truth

        flush = getattr(self.bench.sim, "flush_truth", None)
        if flush:  # the emulated board's plant writes its truth through a CPython buffer
            flush()
        truth = read_truth(self.bench.sim.truth_path)
        return float(truth[column][-1])

    def voltage(self, target_V, k):
        return self._last("v_V")

    def current(self, set_A, k):
        return self._last("i_A")


def pause(seconds):
    """Wait for a real source to settle (no-op for 0)."""
    if seconds > 0:
        time.sleep(seconds)
