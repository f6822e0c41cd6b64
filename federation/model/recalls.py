"""When to read back what a stale peer said last: every interval, less often once it repeats.

A peer whose lease ran out is asked for its newest words (by direct get from its outbound
stream) so that a healed partition is heard at once. One whose servers answer with what they
said before has an agent that is down: it is asked after twice as long each time, up to a cap,
so a dead peer costs its gets rarely. One whose servers do not answer is cut off and is asked at
every interval, to be heard as soon as the cut heals; so is one that said something new.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass
class RecallSchedule:
    interval: float  # seconds between recalls of a peer that is cut off or said something new
    cap: float  # the longest wait for one that repeats itself
    _after: dict[str, tuple[float, float]] = field(default_factory=dict)  # peer -> (when, wait)

    def due(self, stale: Collection[str], at: float) -> list[str]:
        """The stale peers to ask at ``at`` (peers heard again are forgotten: asked at once the
        next time they go stale)."""
        for peer in set(self._after) - set(stale):
            del self._after[peer]
        return sorted(p for p in stale if self._after.get(p, (at, 0.0))[0] <= at)

    def asked(
        self, peers: Collection[str], *, answered: Collection[str], new: Collection[str], at: float
    ) -> None:
        """What the recall of ``peers`` at ``at`` brought: which answered, which said new words."""
        for peer in peers:
            if peer in new or peer not in answered:
                self._after.pop(peer, None)
                continue
            wait = min(self._after.get(peer, (at, self.interval / 2))[1] * 2, self.cap)
            self._after[peer] = (at + wait, wait)
