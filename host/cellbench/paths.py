"""Where the repository's data folders are (the package is installed editable from the repo)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
CALIBRATIONS = BOARDS / "calibration"
MODELS = ROOT / "models"
PROTOCOLS = ROOT / "protocols"
SIM_MPY = Path(__file__).resolve().parent / "sim" / "mpy"
