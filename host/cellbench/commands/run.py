"""``cellbench run``: run a protocol on a board (real, or simulated) and log it as BDF.

The command opens the board, shows a status line while :mod:`cellbench.session` runs the
protocol, and says how the run ended (or, after Ctrl-C, how to continue it).
"""

import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

from .. import bdflog, protocol as proto, session
from ..boards import calibration_path, load_board
from ..errors import InputError
from ..link import LinkError
from ..transport import Interruptible

EMU_BOARD = "rp2040-emu"  # the board id that runs on the emulated RP2040 (cellbench.emu)

PROGRESS_PERIOD_S = 0.25

NAME = "run"
HELP = "run an aurora-unicycler protocol on a board and write a BDF log"


def add_arguments(parser):
    parser.add_argument("protocol", nargs="?",
                        help="protocol JSON file (aurora-unicycler format); not with --resume")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", help="serial port of a real board (e.g. /dev/ttyACM0)")
    where.add_argument("--cell", help="cell model file (models/*.json) of the simulated cell (a simulated board)")
    where.add_argument("--board-dir", help="directory of a detached simulated board "
                       "(started with --cell ... --detach-dir)")
    parser.add_argument("--board", help="board id or board file (default: sim with --cell, "
                        "else the id the board reports)")
    parser.add_argument("--out", help="log to write, e.g. run.bdf.csv (sidecar: run.bdf.csv.json)")
    parser.add_argument("--mass-mg", type=float, help="active mass in mg (for mAh/g)")
    parser.add_argument("--model", help="cell model file (models/*.json) for the board's SoC estimator")
    parser.add_argument("--tick-ms", type=int, help="sampling tick in ms (default: the board's)")
    parser.add_argument("--seed", type=int, default=0, help="simulator noise seed (a simulated board)")
    parser.add_argument("--rp2-dir", "--rp2-image", dest="rp2_dir", metavar="DIR", help="with --cell --board rp2040-emu: directory of the MicroPython "
                        "rp2 image (firmware.bin) and RP2040 boot ROM (default $CELLBENCH_RP2_DIR)")
    parser.add_argument("--detach-dir", help="with --cell: run the simulated board detached in "
                        "this directory, so that it outlives this process (see --resume)")
    parser.add_argument("--keep-board", action="store_true", help="leave a detached simulated "
                        "board running after the run ends")
    parser.add_argument("--resume", metavar="LOG", help="reattach to the board (--port or "
                        "--board-dir) of an interrupted run and complete its log LOG")
    parser.add_argument("--recover", action="store_true", help="with --resume: continue a "
                        "run whose board was reset mid-run from the board's journal (LOAD the "
                        "log's step table again, then RECOVER)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def open_transport(args, board_file=None):
    """(transport, board) for the arguments: a started SimBoard, a detached simulated
    board (started now with --detach-dir, or an existing one with --board-dir), or a
    serial port. ``board_file``: the board file dict already read, if any."""
    if args.cell:
        board = args.board or "sim"
        cell = Path(args.cell)
        if not cell.is_file():
            raise InputError(f"cell: no such model file {cell}")
        cal = calibration_file(board_file or board)
        cfg = board_file or load_board(board)
        if cfg.get("id") == EMU_BOARD:
            return start_emulated(args, cfg, cell, cal), board
        if args.detach_dir:
            from ..sim import detached

            # reboot: a killed board process boots again, as a real board after a reset
            detached.spawn(cell, args.detach_dir, board=board, seed=args.seed,
                           calibration=cal, reboot=True)
            return detached.DetachedTransport(args.detach_dir), board
        from ..sim import start_board

        return start_board(str(cell), board=board_file or board, seed=args.seed,
                           calibration=cal), board
    if args.board_dir:
        from ..sim import detached

        return detached.DetachedTransport(args.board_dir), args.board
    from ..transport import SerialTransport

    return SerialTransport(args.port), args.board


def start_emulated(args, cfg, cell, calibration):
    """The emulated board (``--board rp2040-emu``): the rp2 image from --rp2-dir in rp2040js,
    the firmware, board file and calibration installed as `cellbench flash` installs them,
    the cell ``cell`` behind its ADC and PWM; its truth CSV in a new temporary folder."""
    from ..emu.board import start_board

    if args.detach_dir:
        raise InputError(f"detach_dir: not with --board {EMU_BOARD} (the emulated chip ends with this process)")
    return start_board(cell, board=cfg, calibration=calibration, image=args.rp2_dir, seed=args.seed)


def calibration_file(board):
    """boards/calibration/<board-id>.json of a board (name, file or dict), if it exists (issue 4:
    the simulated board runs with the calibration a real one would have deployed)."""
    path = calibration_path(load_board(board).get("id", ""))
    return str(path) if path else None


def check_arguments(args):
    """The combinations argparse cannot express; InputError naming the option."""
    if args.tick_ms is not None and args.tick_ms <= 0:
        raise InputError("tick_ms: must be > 0")
    if args.detach_dir and not args.cell:
        raise InputError("detach_dir: only with --cell (a simulated board)")
    if args.recover and not args.resume:
        raise InputError("recover: only with --resume LOG (a run whose board was reset)")
    if args.resume:
        if not (args.port or args.board_dir):
            raise InputError("resume: give the board's --port or --board-dir")
        extra = [name for name in ("protocol", "out", "model", "mass_mg", "tick_ms")
                 if getattr(args, name) is not None]
        if extra:
            raise InputError(f"resume: --{extra[0].replace('_', '-')} comes from the log's "
                             f"sidecar, not the command line")
        return
    if not args.protocol:
        raise InputError("protocol: a protocol file is required (or --resume LOG)")
    if not args.out:
        raise InputError("out: --out is required")
    if not (args.port or args.cell or args.board_dir):
        raise InputError("board: give --port, --cell or --board-dir")


def report_link_error(exc, transport):
    """One line for a link failure (plus the simulator's last error line, if any).

    A log written before the failure stays valid up to its last record."""
    print(f"cellbench: link error: {exc}", file=sys.stderr)
    tail = getattr(transport, "stderr_text", lambda: "")().strip().splitlines()
    if tail:
        print(f"cellbench: simulated board said: {tail[-1]}", file=sys.stderr)


def sim_meta(args, transport):
    """Sidecar entries naming the simulated cell (the plant) and where its truth went."""
    if not (args.cell or args.board_dir):
        return None
    truth = getattr(transport, "truth_path", None)
    return {"sim": {"cell_file": str(args.cell) if args.cell else None, "seed": args.seed,
                    "truth_path": str(truth) if truth else None}}


def print_summary(summary, mass_mg, stream=None):
    """Print the run's outcome: rows, stop reason, capacities (to stdout by default)."""
    stream = stream or sys.stdout  # looked up now: sys.stdout may have been replaced
    print(f"log: {summary['out']} ({summary['rows']} rows), stopped: {summary['stop_reason']}",
          file=stream)
    if "q_dch_Ah" in summary:
        per_g = ""
        if mass_mg:
            g = mass_mg / 1000
            per_g = (f" ({summary['q_chg_Ah'] * 1e3 / g:.1f} / {summary['q_dch_Ah'] * 1e3 / g:.1f} mAh/g)")
        print(f"test time {summary['test_time_s'] / 3600:.2f} h, {summary['cycles']} cycles, "
              f"charge / discharge {summary['q_chg_Ah'] * 1e3:.4f} / {summary['q_dch_Ah'] * 1e3:.4f} mAh"
              f"{per_g}", file=stream)
    link = summary.get("link") or {}
    if any(link.values()):
        print("link: " + ", ".join(f"{k} {v}" for k, v in link.items()), file=stream)


def run(args):
    check_arguments(args)
    if args.resume:
        return resume(args)
    board = args.board or ("sim" if args.cell else None)
    # Everything the host can check is checked before a board is started or opened, and
    # the files are read this once.
    files = session.preflight(args.protocol, args.out, board, args.mass_mg, args.model,
                              args.tick_ms, args.force)
    transport, board = open_transport(args, files.board)
    try:
        with ctrl_c_at_reads(transport) as line:
            summary = session.run(files, line, args.out, force=args.force,
                                  progress=None if args.quiet else Progress.for_run,
                                  extra_meta=sim_meta(args, transport),
                                  on_interrupt=on_interrupt(args))
    except LinkError as exc:
        report_link_error(exc, transport)
        return 1
    except session.Interrupted as exc:
        return report_interrupted(args, exc.summary, args.out)
    finally:
        transport.close()
    print_summary(summary, args.mass_mg)
    finished(args, summary)
    return exit_code(args, summary)


def resume(args):
    """--resume LOG: reattach, fetch what the log misses, follow the run to its end."""
    meta = session.preflight_resume(args.resume)  # before the port is opened; read once
    transport, _ = open_transport(args)
    try:
        with ctrl_c_at_reads(transport) as line:
            summary = session.resume(args.resume, line, recover=args.recover, meta=meta,
                                     progress=None if args.quiet else Progress.for_run,
                                     on_interrupt=on_interrupt(args))
    except LinkError as exc:
        report_link_error(exc, transport)
        return 1
    except session.Interrupted as exc:
        return report_interrupted(args, exc.summary, args.resume)
    finally:
        transport.close()
    print_summary(summary, meta.get("mass_mg"))
    finished(args, summary)
    return exit_code(args, summary)


@contextlib.contextmanager
def ctrl_c_at_reads(transport):
    """``transport`` as the session should read it: Ctrl-C takes effect at the session's
    next read from the board (within the link's read slice, 0.5 s), where every message
    taken is logged, not in the middle of writing a row (transport.Interruptible). A
    second Ctrl-C before that read, or one while no run is followed, interrupts at once.
    Outside the main thread (no signal handler can be set there) Ctrl-C is left as it is.
    """
    line = Interruptible(transport)
    line.armed = True
    if threading.current_thread() is not threading.main_thread():
        yield line
        return

    def on_ctrl_c(signum, frame):
        if line.armed and not line.request:
            line.request = "ctrl-c"
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield line
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def board_option(args):
    """The option that reaches the board of this run again: --port or --board-dir."""
    if args.port:
        return f"--port {args.port}"
    return f"--board-dir {args.board_dir or args.detach_dir}"


def on_interrupt(args):
    """Ctrl-C pauses a board that outlives this process (a real one, a detached simulated
    one), so the run can be continued; a simulated board ending with us is stopped."""
    return "pause" if (args.port or args.board_dir or args.detach_dir) else "stop"


def report_interrupted(args, summary, log):
    """After Ctrl-C: the current is off, where the log is and what it holds, how to go on.
    Exit status 130 (interrupted)."""
    rows = summary["rows"]
    said = (f"cellbench: interrupted: the current is off; log {log} holds {rows} records "
            f"(sidecar {bdflog.sidecar_path(log).name})")
    if summary["stop_reason"] == session.PAUSED:
        print(f"{said}; the run is paused on the board; to continue it: "
              f"cellbench run --resume {log} {board_option(args)}", file=sys.stderr)
    else:
        print(f"{said}; the run was stopped ({summary['stop_reason']}) and cannot be "
              f"continued{'' if args.port else ' (start with --detach-dir to keep a simulated board)'}",
              file=sys.stderr)
    return 130


def exit_code(args, summary):
    """0 when the run ended on the board; 1 when the link was lost or the board was reset
    (then one line says how to continue: the user decides whether the cell may go on)."""
    reason = summary["stop_reason"]
    if reason == session.BOARD_RESET:
        print(f"cellbench: the board was reset mid-run (current off); to continue the run "
              f"from its journal: cellbench run --resume {args.resume or args.out} "
              f"{board_option(args)} --recover", file=sys.stderr)
        return 1
    if reason == "link lost":
        said = "cellbench: the link to the board was lost (it sent nothing for too long)"
        if on_interrupt(args) == "pause":  # a board that outlives this process
            said += (f"; the run may go on there; to follow it again: cellbench run --resume "
                     f"{args.resume or args.out} {board_option(args)}")
        print(said, file=sys.stderr)
        return 1
    return 0


def finished(args, summary):
    """A detached simulated board whose run is over is shut down (unless --keep-board):
    unlike a real board, it would otherwise go on using a CPU for nothing."""
    where = args.board_dir or (args.detach_dir if args.cell else None)
    if where and not args.keep_board and summary["stop_reason"] not in ("link lost",
                                                                         session.BOARD_RESET):
        from ..sim import detached

        detached.shutdown(where)


# ---------------------------------------------------------------- the status line


class Progress:
    """One status line from records, rate-limited to a few refreshes per second of wall time.

    ``durations_s``: expected duration of each executed step (protocol.planned_durations_s),
    used for the remaining-time estimate; ``mass_mg`` adds mAh/g.
    """

    def __init__(self, table, durations_s, mass_mg=None, write=None, period_s=PROGRESS_PERIOD_S):
        self.table = table
        self.mass_mg = mass_mg
        self.write = write or _write_stderr
        self.period_s = period_s
        self._tail = [0.0] * (len(durations_s) + 1)  # remaining planned time after step k
        for k in range(len(durations_s) - 1, -1, -1):
            self._tail[k] = self._tail[k + 1] + durations_s[k]
        self._durations = durations_s
        self._step_count = None
        self._step_t0_ms = 0
        self._shown_at = None

    @classmethod
    def for_run(cls, table, protocol, mass_mg):
        """The status line of a run (the session's ``progress`` factory), on stderr."""
        capacity = (protocol.get("sample") or {}).get("capacity_mAh")
        return cls(table, proto.planned_durations_s(table, capacity), mass_mg)

    def remaining_s(self, rec):
        """Estimated test time left (s) at this record."""
        k = rec["step_count"] - 1  # step_count counts from 1
        if rec["step_count"] != self._step_count:
            self._step_count, self._step_t0_ms = rec["step_count"], rec["t_ms"]
        if not 0 <= k < len(self._durations):
            return 0.0
        in_step = (rec["t_ms"] - self._step_t0_ms) / 1000
        return max(0.0, self._durations[k] - in_step) + self._tail[k + 1]

    def line(self, rec):
        """The status text for a record."""
        steps = self.table["steps"]
        no = rec["step_no"]
        kind = steps[no][0] if 0 <= no < len(steps) else "?"
        q_mAh = rec["q_step_nAh"] / 1e6
        cap = f"{q_mAh:+.4f} mAh"
        if self.mass_mg:
            cap += f" {q_mAh / (self.mass_mg / 1000):+.1f} mAh/g"
        return (f"step {no + 1}/{len(steps)} {kind} cycle {rec['cycle']} "
                f"{rec['v_uV'] / 1e6:.4f} V {rec['i_nA'] / 1e6:+.4f} mA {cap} "
                f"t {session.hms(rec['t_ms'] / 1000)} left ~{session.hms(self.remaining_s(rec))}")

    def update(self, rec, force=False):
        """Show the line for ``rec`` unless one was shown less than ``period_s`` ago."""
        text = self.line(rec)  # always computed: it tracks step starts for the estimate
        now = time.monotonic()
        if force or self._shown_at is None or now - self._shown_at >= self.period_s:
            self._shown_at = now
            self.write(text)

    def done(self):
        self.write(None)


def _write_stderr(text):
    if text is None:
        sys.stderr.write("\n")
    else:
        sys.stderr.write("\r" + text[:150].ljust(150))
    sys.stderr.flush()
