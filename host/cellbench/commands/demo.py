"""``cellbench demo``: the paper's LTO/Li rate test on the simulated board, end to end.

``--board rp2040-emu`` runs it on the emulated RP2040 instead (cellbench.emu: the official
rp2 image in rp2040js, the firmware installed as ``cellbench flash`` installs it): the
same figures from the real rp2 port, at the emulator's speed (much slower than the
unix-port simulator: make bench's "emulated seconds per wall second").

Runs protocols/lto-rate-test.json on the simulated board with the LTO preset cell
(models/lto-li-coin.json, 2 mg of LTO), writes <out>/lto-rate.bdf.csv and its sidecar, runs
``cellbench analyze`` on that log into <out>/lto-rate_analysis/ (cycles.csv, summary.json,
rates.txt, dqdv.csv, figures) and prints the mean discharge capacity per rate block next to
the paper's figures.
"""

import sys
import time
from pathlib import Path

from .. import session
from ..bdflog import sidecar_path
from ..errors import InputError
from ..outputs import check_output, check_output_dir
from ..link import LinkError
from .run import EMU_BOARD, Progress, calibration_file, report_link_error
from ..paths import MODELS, PROTOCOLS

NAME = "demo"
HELP = "simulate the paper's LTO/Li rate test and print capacity per rate (mAh/g)"

PROTOCOL = PROTOCOLS / "lto-rate-test.json"
CELL = MODELS / "lto-li-coin.json"
MASS_MG = 2.0
# A 2 s tick keeps the ~140 h of test time under two minutes of wall time; the 10C
# half cycles (about a second of real capacity) then end within one tick of the cut-off.
TICK_MS = 2000
# Ding et al., rate test, mean discharge capacity per block of five cycles (mAh/g).
PAPER_MAH_G = [(0.2, 210.0), (0.5, 167.0), (1.0, 150.0), (3.0, 91.0), (5.0, 59.0), (10.0, 0.8),
               (0.2, 177.0)]


def add_arguments(parser):
    parser.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    parser.add_argument("--force", action="store_true",
                        help="overwrite the demo's log and analysis in --out if they exist")
    parser.add_argument("--seed", type=int, default=0, help="simulator noise seed")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--board", choices=("sim", EMU_BOARD), default="sim",
                        help="sim (the unix-port simulator, default) or rp2040-emu (the emulated RP2040)")
    parser.add_argument("--rp2-dir", "--rp2-image", dest="rp2_dir", metavar="DIR", help="with --board "
                        "rp2040-emu: directory of the MicroPython rp2 image (firmware.bin) and RP2040 "
                        "boot ROM (default $CELLBENCH_RP2_DIR)")


def analyze_demo(log_path, out_dir):
    """Run ``cellbench analyze`` on the demo's own log: tables and figures into out_dir.

    Returns the AnalysisResult (its rate blocks feed the printed table)."""
    from ..analyze import analyze_log

    return analyze_log(log_path, mass_mg=MASS_MG, out_dir=out_dir, figures=True)


def rate_rows(result):
    """(rate in C, rate label, cycles, mean mAh/g) per rate block of an AnalysisResult."""
    from ..analyze.rates import rate_label

    return [(b["rate"] if b["rate_unit"] == "C" else None, rate_label(b["rate"], b["rate_unit"]),
             f"{b['first_cycle']}-{b['last_cycle']}", b["mean_q_dch"]) for b in result.rate_blocks]


def paper_values(rows, tol=0.1):
    """The paper's figure for each block: the first unused entry at the same C-rate."""
    unused = list(PAPER_MAH_G)
    out = []
    for rate, *_ in rows:
        match = next((p for p in unused if rate and abs(p[0] - rate) <= tol * p[0]), None)
        if match:
            unused.remove(match)
        out.append(match[1] if match else None)
    return out


def format_table(rows):
    """Measured blocks side by side with the paper's values."""
    lines = [f"{'rate':<8}{'cycles':<10}{'sim mAh/g':>10}{'paper mAh/g':>13}"]
    for (_, label, cycles, q), paper in zip(rows, paper_values(rows)):
        ref = "" if paper is None else f"{paper:.1f}"
        lines.append(f"{label:<8}{cycles:<10}{q:>10.1f}{ref:>13}")
    return "\n".join(lines)


def start_demo_board(args):
    """The demo's board with the LTO cell: the unix-port simulator, or the emulated RP2040;
    with the board's calibration file if it has one, as `cellbench flash` installs it."""
    if args.board == EMU_BOARD:
        from ..emu.board import start_board as start_emulated

        return start_emulated(CELL, board=EMU_BOARD, calibration=calibration_file(EMU_BOARD),
                              image=args.rp2_dir, seed=args.seed)
    from ..sim import start_board

    return start_board(str(CELL), board="sim", calibration=calibration_file("sim"), seed=args.seed)


def run(args):
    for path, what in ((PROTOCOL, "protocol"), (CELL, "cell")):
        if not path.is_file():
            raise InputError(f"{what}: {path} is missing")
    out = Path(args.out)
    log = out / "lto-rate.bdf.csv"
    analysis = out / "lto-rate_analysis"
    for path in (log, sidecar_path(log)):
        check_output(path, args.force)
    check_output_dir(analysis, args.force)
    if args.board == EMU_BOARD:  # before anything is written
        from ..emu import runtime

        runtime.require(EMU_BOARD, args.rp2_dir)
    out.mkdir(parents=True, exist_ok=True)
    wall0 = time.monotonic()
    board = start_demo_board(args)
    try:
        # No estimator model: the board's filter about doubles the firmware's cost per tick
        # under the unix port, which would put the demo over its two-minute budget on a
        # loaded machine (`cellbench run ... --model` shows the SoC columns and figure).
        summary = session.run(PROTOCOL, board, log, board=args.board, mass_mg=MASS_MG,
                              tick_ms=TICK_MS, force=args.force,
                              progress=None if args.quiet else Progress.for_run,
                              extra_meta={"sim": {"cell_file": str(CELL), "seed": args.seed}})
    except LinkError as exc:
        report_link_error(exc, board)
        return 1
    except session.Interrupted as exc:
        print(f"cellbench: interrupted: the current is off; log {log} holds "
              f"{exc.summary['rows']} records; run `cellbench demo` again to start over",
              file=sys.stderr)
        return 130
    finally:
        board.close()
    wall = time.monotonic() - wall0
    print(f"log: {log} ({summary['rows']} rows, {summary.get('test_time_s', 0) / 3600:.1f} h "
          f"of test time in {wall:.0f} s), stopped: {summary['stop_reason']}")
    result = analyze_demo(log, analysis)
    print(format_table(rate_rows(result)))
    print(f"analysis: {len(result.files)} files (cycles.csv, summary.json, figures) in {analysis}")
    return 0 if summary["stop_reason"] != "link lost" else 1
