"""``cellbench estimate LOG --model MODEL.json [--soc0 S] --out EST.csv``.

Replays the board's SoC filter (cellbench.estimate, the host twin of firmware/ekf.py) over
every sample of a Battery Data Format log and writes one row per sample:
``Test Time / s, SOC / 1, SOC Std / 1, Voltage Model / V``, then, when the model's
estimator tracks them, the log's ageing columns (bdflog.AGEING_COLUMNS: capacity and
charge-transfer resistance estimates with their std), so an ageing run from any tester
can be tracked after the fact.
"""

from pathlib import Path

import numpy as np

from ..bdflog import AGEING_COLUMNS, log_files
from ..errors import InputError
from ..outputs import check_output

NAME = "estimate"
HELP = "replay the state-of-charge filter over a log and write SoC, its std and the model voltage"
COLUMNS = ("Test Time / s", "SOC / 1", "SOC Std / 1", "Voltage Model / V")


def add_arguments(parser):
    parser.add_argument("log", help="Battery Data Format log (.bdf.csv, .csv or .parquet)")
    parser.add_argument("--model", help="cell model file (models/*.json); default: the model "
                        "in the log's sidecar, when the run had one")
    parser.add_argument("--soc0", type=float, default=None,
                        help="SoC at the log's first sample, 0..1 (default: from the OCV there)")
    parser.add_argument("--float32", action="store_true",
                        help="compute in 32-bit floats, as the RP2040 board does")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")


def _model(args):
    if args.model:
        return args.model
    from ..bdflog import read_sidecar
    model = read_sidecar(args.log).get("model")
    if not isinstance(model, dict):
        raise InputError("model: --model is required (the log's sidecar holds no model)")
    return model


def write_csv(path, t_s, result) -> None:
    """Write the estimate as CSV: time at 1 us resolution, SoC and voltages at 1e-9, the
    ageing columns the result has (capacity at 1e-12 Ah, resistance at 1e-6 ohm)."""
    from ..estimate import SLOW  # in AGEING_COLUMNS' order: capacity, its std, R_ct, its std
    slow = [(name, key, fmt) for (name, _), key, fmt in
            zip(AGEING_COLUMNS, SLOW, ("%.12f", "%.12f", "%.6f", "%.6f")) if key in result]
    table = np.column_stack([t_s, result["soc"], result["soc_std"], result["v_model"]]
                            + [result[key] for _, key, _ in slow])
    try:
        np.savetxt(path, table, delimiter=",", header=",".join(COLUMNS + tuple(n for n, _, _ in slow)),
                   comments="", fmt=["%.6f", "%.9f", "%.9f", "%.9f"] + [f for _, _, f in slow])
    except OSError as exc:
        raise InputError(f"out: cannot write {path}: {exc.strerror or exc}") from None


def run(args) -> int:
    from ..estimate import estimate, read_log_columns
    if not Path(args.log).exists():
        raise InputError(f"log: no such file {args.log}")
    check_output(args.out, args.force, inputs=log_files(args.log) + [args.model])
    cols = read_log_columns(args.log)
    t_s, i_A, v_V = cols["Test Time / s"], cols["Current / A"], cols["Voltage / V"]
    result = estimate(_model(args), t_s, i_A, v_V, soc0=args.soc0,
                      dtype="float32" if args.float32 else "float64", tester_steps=cols.get("tester_steps"),
                      tester_counter_Ah=cols.get("tester_counter_Ah"))
    write_csv(args.out, t_s, result)
    return 0
