"""Write an imported log (CSV or Parquet) and its JSON sidecar, with every value at full
precision: floats are written as the shortest text that reads back to the same double
(Unix times keep their microseconds, not 9 significant digits)."""

import json
import time
from pathlib import Path

from ..bdflog import sidecar_path
from ..errors import InputError
from .derive import to_bdf
from .dispatch import read_foreign


def write(columns, out, meta, force=False):
    """Write ``columns`` as a BDF log (.parquet, else CSV) plus a JSON sidecar."""
    import pandas as pd

    out = Path(out)
    side = sidecar_path(out)
    for p in (out, side):
        if p.exists() and not force:
            raise InputError(f"out: {p} exists (use --force to overwrite)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.name.lower().endswith(".parquet"):
            pd.DataFrame(columns).to_parquet(out, index=False)
        else:
            _write_csv(columns, out)
        side.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")
    except OSError as exc:
        raise InputError(f"out: cannot write {out}: {exc.strerror or exc}") from None
    return out


def _write_csv(columns, out):
    """CSV through pyarrow: shortest round-trip text for every double (nothing rounded
    away), about ten times faster than pandas' writer; the header unquoted as BDF shows it."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    table = pa.table({name: pa.array(values) for name, values in columns.items()})
    with open(out, "wb") as f:
        f.write((",".join(columns) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="none"))


def import_file(path, out, force=False):
    """Convert ``path`` to a BDF log at ``out``; returns the sidecar written. Nothing is
    written unless the whole file reads and passes the checks."""
    raw = read_foreign(path)
    columns = to_bdf(raw)
    meta = dict(raw.meta)
    meta.update({"imported_from": str(Path(path).name), "imported_unix_s": round(time.time(), 3),
                 "rows": int(columns["Test Time / s"].size),
                 "cycles_from": "tester" if raw.cycle is not None else "derived (docs/design.md rule)",
                 "capacity_from": "tester counters" if raw.q_chg_Ah is not None else "integrated current",
                 "convention": "BDF: SI units, current > 0 charges the cell"})
    write(columns, out, meta, force)
    return meta
