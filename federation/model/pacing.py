"""Pacing the reconciler by its event loop's lateness.

A step recomputes every import whose inputs moved; at 100 clusters every pool has some backend
moving, so each step recomputes them all. When the agent's process cannot get the CPU that costs
(a machine shared by many agents, a container's CPU limit), its event loop runs late: timers
fire seconds after their time, beats and digests go out late, and peers' leases lapse. Stepping
as often as before then buys nothing (each step's weights are late by the lateness anyway) and
takes the CPU the beats needed. So the least time between two steps woken by events stretches
to the loop's recent lateness, up to a bound well within a lease; a lease's end is still stepped
at its time (the reconciler's own wait, which no gap holds back).

The lateness is the worst seen of two measures, forgotten by half every ``half_life`` seconds:
the overshoot of the reconciler's own timers, and the time a step spent ready but not running
(its wall time less its CPU time: a starved process loses most of its waiting inside its own
long steps, where no timer is waiting to see it). One late step stretches the next few gaps; a
loop back on time returns to the base gap within seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LATENESS_HALF_LIFE = 5.0  # seconds
# A lateness below this is the loop's ordinary jitter (a batch of events being applied), not a
# starved process: the gap stays at its base.
LATENESS_FLOOR = 0.05


@dataclass
class Lateness:
    """The event loop's recent lateness, in seconds (see the module's docstring)."""

    half_life: float = LATENESS_HALF_LIFE
    _worst: float = 0.0
    _at: float = 0.0

    def observe(self, overshoot: float, at: float) -> None:
        """``overshoot`` seconds late at ``at``: a timer fired that much after its time, or a
        step waited that long for a core."""
        if not math.isfinite(overshoot) or overshoot <= self.value(at):
            return
        self._worst, self._at = overshoot, at

    def value(self, at: float) -> float:
        if self._worst <= 0.0 or at <= self._at:
            return self._worst
        return self._worst * math.exp2(-(at - self._at) / self.half_life)


def paced_gap(base: float, lateness: float, most: float) -> float:
    """The least time between two event-woken steps: ``base``, or the loop's ``lateness`` where
    that is longer (and above the jitter floor), at most ``most`` (never below ``base``)."""
    if lateness < LATENESS_FLOOR or not lateness > base:
        return base
    return min(lateness, max(base, most))
