"""``cellbench fit LOG [LOG ...] --out MODEL.json [--rc 1|2] [--hysteresis] [--report DIR]``.

Fits a cell model (models/ format) to Battery Data Format logs: capacity and OCV from a
low-rate full cycle, R0 and RC pairs from pulses and rests, then a joint refinement (see
:mod:`cellbench.fit`). A log that lacks what a parameter needs is refused with the name
of the protocol in protocols/ that would provide it.
"""

import json
from pathlib import Path

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
    parser.add_argument("--rc", type=int, choices=(1, 2), default=1, help="RC pairs (default 1)")
    parser.add_argument("--hysteresis", action="store_true", help="also fit one-state hysteresis")
    parser.add_argument("--r0-soc", action="store_true", help="fit R0 as a function of SoC (every 10 %%)")
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
                             r0_soc=args.r0_soc)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(model, indent=1) + "\n")
    except OSError as exc:
        raise InputError(f"out: cannot write {out}: {exc.strerror or exc}") from None
    if args.report:
        written = fit_report.write(model, report, args.report)
        print(written[0].read_text(), end="")
    else:
        print(f"capacity {model['capacity_Ah'] * 1e3:.5f} mAh, "
              f"fit RMSE {model['provenance']['fit_rmse_V'] * 1e3:.3f} mV")
        for warning in report["warnings"]:
            print(f"warning: {warning}")
    print(f"wrote {out}")
    return 0
