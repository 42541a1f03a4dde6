"""The run / boards / flash / demo commands: bad input exits 2 with one line; runs log the truth."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cellbench import bdflog, cli
from cellbench.paths import FIRMWARE, MODELS, PROTOCOLS, ROOT

SMOKE = PROTOCOLS / "smoke.json"


def cellbench(*argv):
    """Run the CLI in a subprocess (as a user would): (exit code, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "cellbench.cli", *map(str, argv)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    return done.returncode, done.stdout, done.stderr


def assert_bad_input(code, err, starts):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cellbench: error: {starts}"), lines[0]


def test_malformed_protocol_json_exits_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"method": [')
    code, _, err = cellbench("run", bad, "--cell", MODELS / "any.json", "--out", tmp_path / "x.bdf.csv")
    assert_bad_input(code, err, "protocol: bad.json is not valid JSON")


def test_missing_field_exits_2(tmp_path):
    doc = {"sample": {"capacity_mAh": 0.35},
           "method": [{"step": "constant_current", "rate_C": 1}]}
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    code, _, err = cellbench("run", path, "--cell", MODELS / "any.json", "--out", tmp_path / "x.bdf.csv")
    assert_bad_input(code, err, "method[0].constant_current: no end condition")


def test_existing_log_needs_force(tmp_path):
    out = tmp_path / "x.bdf.csv"
    out.write_text("Test Time / s,Voltage / V,Current / A\n")
    code, _, err = cellbench("run", SMOKE, "--cell", MODELS / "any.json", "--out", out)
    assert_bad_input(code, err, "out:")
    assert "--force" in err and out.read_text().startswith("Test Time")


def test_unknown_board_and_bad_numbers_exit_2(tmp_path, capsys):
    out = tmp_path / "x.bdf.csv"
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--board", "nope", "--out", str(out)]) == 2
    assert "board: no board file" in capsys.readouterr().err
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--out", str(out), "--mass-mg", "-2"]) == 2
    assert "mass_mg: must be > 0" in capsys.readouterr().err
    assert cli.main(["run", str(SMOKE), "--cell", "c.json", "--out", str(out), "--tick-ms", "0"]) == 2
    assert "tick_ms: must be > 0" in capsys.readouterr().err
    assert not out.exists()


def test_boards_lists_every_board_file(capsys):
    assert cli.main(["boards"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ids = sorted(json.loads(p.read_text())["id"] for p in (ROOT / "boards").glob("*.json"))
    assert sorted(line.split()[0] for line in lines) == ids
    assert all("mA" in line and " V" in line for line in lines)


@pytest.mark.skipif(not (FIRMWARE / "main.py").is_file(), reason="firmware/main.py not written yet")
def test_flash_dry_run_compiles_every_module(tmp_path, capsys):
    code = cli.main(["flash", "--port", "/dev/ttyFAKE", "--board", "sim", "--dry-run",
                     "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    modules = sorted(p.stem for p in FIRMWARE.glob("*.py") if p.name != "main.py")
    assert sorted(p.stem for p in tmp_path.glob("*.mpy")) == modules
    for p in tmp_path.glob("*.mpy"):
        data = p.read_bytes()
        assert data[0] == ord("M") and data[1] == 6  # mpy format v6 (MicroPython 1.2x)
    assert "mpremote connect /dev/ttyFAKE cp" in out and ":board.json" in out
    assert out.strip().splitlines()[-1].endswith("reset")
