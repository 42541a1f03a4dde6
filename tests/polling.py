"""Waiting on processes that run in virtual time (detached simulated boards, host runs)."""

import time

WAIT_S = 240.0  # generous: the machine is shared; nothing here is a timing assertion


def wait_for(cond, what, timeout_s=WAIT_S):
    """Poll ``cond()`` until it returns something truthy and return that; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
