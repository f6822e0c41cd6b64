"""Sequence gaps: events a peer published that never reached this cluster.

Every event arrives through this cluster's inbound stream, which sources each member's outbound
stream in that stream's order; the servers stamp each sourced message with its sequence in the
peer's outbound stream. After the agent has caught up (it starts from the newest event per
subject, skipping history on purpose), those sequences must be contiguous per peer. A jump means
events were lost on the way — a source stalled for so long that the peer's per-subject history
rolled over, for example. Events carry full state, so a gap is harmless to correctness, but it
says a link was unhealthy. A sequence at or below the last one is a redelivery, not a gap.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SourceGaps:
    last: dict[str, int] = field(default_factory=dict)  # peer -> last origin sequence seen
    missed: Counter[str] = field(default_factory=Counter)  # peer -> events never received

    def observe(self, peer: str, sequence: int, *, counting: bool) -> int:
        """Record a delivery; return how many of the peer's events were skipped before it
        (0 while not ``counting``: during catch-up, skipping history is the point)."""
        held = self.last.get(peer)
        if held is not None and sequence <= held:
            return 0
        self.last[peer] = sequence
        if held is None or not counting:
            return 0
        skipped = sequence - held - 1
        if skipped > 0:
            self.missed[peer] += skipped
        return max(0, skipped)
