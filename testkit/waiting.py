"""Waiting for a condition with a deadline: the way tests synchronise with servers in threads
and processes, instead of sleeping for a time that assumes how fast the machine is."""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_SECONDS = 0.005


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll `condition` until it is true or `timeout` seconds have passed; returns its last
    truth value, so `assert wait_until(...)` fails with the condition still false.

    To check that something does *not* happen, `assert not wait_until(it_happened, window)`:
    the window is the time within which it would have happened, and the check fails as soon as
    it does.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(POLL_SECONDS)
    return bool(condition())
