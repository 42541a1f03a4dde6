"""``cellbench import FILE --out LOG [--force]``: another tester's file as a BDF log.

Neware .nda/.ndax (NewareNDA), BioLogic .mpr (galvani) and whatever batterydf converts
(CSV/text exports of Neware, Landt, Digatron, Novonix, Basytec, BioLogic .mpt, ...).
The log gets SI units, charge-positive current and the docs/design.md columns that can
be derived (see :mod:`cellbench.importers`); its sidecar (``<log>.json``) records the source.
"""

from ..bdflog import sidecar_path
from ..importers import import_file
from ..outputs import check_output

NAME = "import"
HELP = "convert a Neware/BioLogic/other tester's file to a Battery Data Format log"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="tester file (.nda, .ndax, .mpr, CSV/text export)")
    parser.add_argument("--out", required=True, help="log to write (.bdf.csv or .bdf.parquet)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def run(args) -> int:
    for path in (args.out, sidecar_path(args.out)):
        check_output(path, args.force, inputs=(args.file,))
    meta = import_file(args.file, args.out, force=args.force)
    print(f"{meta['imported_from']} ({meta['format']}): {meta['rows']} records -> {args.out}")
    return 0
