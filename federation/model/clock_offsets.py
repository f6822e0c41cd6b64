"""Peers' clock offsets, estimated from what arrives: reported, never trusted.

Every event carries its publisher's ``published_at``; we know when it reached us on our own
clock. ``published_at - received_at`` is the peer's offset minus the event's delay, and a delay
is never negative, so the largest value of a recent window is the best estimate of the offset
(the least-delayed event). Ages and leases use our own receipt times only; the estimate is for
people (status, a metric, an alert), and dates one thing only: a peer's last words read back by
direct get after its lease ran out, which have no receipt time of their own (``Intake``): they
are dated as if they had arrived with the least delay seen from that peer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

WINDOW: Final = 32  # samples per peer


@dataclass
class ClockOffsets:
    samples: dict[str, deque[float]] = field(default_factory=dict)

    def observe(self, peer: str, published_at: float, received_at: float) -> None:
        window = self.samples.setdefault(peer, deque(maxlen=WINDOW))
        window.append(published_at - received_at)

    def offset(self, peer: str) -> float | None:
        """Seconds the peer's clock is ahead of ours (negative: behind); None before any."""
        window = self.samples.get(peer)
        return max(window) if window else None

    def offsets(self) -> dict[str, float]:
        return {p: max(w) for p, w in sorted(self.samples.items()) if w}
