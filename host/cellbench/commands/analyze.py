"""``cellbench analyze LOG``: the cycle table, rate capability, dQ/dV, resistance and figures."""

import os
import sys
from pathlib import Path

from ..analyze import analyze_log, format_rate_table
from ..analyze.reference import PAPER_RATES
from ..bdflog import log_files
from ..errors import InputError
from ..outputs import check_output_dir

NAME = "analyze"
HELP = "per-cycle table, rate capability, dQ/dV, DC resistance and figures from a BDF log"


def _cycles(text, name):
    """'1,2,10' -> [1, 2, 10]; None stays None."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name}: expected comma-separated cycle numbers, not {text!r}") from None
    if not values or min(values) < 0:
        raise InputError(f"{name}: expected comma-separated cycle numbers, not {text!r}")
    return values


def add_arguments(parser):
    parser.add_argument("log", help="BDF log (.bdf.csv, .csv, .csv.gz, .parquet); its sidecar is read if present")
    parser.add_argument("--mass-mg", type=float, help="active mass in mg (default: the sidecar's mass_mg)")
    parser.add_argument("--mode", choices=("half", "full"),
                        help="half: working electrode vs Li, CE = charge/discharge ('anode' convention); "
                             "full: CE = discharge/charge (default: half if the sidecar model is <electrode>/Li "
                             "or the first step discharges, else full)")
    parser.add_argument("--ref-cycle", type=int, help="reference cycle for retention (default 2, else 1)")
    parser.add_argument("--capacity-mAh", type=float,
                        help="capacity that defines 1C (default: the sidecar protocol's sample.capacity_mAh)")
    parser.add_argument("--dqdv-cycles", help="cycles for dQ/dV, e.g. 1,2,100 (default: first, ref, last)")
    parser.add_argument("--plot-cycles", help="cycles for the voltage-capacity figure")
    parser.add_argument("--sigma-mV", type=float, default=5.0, help="dQ/dV Gaussian smoothing width (mV, default 5)")
    parser.add_argument("--out", help="output folder (default: <log name>_analysis next to the log)")
    parser.add_argument("--rate-unit", choices=("C", "mA/g", "mA"),
                        help="rate of the rate blocks (default: C with a capacity, else mA/g with a mass, else mA)")
    parser.add_argument("--paper", choices=sorted(PAPER_RATES),
                        help="print the paper's rate table (coin-cells.md) next to the measured one")
    parser.add_argument("--no-figures", action="store_true", help="write tables only")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it holds files")


def _default_out(log):
    p = Path(log)
    name = p.name.split(".")[0] or "log"
    return p.with_name(f"{name}_analysis")


def _fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)


def _headline(summary):
    """Two lines: the first cycle and the last against the first and reference cycles."""
    unit, key, q = ("mAh/g", "_mAh_g", ".1f") if summary["mass_mg"] else ("mAh", "_mAh", ".4f")
    first, last = summary["first_cycle"], summary["last_cycle"]
    return [f"cycle {first['cycle']}: charge {_fmt(first['q_chg' + key], q)} {unit}, discharge "
            f"{_fmt(first['q_dch' + key], q)} {unit}, CE {_fmt(first['ce_pct'])} %",
            f"cycle {last['cycle']}: discharge {_fmt(last['q_dch' + key], q)} {unit}, retention "
            f"{_fmt(last['retention_first_pct'])} % of cycle {first['cycle']}, "
            f"{_fmt(last['retention_ref_pct'])} % of cycle {summary['ref_cycle']}"]


def run(args) -> int:
    if args.sigma_mV is not None and args.sigma_mV < 0:
        raise InputError("sigma_mV: must be >= 0")
    out = check_output_dir(args.out or _default_out(args.log), args.force,
                           inputs=log_files(args.log))
    result = analyze_log(args.log, mass_mg=args.mass_mg, mode=args.mode, out_dir=out,
                         ref_cycle=args.ref_cycle, capacity_mAh=args.capacity_mAh,
                         dqdv_cycles=_cycles(args.dqdv_cycles, "dqdv_cycles"),
                         plot_cycles=_cycles(args.plot_cycles, "plot_cycles"),
                         sigma_V=args.sigma_mV / 1e3, figures=not args.no_figures,
                         rate_unit=args.rate_unit)
    s = result.summary
    conv = s["conventions"]
    kind = "half cell (working electrode vs Li)" if result.mode == "half" else "full cell"
    lines = [f"{s['cycles']} cycles, {kind}: mode {result.mode} ({conv['mode_source']}; --mode to override); "
             f"CE = {conv['coulombic_efficiency']}; cycles: {conv['cycle_pairing']}",
             *_headline(s), format_rate_table(result, PAPER_RATES.get(args.paper)),
             f"wrote {len(result.files)} files to {out}"]
    return _print(lines)


def _print(lines):
    """Print the report; a reader that closes the pipe early (``| head -1``) ends it
    quietly: the files are written already, so that is success, not a traceback."""
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # Python would report the failed flush again at exit; point stdout at devnull.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
