"""Board calibration: voltage and current gain/offset from reference points, and the
RP2040 ADC's non-linearity (erratum RP2040-E11) from a code-density ramp.

``procedure.calibrate(bench, reference, board)`` runs it and returns the calibration
file (boards/README.md, "Calibration file"); ``cellbench calibrate`` is its command.
Modules: scaling (nominal code -> V / A), linfit (least-squares gain and offset),
dnl (code-density tables, the published default), bench (stimuli and references),
procedure (the order of it all, and writing the file).
"""

from .dnl import default_correction
from .procedure import calibrate, default_plan, write_calibration

__all__ = ["calibrate", "default_plan", "default_correction", "write_calibration"]
