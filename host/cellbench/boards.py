"""Board files (boards/<name>.json) and their calibrations (boards/calibration/<id>.json).

Every command, the run session and the simulated board look boards up here; the file
formats are boards/README.md.
"""

from pathlib import Path

from .errors import InputError
from .jsonfile import read_json
from .paths import BOARDS, CALIBRATIONS


def board_path(board):
    """The board file for a name ("sim") or a path; InputError if there is none."""
    p = Path(board)
    if p.suffix != ".json":
        p = BOARDS / f"{board}.json"
    if not p.is_file():
        raise InputError(f"board: no board file {p} (known boards: {', '.join(known()) or 'none'})")
    return p


def known():
    """The names of the board files in boards/, sorted."""
    return sorted(x.stem for x in BOARDS.glob("*.json"))


def load_board(board):
    """Board file dict for a name or path (a dict is returned as it is)."""
    if isinstance(board, dict):
        return board
    return read_json(board_path(board), "board")


def calibration_path(board_id):
    """The path of a board's calibration file (boards/calibration/<id>.json) or None."""
    p = CALIBRATIONS / f"{board_id}.json"
    return p if board_id and p.is_file() else None


def calibration_for(board_id):
    """The contents of a board's calibration file (boards/calibration/<id>.json) or None."""
    p = calibration_path(board_id)
    return read_json(p, "calibration") if p else None


def calibration_id(cal, board_id):
    """The id a board reports for calibration file contents ``cal`` (firmware/board.py)."""
    return str(cal.get("id") or f"{board_id}@{cal.get('created', '')}")


def calibration_in_force(ident, board_id):
    """Sidecar entry for the calibration the board says it applies (its ID reply).

    {"id": the board's calibration id, or "none" when it runs uncalibrated, "file": the
    contents of boards/calibration/<board-id>.json when that file is the one in force
    (same id), else None; "file_matches": whether it is}.
    """
    got = ident.get("calibration") if isinstance(ident, dict) else None
    if not got:
        return {"id": "none", "file": None, "file_matches": False}
    cal = calibration_for(board_id) if board_id else None
    matches = cal is not None and calibration_id(cal, board_id) == got
    return {"id": got, "file": cal if matches else None, "file_matches": matches}
