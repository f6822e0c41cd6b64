"""Beliefs: what one cluster knows of every member, built only from the events it received.

Events carry full state, so a belief is simply the newest event per subject. Ordering is by the
per-subject sequence the publisher stamps (an export's ``generation``, a report's or beat's
``sequence``): an older or equal sequence is dropped and counted, which makes applying the same
stream twice, or in any interleaving of subjects, give the same beliefs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from federation.messages import Event, ExportEvent, Heartbeat, LoadReport, sequence_of

ExportId = tuple[str, str, str]  # (cluster, namespace, name)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same sequence as what we hold: a redelivery
    STALE = "stale"  # older than what we hold: reordered or replayed


def _subject_id(event: Event) -> tuple[str, ...]:
    if isinstance(event, Heartbeat):
        return ("beat", event.cluster)
    kind = "export" if isinstance(event, ExportEvent) else "load"
    return (kind, event.cluster, event.namespace, event.name)


@dataclass
class Beliefs:
    """The newest export, load report and heartbeat per subject, and when each was received.

    ``received_at`` is when the event reached this cluster, on this cluster's own clock (less
    the time it waited in the local inbound stream, as the local server measured it): every age
    and lease is measured on it. The publisher's ``published_at`` is its clock, not ours — clocks
    disagree by seconds to minutes in real life — so it is never compared with ours here.
    """

    exports: dict[ExportId, ExportEvent] = field(default_factory=dict)
    loads: dict[ExportId, LoadReport] = field(default_factory=dict)
    beats: dict[str, Heartbeat] = field(default_factory=dict)
    seen_at: dict[tuple[str, ...], float] = field(default_factory=dict)
    heard_at: dict[str, float] = field(default_factory=dict)  # newest beat or report per cluster
    _sequences: dict[tuple[str, ...], int] = field(default_factory=dict)
    # The same exports indexed by pool, so one import can be recomputed without a full scan.
    _by_pool: dict[tuple[str, str], dict[str, ExportEvent]] = field(default_factory=dict)
    _by_cluster: dict[str, set[tuple[str, str]]] = field(default_factory=dict)

    def apply(self, event: Event, received_at: float) -> Outcome:
        sid = _subject_id(event)
        seq = sequence_of(event)
        held = self._sequences.get(sid)
        if held is not None and seq == held:
            return Outcome.DUPLICATE
        if held is not None and seq < held:
            return Outcome.STALE
        self._sequences[sid] = seq
        seen = received_at
        self.seen_at[sid] = seen
        if not isinstance(event, ExportEvent):
            self.heard_at[event.cluster] = max(seen, self.heard_at.get(event.cluster, seen))
        if isinstance(event, ExportEvent):
            self.exports[(event.cluster, event.namespace, event.name)] = event
            self._by_pool.setdefault((event.namespace, event.name), {})[event.cluster] = event
            self._by_cluster.setdefault(event.cluster, set()).add((event.namespace, event.name))
        elif isinstance(event, LoadReport):
            self.loads[(event.cluster, event.namespace, event.name)] = event
        else:
            self.beats[event.cluster] = event
        return Outcome.APPLIED

    def last_heard(self, cluster: str) -> float | None:
        """When ``cluster`` last showed life: its newest heartbeat or load report."""
        return self.heard_at.get(cluster)

    def report_seen_at(self, cluster: str, namespace: str, name: str) -> float | None:
        return self.seen_at.get(("load", cluster, namespace, name))

    def live_exports(self) -> list[ExportEvent]:
        return [e for e in self.exports.values() if not e.withdrawn]

    def exporters(self) -> set[str]:
        """Every cluster that ever exported something (withdrawn exports included)."""
        return set(self._by_cluster)

    def pools_exported_by(self, cluster: str) -> set[tuple[str, str]]:
        """(namespace, name) of every pool ``cluster`` exported (withdrawn ones included)."""
        return set(self._by_cluster.get(cluster, ()))

    def live_exports_of(self, namespace: str, name: str) -> list[ExportEvent]:
        """The live exports of one pool, by every cluster that exports it."""
        held = self._by_pool.get((namespace, name), {})
        return [e for e in held.values() if not e.withdrawn]
