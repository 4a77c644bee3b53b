"""One way to wait for something: every "poll until done" of cell/ goes through `wait_until`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.5) -> T | None:
    """Call `condition` until it returns something truthy, which is returned; None once `timeout`
    seconds have passed (the caller says what did not happen). It is always called at least once,
    and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(interval, left))
