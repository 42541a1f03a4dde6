"""``cellbench import FILE --out LOG [--force]``: another tester's file as a BDF log.

Neware .nda/.ndax (NewareNDA) and CSV exports, BioLogic .mpr (galvani), .mpt and CSV
exports, Arbin CSV/XLSX and .res (through mdbtools' mdb-export), Maccor text (its binary
raw files are refused: the format is not published), PEC CSV, Novonix CSV, BDF in any
units, and whatever else batterydf converts. The log gets SI
units from the file's own headers, charge-positive current, the tester's cycles, steps
and counters (see :mod:`cellbench.importers`); its sidecar records the source.
"""

from ..bdflog import sidecar_path
from ..importers import import_file
from ..outputs import check_output

NAME = "import"
HELP = "convert a Neware/BioLogic/other tester's file to a Battery Data Format log"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="tester file (.nda, .ndax, .mpr, .mpt, .res, Neware/BioLogic/Arbin/"
                                     "PEC/Novonix CSV, Maccor text, BDF)")
    parser.add_argument("--out", required=True, help="log to write (.bdf.csv or .bdf.parquet)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def run(args) -> int:
    for path in (args.out, sidecar_path(args.out)):
        check_output(path, args.force, inputs=(args.file,))
    meta = import_file(args.file, args.out, force=args.force)
    print(f"{meta['imported_from']} ({meta['format']}): {meta['rows']} records -> {args.out}")
    return 0
