"""``cellbench boards``: the board files in boards/, one line each."""

from ..boards import calibration_path, load_board
from ..errors import InputError
from ..paths import BOARDS
from ..transport import list_ports

NAME = "boards"
HELP = "list the board files (boards/*.json) with their ranges and limits"


def add_arguments(parser):
    parser.add_argument("--ports", action="store_true", help="also list serial ports")


def describe(board, calibrated):
    """One line: id, measurement path, current ranges, limits, tick, calibration, name."""
    ranges = "/".join(r.get("name", f"{r.get('full_scale_mA')}mA")
                      for r in board.get("current", {}).get("ranges", []))
    lim = board.get("limits", {})
    cal = "calibrated" if calibrated else "uncalibrated"
    return (f"{board.get('id', '?'):<14} {board.get('measure', '?'):<8} ranges {ranges or '?'}; "
            f"limits {lim.get('min_V', '?')}-{lim.get('max_V', '?')} V, +-{lim.get('max_mA', '?')} mA; "
            f"tick {board.get('tick_ms', '?')} ms; {cal}; {board.get('name', '')}")


def run(args):
    paths = sorted(BOARDS.glob("*.json"))
    if not paths:
        print(f"no board files in {BOARDS}")
    for path in paths:
        try:
            board = load_board(path)
        except InputError as exc:
            print(f"{path.stem:<14} unreadable: {exc}")
            continue
        print(describe(board, calibration_path(board.get("id", path.stem)) is not None))
    if args.ports:
        ports = list_ports()
        for device, desc in ports:
            print(f"port {device}: {desc}")
        if not ports:
            print("no serial ports found")
    return 0
