"""Waiting for a condition in tests, instead of sleeping a fixed time.

A fixed sleep against a window is a race with the machine's load: too short on a busy host,
needlessly long on an idle one. `wait_until` polls the condition and gives up only after a
generous `timeout`, so a test waits as long as the behaviour needs and no longer.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: How long a test waits for something that takes milliseconds on an idle machine, in seconds.
GENEROUS_SECONDS = 30.0


def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float = GENEROUS_SECONDS,
    interval: float = 0.01,
    what: str = "the condition",
) -> float:
    """Seconds until `condition()` was true; fails the test after `timeout` seconds.

    The condition is checked at once, then every `interval` seconds (and once more at the
    deadline, so a slow last check is not mistaken for a timeout)."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() >= deadline:
            if condition():
                break
            pytest.fail(f"{what} still did not hold after {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started
