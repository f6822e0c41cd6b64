"""Sequence gaps: exports a peer published that never reached this cluster.

Exports arrive through this cluster's inbound stream, which sources each member's export
subjects (a filtered source: the live events travel on plain NATS) in its outbound stream's
order. The outbound stream's own sequences therefore skip every live event between two exports,
so each export carries its publisher's own count of exports (``Fed-Export-Seq: <epoch>.<n>``,
the epoch being the publishing agent's start). After the agent has caught up (it starts from
the newest export per subject, skipping history on purpose), the counts must be contiguous per
peer and epoch. A jump means exports were lost on the way — a source stalled for so long that
the peer's per-subject history rolled over, for example. Events carry full state, so a gap is
harmless to correctness, but it says a link was unhealthy. A count at or below the last one is a
redelivery, not a gap; a new epoch (the peer restarted) starts counting afresh.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class SourceGaps:
    last: dict[str, int] = field(default_factory=dict)  # peer -> last export count seen
    missed: Counter[str] = field(default_factory=Counter)  # peer -> exports never received
    epochs: dict[str, int] = field(default_factory=dict)  # peer -> the epoch of ``last``

    def observe(self, peer: str, sequence: int, *, counting: bool, epoch: int = 0) -> int:
        """Record a delivery; return how many of the peer's exports were skipped before it
        (0 while not ``counting``: during catch-up, skipping history is the point)."""
        if self.epochs.get(peer, epoch) != epoch:
            self.last.pop(peer, None)  # the peer restarted: its count starts again
        self.epochs[peer] = epoch
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
