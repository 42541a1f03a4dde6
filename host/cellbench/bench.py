"""``make bench``: run every benchmark module and write BENCHMARKS.md.

Speed and memory targets live here, never as timed assertions in tests. Each module in
``cellbench.benchmarks`` has ``run()`` returning rows ``{"name", "value", "unit", "note"}``
(``note`` says the target, when there is one), or ``{"columns": [...], "rows": [...]}``
for a table of its own (benchmarks/ageing.py); a module that fails is
reported as such in the file rather than hiding the others.
"""

import argparse
import importlib
import os
import pkgutil
import platform
import re
import sys
import time
import traceback
from datetime import datetime, timezone

from . import benchmarks

COMMAND = "make bench"


def _machine() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        model = platform.processor()
    return f"{model or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_area(name: str):
    """Run one benchmark module; return (rows, wall_s, error_text_or_None)."""
    start = time.perf_counter()
    try:
        rows = importlib.import_module(f"{benchmarks.__name__}.{name}").run()
        return rows, time.perf_counter() - start, None
    except Exception:  # a broken area must not hide the others' figures
        return [], time.perf_counter() - start, traceback.format_exc(limit=3)


def _value(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _table(columns, rows):
    """Markdown lines of a table with the given columns (a missing cell is empty)."""
    out = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    out += ["| " + " | ".join(_value(r.get(c, "")) for c in columns) + " |" for r in rows]
    return out + [""]


def render(results, stamp: str) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{COMMAND}` (`python -m cellbench.bench --out BENCHMARKS.md`) on {stamp}.",
        f"Machine: {_machine()}.",
        "",
    ]
    for name, rows, wall_s, error in results:
        lines += [f"## {name}", "", f"(area took {wall_s:.1f} s of wall time)", ""]
        if error:
            lines += ["This area failed:", "", "```", error.strip(), "```", ""]
            continue
        if isinstance(rows, dict):  # an area with its own columns: {"columns": [...], "rows": [...]}
            lines += _table(rows["columns"], rows["rows"])
            continue
        lines += ["| metric | value | unit | note |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['name']} | {_value(r['value'])} | {r.get('unit', '')} | {r.get('note', '')} |"
                  for r in rows]
        lines.append("")
    return "\n".join(lines)


def kept_sections(path, produced) -> str:
    """The ``## `` sections of the old file at ``path`` that this run did not produce (areas
    left out by --only, ``make soak``'s), so that one run does not erase others' figures."""
    try:
        with open(path) as f:
            old = f.read()
    except OSError:
        return ""
    parts = re.split(r"^(?=## )", old, flags=re.M)[1:]
    return "".join("\n" + p.rstrip("\n") + "\n" for p in parts
                   if p.split("\n", 1)[0][3:].strip() not in produced)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="BENCHMARKS.md")
    parser.add_argument("--only", nargs="*", help="areas to run (default: all)")
    args = parser.parse_args(argv)
    names = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))
    if args.only:
        names = [n for n in names if n in args.only]
    results = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        rows, wall_s, error = run_area(name)
        results.append((name, rows, wall_s, error))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = render(results, stamp) + kept_sections(args.out, {r[0] for r in results})
    with open(args.out, "w") as f:
        f.write(text)
    print(f"bench: wrote {args.out}", file=sys.stderr)
    return 1 if any(r[3] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
