"""`cellbench flash --dry-run`: what it would install is a firmware that imports on MicroPython.

Independent of how flash.py picks its modules: the .mpy files it compiles plus main.py are
put in an empty "flash" folder, and the MicroPython unix port imports, from that folder
alone, every firmware module main.py imports (found with CPython's ast) and every module
installed. A firmware module the installer forgot (say one the manifest does not list)
fails that import, as it would at boot on the board.
"""

import ast
import shutil
import subprocess

import pytest

from cellbench import cli, unixport
from cellbench.paths import FIRMWARE


def main_imports():
    """Firmware modules main.py imports (module names with a firmware/<name>.py)."""
    names = set()
    for node in ast.walk(ast.parse((FIRMWARE / "main.py").read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return sorted(n for n in names if (FIRMWARE / f"{n}.py").is_file())


@pytest.mark.hil
def test_dry_run_installs_a_firmware_that_imports(tmp_path, capsys, monkeypatch):
    build = tmp_path / "build"
    assert cli.main(["flash", "--port", "/dev/ttyFAKE", "--board", "cct-rp2040", "--dry-run",
                     "--build-dir", str(build)]) == 0
    out = capsys.readouterr().out
    mpy = sorted(build.glob("*.mpy"))
    # every compiled module is in the copy command, main.py as source, nothing run for real
    copy = next(line for line in out.splitlines() if " cp " in line and line.endswith(" :"))
    assert all(str(p) in copy for p in mpy) and str(FIRMWARE / "main.py") in copy
    assert "dry run" in out

    # The board's .mpy files carry Thumb code (ekf's @micropython.native, -march=armv6m),
    # which the unix port cannot load: the same set compiled for this machine's CPU
    # stands in for them (tests/test_emu.py imports the armv6m ones on the rp2 image).
    from cellbench.commands import flash as flash_command

    monkeypatch.setattr(flash_command, "MARCH", "host")
    host_build = tmp_path / "build-host"
    assert cli.main(["flash", "--port", "/dev/ttyFAKE", "--board", "cct-rp2040", "--dry-run",
                     "--build-dir", str(host_build)]) == 0
    capsys.readouterr()
    host_mpy = sorted(host_build.glob("*.mpy"))
    assert [p.name for p in host_mpy] == [p.name for p in mpy]
    flash = tmp_path / "flash"
    flash.mkdir()
    for p in host_mpy:
        shutil.copy(p, flash / p.name)
    shutil.copy(FIRMWARE / "main.py", flash / "main.py")
    stub = tmp_path / "stub"  # `machine` is built into the rp2 port; an empty stand-in
    stub.mkdir()              # is enough to import board.py
    (stub / "machine.py").write_text("")
    wanted = sorted(set(main_imports()) | {p.stem for p in mpy})
    assert "board" in wanted and "link" in wanted
    done = subprocess.run([unixport.micropython_binary(), "-c", "import " + ", ".join(wanted)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60,
                          env={"MICROPYPATH": f"{flash}:{stub}"})
    assert done.returncode == 0, done.stdout + done.stderr
    # no firmware source leaked in: the imports came from the .mpy files (main.py aside)
    assert not [p for p in flash.glob("*.py") if p.name != "main.py"]


def test_unknown_board_exits_2_with_one_line(tmp_path, capsys):
    assert cli.main(["flash", "--port", "/dev/ttyFAKE", "--board", "no-such-board", "--dry-run",
                     "--build-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
