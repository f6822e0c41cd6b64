"""The agent's steady clock: wall-clock seconds that never jump.

Anchored to the wall clock once, at start, and moved on by the monotonic clock since: readable as
a time of day (status, logs), yet an NTP step, a VM resume or an operator's ``date -s`` cannot
make a fresh report look old or an old one fresh.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def steady_clock(
    wall: Callable[[], float], monotonic: Callable[[], float] = time.monotonic
) -> Callable[[], float]:
    anchor, base = wall(), monotonic()

    def now() -> float:
        return anchor + (monotonic() - base)

    return now
