"""Other testers' files -> Battery Data Format logs (``cellbench import``).

One module per tester family reads its formats into a :class:`~.raw.Raw` table in SI
units with charge-positive current, taking units from the file's own headers
(neware, biologic, arbin, maccor, pec, novonix, bdf); :mod:`.dispatch` decides which
family wrote a file; :func:`~.raw.checked` refuses values no cell can have;
:mod:`.derive` builds the log columns, preferring the tester's own cycle, step, step
type and counters; :mod:`.write` writes the log and its sidecar.
"""

from .derive import COLUMNS, cycle_counts, test_time_s, to_bdf
from .dispatch import read_foreign
from .raw import Raw
from .write import import_file, write

__all__ = ["COLUMNS", "Raw", "cycle_counts", "import_file", "read_foreign", "test_time_s", "to_bdf", "write"]
