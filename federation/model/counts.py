"""Event counts: what the agent did with every event it received, by outcome and reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class EventCounts:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    # Live events never applied: replaced by a newer one on their subject while waiting (an
    # agent behind), or refused because too many subjects were waiting (a flood).
    superseded: int = 0
    dropped: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by reason
    published: Counter[str] = field(default_factory=Counter)  # by event type
    publish_failures: int = 0
    sources_restarted: int = 0
    streams_repaired: Counter[str] = field(default_factory=Counter)  # outbound/inbound/consumer

    def as_dict(self) -> dict[str, int]:
        return {
            "applied": self.applied,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "rejected": sum(self.rejected.values()),
            "superseded": self.superseded,
            "dropped": self.dropped,
        }
