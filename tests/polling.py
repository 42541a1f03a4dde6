"""The one way a test waits: on processes that run in virtual time (simulated boards,
detached boards, host runs) and on the files they write.

Every wait in the suite goes through :func:`wait_for`, which either returns what it saw
once the condition held or fails with what it waited for and what it last saw; no wait
falls through silently to an assertion that then fails for a reason it does not name.
"""

import time

WAIT_S = 240.0  # generous: the machine is shared; nothing here is a timing assertion
POLL_S = 0.02   # between probes: the board's virtual time runs while the host waits


def wait_for(probe, what, until=bool, timeout_s=WAIT_S, poll_s=POLL_S):
    """Call ``probe()`` until ``until(value)`` holds and return that value.

    probe: reads the state waited on (a row count, a STATUS dict, ...); ``until`` defaults
    to truthiness, so ``wait_for(lambda: p.poll() is not None, "exit")`` works.
    what: words for the failure message. On timeout (wall seconds) raise AssertionError
    naming ``what``, the time waited and the last value the probe returned.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; "
                                 f"last saw: {value!r}")
        time.sleep(poll_s)
