"""``cellbench fit LOG [LOG ...] --out MODEL.json [--rc 0|1|2] [--[no-]hysteresis] [--report DIR]``.

Fits a cell model (models/ format) to Battery Data Format logs: capacity and OCV from
low-rate full sweeps (else from the slowest full cycle), then the structure (RC pairs, hysteresis, SoC tables,
Butler-Volmer) and its parameters by held-out error, and the model's own error table
(see :mod:`cellbench.fit`). The structure options pin a part instead of letting the
data choose. What the logs lack is assumed at its least and printed; only a parameter
with no information at all is refused, naming what to record.
"""

import argparse
import json

from ..bdflog import log_files
from ..errors import InputError
from ..fit import fit_logs
from ..fit import report as fit_report
from ..outputs import check_output, check_output_dir

NAME = "fit"
HELP = "fit a cell model (OCV, capacity, R0, RC pairs, hysteresis) to BDF logs"


def add_arguments(parser) -> None:
    parser.add_argument("logs", nargs="+", metavar="LOG", help="BDF logs (.bdf.csv, .csv, .parquet)")
    parser.add_argument("--out", required=True, help="model file to write (JSON)")
    parser.add_argument("--rc", type=int, choices=(0, 1, 2), default=None,
                        help="RC pairs (default: chosen by held-out error)")
    flag = dict(action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--hysteresis", help="pin one-state hysteresis on/off (default: chosen)", **flag)
    parser.add_argument("--r0-soc", help="pin R0 and RC resistances as SoC tables on/off (default: chosen)", **flag)
    parser.add_argument("--butler-volmer", help="pin the charge-transfer term on/off (default: chosen)", **flag)
    parser.add_argument("--report", metavar="DIR", help="write report.txt, residuals.png, ocv.png, r0.png here")
    parser.add_argument("--name", default="", help="cell name (default: from the log's sidecar)")
    parser.add_argument("--chemistry", default="", help="e.g. LTO/Li (default: from the sidecar)")
    parser.add_argument("--mass-mg", type=float, default=0.0, help="active mass in mg (default: the sidecar's mass_mg)")
    parser.add_argument("--force", action="store_true", help="overwrite --out (and --report) if it exists")


def run(args) -> int:
    out = check_output(args.out, args.force, inputs=log_files(*args.logs))
    if args.report:
        check_output_dir(args.report, args.force, inputs=log_files(*args.logs) + [args.out],
                         field="report")
    if args.mass_mg < 0 or args.mass_mg != args.mass_mg:
        raise InputError(f"mass_mg: must be > 0, got {args.mass_mg}")
    model, report = fit_logs(args.logs, rc=args.rc, hysteresis=args.hysteresis, name=args.name,
                             chemistry=args.chemistry, mass_g=args.mass_mg / 1000.0,
                             r0_soc=args.r0_soc, butler_volmer=args.butler_volmer)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(model, indent=1) + "\n")
    except OSError as exc:
        raise InputError(f"out: cannot write {out}: {exc.strerror or exc}") from None
    if args.report:
        written = fit_report.write(model, report, args.report)
        print(written[0].read_text(), end="")
    else:
        print(fit_report.summary(model))
        for assumption in model["provenance"]["assumptions"]:
            print(f"assumed: {assumption}")
    print(f"wrote {out}")
    return 0
