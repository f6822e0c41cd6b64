"""Pacing the reconciler by its event loop's lateness.

A step recomputes every import whose inputs moved; at 100 clusters every pool has some backend
moving, so each step recomputes them all. When the agent's process cannot get the CPU that costs
(a machine shared by many agents, a container's CPU limit), its event loop runs late: timers
fire seconds after their time, beats and digests go out late, and peers' leases lapse. Stepping
as often as before then buys nothing (each step's weights are late by the lateness anyway) and
takes the CPU the beats needed. So the least time between two steps woken by events (and the
periodic step with it) stretches to the loop's recent lateness, up to a bound well within a
lease; a member's lease end is still stepped at its time (the reconciler's own wait, which no
gap holds back).

The lateness is the worst overshoot of a probe's timer (the agent's ``watch-lateness`` task,
every 0.25 s), forgotten by half every ``half_life`` seconds: one late stretch lengthens the next
gaps; from 2.5 s late, a loop back on time is back at a 0.5 s base gap in about 12 s. Below
``LATENESS_FLOOR`` it is a loaded machine's ordinary jitter, and the gap stays at its base.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LATENESS_HALF_LIFE = 5.0  # seconds
# A lateness below this is the loop's ordinary jitter (a batch of events applied, a busy test
# machine), not a starved process: the gap stays at its base.
LATENESS_FLOOR = 0.25


@dataclass
class Lateness:
    """The event loop's recent lateness, in seconds (see the module's docstring)."""

    half_life: float = LATENESS_HALF_LIFE
    _worst: float = field(default=0.0, init=False)
    _at: float = field(default=0.0, init=False)

    def observe(self, overshoot: float, at: float) -> None:
        """A timer due at ``at - overshoot`` fired at ``at``."""
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
