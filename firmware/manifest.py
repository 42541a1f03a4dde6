# (metadata() and module() are provided by MicroPython's manifest loader, not imports;
# cellbench.typecheck skips this file for that reason.)
# micropython-lib style manifest of the cellbench firmware (the files copied to the board).
# Freeze it into an rp2 build with FROZEN_MANIFEST=<this file>, or deploy the same files
# with mpy-cross + mpremote (docs/link.md describes what they speak once running).
# main.py is the entry point; board.py is the only module that imports `machine`.
# Installed compiled, never as source: from .py the board would compile at import and need
# its whole 180 KB heap to boot, from .mpy 128 KB. The bytecode in RAM is the same either
# way (67 KB); frozen into a build with FROZEN_MANIFEST=<this file> it stays in flash: 17.5 KB
# resident, 140 KB free after boot instead of 87 KB for the ring. Measured on the 64-bit
# unix port: BENCHMARKS.md "install" (host/cellbench/benchmarks/install.py).
metadata(version="0.1.0", description="cellbench coin-cell tester firmware")

module("frame.py")     # line frames with CRC-32
module("board.py")     # ADC, current source, relay, LED, watchdog
module("boardfile.py")  # the board file and calibration read into its scales (boot only)
module("safety.py")    # per-tick limits and fault bits
module("steps.py")     # the step engine
module("steptable.py")  # the step table check (LOAD imports it, then drops it)
module("runsetup.py")  # LOAD's table compiled, START's halves (loaded for those only)
module("record.py")    # record trigger and the acknowledged ring buffer
module("ekf.py")       # optional SoC estimator (the firmware runs without it)
module("kalman.py")    # its predict and update equations (every tick)
module("ekfsetup.py")  # its set-up from the model and RECOVER's restore (loaded for those only)
module("circuit.py")   # its equivalent-circuit tables and lookups
module("resistance.py")  # its slow R0 / charge-transfer resistance estimator (step edges)
module("edgefit.py")   # its measurements: step edges and their window fits
module("cellmodel.py")  # the model reader the estimator uses (MODEL: loaded for that only)
module("journal.py")   # the run journal in flash (recovery after a reset)
module("controller.py")  # the run state machine and its commands
module("runtick.py")   # the work of one tick
module("runjournal.py")  # what of a run the journal keeps, and when it is written
module("recovery.py")  # a run a reset interrupted: noted at boot, RECOVER (loaded for those only)
module("calibration.py")  # SET and HIST outside runs (loaded for those commands only)
module("status.py")    # STATUS's reply (loaded for the command only)
module("link.py")      # framed commands parsed and dispatched, replies and records out
module("idlegc.py")    # garbage collection between ticks
module("main.py")      # the tick loop
