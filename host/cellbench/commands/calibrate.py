"""``cellbench calibrate``: fit a board's calibration and write boards/calibration/<id>.json.

Voltage gain/offset and per-range current gain/offset by least squares from reference
points (typed multimeter readings, a fixture file, or on the simulated board its own
truth), and the RP2040 ADC's non-linearity table from a code-density ramp. ``cellbench
flash`` then installs the file on the board; runs record its id in the log's sidecar.
"""

import tempfile
from pathlib import Path

from ..boards import board_path, load_board
from ..calibrate import bench as benches
from ..calibrate import calibrate, default_plan, write_calibration
from ..errors import InputError
from ..outputs import check_output
from ..paths import CALIBRATIONS

NAME = "calibrate"
HELP = "calibrate a board's voltage and current paths and its ADC non-linearity"


def add_arguments(parser):
    parser.add_argument("--port", help="serial port of a real board (interactive, or with --fixture)")
    parser.add_argument("--board", help="board id or file; without --port a simulated board (its "
                        "'sim' section; the plant's truth is the reference meter), with --port "
                        "the board file (default: the id the board reports)")
    parser.add_argument("--fixture", help="JSON file of reference values (boards/README.md, "
                        "'Calibration fixture') instead of typed readings")
    parser.add_argument("--adc", choices=("measure", "default", "none"), default="measure",
                        help="RP2040 non-linearity table: measure it with a ramp (default), use "
                        "the published default table, or none")
    parser.add_argument("--out", help="calibration file to write (default: boards/calibration/<id>.json)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--seed", type=int, default=0, help="simulator noise seed (a simulated board)")
    parser.add_argument("--rp2-dir", "--rp2-image", dest="rp2_dir", metavar="DIR", help="with --board "
                        "rp2040-emu: directory of the MicroPython rp2 image (firmware.bin) and RP2040 "
                        "boot ROM (default $CELLBENCH_RP2_DIR)")


def _plan(board, fixture):
    if fixture is None:
        return default_plan(board)
    return {"voltage_V": list(fixture.voltages_V), "current_A": [s for s, _ in fixture.currents]}


def _out_path(args, board):
    path = Path(args.out) if args.out else CALIBRATIONS / f"{board['id']}.json"
    # Refused before an interactive session, not after.
    return check_output(path, args.force, inputs=(args.fixture,))


def _report(cal, path):
    v = cal["voltage"]
    fit = cal["fit"]
    print(f"voltage: gain {v['gain']:.6f}, offset {v['offset_V'] * 1e3:+.3f} mV; residuals "
          f"rms {fit['voltage']['rms_mV']:.3f} mV, max {fit['voltage']['max_mV']:.3f} mV "
          f"({fit['voltage']['points']} points)")
    for name, c in cal["current"].items():
        f = fit[name]
        print(f"current {name}: gain {c['gain']:.6f}, offset {c['offset_A'] * 1e6:+.4f} uA; "
              f"residuals rms {f['rms_uA']:.4f} uA, max {f['max_uA']:.4f} uA ({f['points']} points)")
    print(f"adc_correction: {len(cal.get('adc_correction', {}))} codes; {cal['provenance']}")
    print(f"wrote {path} (id {cal['id']}); `cellbench flash` installs it")


def simulated_bench(name, board, work, seed=0, rp2_dir=None):
    """The SimBench for board file ``board`` (its ``name`` or path): on the emulated RP2040
    (rp2040js running the rp2 image from ``rp2_dir``) for a board file marked ``emu``,
    never the unix-port simulator in its place; InputError saying why it cannot run."""
    start = None
    if board.get("emu"):
        from functools import partial

        from ..emu import runtime
        from ..emu.board import start_board

        runtime.require(board["id"], rp2_dir)
        start = partial(start_board, image=rp2_dir)
    return benches.SimBench(str(board_path(name)), work, seed=seed, start=start)


def run(args):
    if not (args.port or args.board):
        raise InputError("board: give --port PORT (a real board) or --board BOARD (simulated)")
    if args.out:  # before anything is read or started (the default path needs the board id)
        check_output(args.out, args.force, inputs=(args.fixture,))
    fixture = benches.FixtureReference(args.fixture) if args.fixture else None
    if args.port:
        bench = benches.SerialBench(args.port, confirm=fixture is not None)
        try:
            ident = bench.link.command("ID")
            board = load_board(args.board or ident.get("board", ""))
            reference = fixture or benches.TypedReference()
            out = _out_path(args, board)
            cal = calibrate(bench, reference, board, _plan(board, fixture), adc=args.adc)
        finally:
            bench.close()
    else:
        board = load_board(args.board)
        if not board.get("sim"):
            raise InputError(f"board: {board.get('id')!r} has no 'sim' section to simulate; "
                             "give --port for a real board")
        out = _out_path(args, board)
        with tempfile.TemporaryDirectory(prefix="cellbench-calibrate-") as work:
            bench = simulated_bench(args.board, board, work, args.seed, args.rp2_dir)
            try:
                reference = fixture or benches.TruthReference(bench)
                cal = calibrate(bench, reference, board, _plan(board, fixture), adc=args.adc)
            finally:
                bench.close()
    _report(cal, write_calibration(cal, out, force=args.force))
    return 0
