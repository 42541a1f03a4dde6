"""Test-wide settings, the ``hil`` marker and the one demo run.

Hypothesis runs derandomised by default, so a run on CI and a run here draw the same
examples and a red build can be reproduced; ``HYPOTHESIS_PROFILE=explore`` draws fresh
examples (and more of them) to hunt for new failures. Deadlines are off: the machine is
shared and speed is measured by ``make bench``, not asserted in tests.

Hardware in the loop: a test marked ``hil`` runs the unmodified firmware under the
MicroPython unix port (cellbench.unixport finds it, as the simulator does). Where the
port or mpy-cross is truly absent such a test is skipped, saying which tool is missing.
``make test`` sets CELLBENCH_REQUIRE_HIL=1: then a skipped ``hil`` test, for whatever
reason, is a failure, because the HIL tests are what the suite is for.
"""

import os
import signal
import subprocess
import sys

import pytest
from hypothesis import settings

from cellbench import unixport
from cellbench.paths import ROOT

settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REQUIRE_HIL = "CELLBENCH_REQUIRE_HIL"


def pytest_configure(config):
    # Started in the background by a script (CI, nohup, `make test &`), the suite inherits
    # SIGINT ignored, and so would every host it starts: a Ctrl-C test would then send a
    # signal nobody hears and see the run end normally. Ctrl-C means here what it means
    # at a terminal, in this process and (inherited) in the hosts the tests start.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line(
        "markers", "hil: runs the firmware under the MicroPython unix port (hardware in the "
        "loop); skipped only when the port is not installed, failed instead under "
        f"{REQUIRE_HIL}=1 (make test)")


def pytest_runtest_setup(item):
    if item.get_closest_marker("hil"):
        why = unixport.missing()
        if why:
            pytest.skip(f"hil: {why}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CELLBENCH_REQUIRE_HIL=1 a skipped ``hil`` test fails, with the skip's reason."""
    report = yield
    # An expected failure (xfail) is reported as skipped too: it ran, so it stays as it is.
    if report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("hil") \
            and os.environ.get(REQUIRE_HIL) == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: a hardware-in-the-loop test was skipped "
                           f"({reason}) but {REQUIRE_HIL}=1 requires it to run")
    return report


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """One ``cellbench demo`` for the whole session (it takes about half a minute):
    (output folder, printed text). Tests read it and must not change what it wrote."""
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, "-m", "cellbench.cli", "demo", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout
