"""The one way to wait: poll a probe until it says done, or raise with the last value seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from runbook_lib.errors import WaitTimeout

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    done: Callable[[T], bool] = bool,
    *,
    what: str,
    timeout_s: float,
    interval_s: float = 0.2,
) -> T:
    """Call `probe` until `done(value)` holds; return that value, or raise WaitTimeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(what, timeout_s, value)
        time.sleep(interval_s)
