"""Beliefs: what one cluster knows of every member, built only from the events it received.

Events carry full state, so a belief is simply the newest event per subject. Ordering is by the
per-subject sequence the publisher stamps (an export's ``generation``, a report's or beat's
``sequence``): an older or equal sequence is dropped and counted, which makes applying the same
stream twice, or in any interleaving of subjects, give the same beliefs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from msgspec.structs import astuple

from federation.messages import (
    Event,
    ExportEvent,
    ExportSet,
    Heartbeat,
    LoadDigest,
    LoadReport,
    entry_content,
    report_of,
    sequence_of,
)

ExportId = tuple[str, str, str]  # (cluster, namespace, name)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # same sequence as what we hold: a redelivery
    STALE = "stale"  # older than what we hold: reordered or replayed


def _subject_id(event: Event) -> tuple[str, ...]:
    if isinstance(event, Heartbeat):
        return ("beat", event.cluster)
    if isinstance(event, LoadDigest):
        return ("digest", event.cluster)
    if isinstance(event, ExportSet):
        return ("exports", event.cluster)
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
    # Per load held, when what it says was first received (a digest that repeats it keeps this):
    # the end of the window its rates were counted in, on this cluster's clock.
    rated_at: dict[ExportId, float] = field(default_factory=dict)
    _sequences: dict[tuple[str, ...], int] = field(default_factory=dict)
    # The same exports indexed by pool, so one import can be recomputed without a full scan.
    _by_pool: dict[tuple[str, str], dict[str, ExportEvent]] = field(default_factory=dict)
    _by_cluster: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    # Per exporting cluster, the newest export generation held (what heartbeats acknowledge).
    watermarks: dict[str, int] = field(default_factory=dict)
    # Per cluster, the pools (namespace, name) whose load a digest gave us.
    _from_digest: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    # The pools (namespace, name) whose load the last applied digest changed, added or removed.
    # An entry that says what the held report says only renews it (its sequence and receipt
    # time): see ``digest_dirty`` for which of those can still move an import.
    moved: tuple[tuple[str, str], ...] = ()
    # The pools it only renewed, with when their previous report had been received.
    renewed: tuple[tuple[tuple[str, str], float | None], ...] = ()
    _digest_seen: float = 0.0
    # What each load held says (``_content``), so that a digest entry is compared with it
    # without taking the held report apart again: most entries only renew.
    _contents: dict[ExportId, tuple[object, ...]] = field(default_factory=dict)
    # The pools (namespace, name) whose export the last applied export set changed: its newer
    # entries, and the pools it no longer lists (withdrawn).
    set_moved: tuple[tuple[str, str], ...] = ()

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
        if not isinstance(event, ExportEvent | ExportSet):  # (stored state, replayed: no life)
            self.heard_at[event.cluster] = max(seen, self.heard_at.get(event.cluster, seen))
        if isinstance(event, ExportEvent):
            self.exports[(event.cluster, event.namespace, event.name)] = event
            self._by_pool.setdefault((event.namespace, event.name), {})[event.cluster] = event
            self._by_cluster.setdefault(event.cluster, set()).add((event.namespace, event.name))
            self.watermarks[event.cluster] = max(self.watermarks.get(event.cluster, 0), seq)
        elif isinstance(event, ExportSet):
            self.set_moved = self._apply_set(event, seen)
        elif isinstance(event, LoadReport):
            self.loads[(event.cluster, event.namespace, event.name)] = event
            self._contents[(event.cluster, event.namespace, event.name)] = _content(event)
            self.rated_at[(event.cluster, event.namespace, event.name)] = seen
            self._from_digest.get(event.cluster, set()).discard((event.namespace, event.name))
        elif isinstance(event, LoadDigest):
            self.moved = self._apply_digest(event, seen)
        else:
            self.beats[event.cluster] = event
        return Outcome.APPLIED

    def _apply_set(self, exports: ExportSet, seen: float) -> tuple[tuple[str, str], ...]:
        """Each entry applied as the export it is (so unless a newer one is held); each live
        export of the cluster that the set does not list, withdrawn by a tombstone of the set's
        sequence (unless a newer export of it is held). Repeated entries cost a lookup each."""
        cluster = exports.cluster
        moved: list[tuple[str, str]] = []
        listed: set[tuple[str, str]] = set()
        for entry in exports.exports:
            pool = (entry.namespace, entry.name)
            listed.add(pool)
            if self.apply(entry, seen) is Outcome.APPLIED:
                moved.append(pool)
        for pool in self._by_cluster.get(cluster, set()) - listed:
            held = self.exports[(cluster, *pool)]
            if held.withdrawn:
                continue
            tombstone = ExportEvent(
                cluster=cluster, namespace=pool[0], name=pool[1], generation=exports.sequence,
                exported_at=held.exported_at, published_at=exports.published_at, withdrawn=True,
            )  # fmt: skip
            if self.apply(tombstone, seen) is Outcome.APPLIED:
                moved.append(pool)
        return tuple(moved)

    def _apply_digest(self, digest: LoadDigest, seen: float) -> tuple[tuple[str, str], ...]:
        """Each entry as its pool's report (unless a newer per-pool report is held); a pool a
        digest no longer lists loses the load an earlier digest gave it. Linear in the digest:
        a peer's digests cost it the pools they list, not every load it holds."""
        cluster, sequence = digest.cluster, digest.sequence
        moved: list[tuple[str, str]] = []
        renewed: list[tuple[tuple[str, str], float | None]] = []
        listed: set[tuple[str, str]] = set()
        given = self._from_digest.setdefault(cluster, set())
        for entry in digest.pools:
            pool = (entry.namespace, entry.name)
            listed.add(pool)
            key = (cluster, *pool)
            sid = ("load", *key)
            held = self._sequences.get(sid)
            if held is not None and sequence <= held:
                continue
            self._sequences[sid] = sequence
            previous_seen = self.seen_at.get(sid)
            self.seen_at[sid] = seen
            given.add(pool)
            content = entry_content(entry)
            if self._contents.get(key) == content:  # (kept for exactly the loads held)
                renewed.append((pool, previous_seen))  # the report held says the same
                continue
            self.loads[key] = report_of(digest, entry)
            self._contents[key] = content
            self.rated_at[key] = seen
            moved.append(pool)
        for pool in given - listed:
            given.discard(pool)
            key = (cluster, *pool)
            self.loads.pop(key, None)
            self._contents.pop(key, None)
            self.rated_at.pop(key, None)
            self.seen_at.pop(("load", *key), None)
            moved.append(pool)
        self.renewed = tuple(renewed)
        self._digest_seen = seen
        return tuple(moved)

    def digest_dirty(self, full_trust_age: float) -> tuple[tuple[str, str], ...]:
        """The pools the last applied digest can have moved: those whose load changed, came or
        went, and those it only renewed whose previous report was no longer fully trusted (older
        than ``full_trust_age``): a renewal restores their trust, so their weight moves too."""
        faded = [
            pool
            for pool, before in self.renewed
            if before is None or before < self._digest_seen - full_trust_age
        ]
        return self.moved + tuple(faded)

    def export_set_sequence(self, cluster: str) -> int | None:
        """The sequence of the newest export set of ``cluster`` applied here."""
        return self._sequences.get(("exports", cluster))

    def digest_sequence(self, cluster: str) -> int | None:
        """The sequence of the newest load digest of ``cluster`` applied here."""
        return self._sequences.get(("digest", cluster))

    def load_sequence(self, cluster: str, namespace: str, name: str) -> int | None:
        """The newest sequence applied on a pool's load: a report's, or a digest's entry's."""
        return self._sequences.get(("load", cluster, namespace, name))

    def last_heard(self, cluster: str) -> float | None:
        """When ``cluster`` last showed life: its newest heartbeat, load digest or report."""
        return self.heard_at.get(cluster)

    def report_seen_at(self, cluster: str, namespace: str, name: str) -> float | None:
        return self.seen_at.get(("load", cluster, namespace, name))

    def digest_seen_at(self, cluster: str) -> float | None:
        """When the newest load digest of ``cluster`` was received here."""
        return self.seen_at.get(("digest", cluster))

    def given_by_newest_digest(self, cluster: str, namespace: str, name: str) -> bool:
        """Whether the pool's load held is the one ``cluster``'s newest digest gave (or renewed):
        then its next digest renews it, changes it (``moved``) or drops it (``moved``), so the
        report's lease end moves with the cluster's digests (see ``ImportBook``'s parked dues)."""
        if (namespace, name) not in self._from_digest.get(cluster, ()):
            return False
        at = self.seen_at.get(("digest", cluster))
        return at is not None and self.seen_at.get(("load", cluster, namespace, name)) == at

    def live_exports(self) -> list[ExportEvent]:
        return [e for e in self.exports.values() if not e.withdrawn]

    def exporters(self) -> set[str]:
        """Every cluster that ever exported something (withdrawn exports included)."""
        return set(self._by_cluster)

    def pools_exported_by(self, cluster: str) -> set[tuple[str, str]]:
        """(namespace, name) of every pool ``cluster`` exported (withdrawn ones included)."""
        return set(self._by_cluster.get(cluster, ()))

    def ever_exported(self, namespace: str, name: str) -> bool:
        """Whether some cluster exported the pool (withdrawn or not): until one did, no import
        of it exists, and its load moves nothing (a digest lists pools whose exports may not
        have arrived yet: at a cold start, most of them)."""
        return (namespace, name) in self._by_pool

    def live_exports_of(self, namespace: str, name: str) -> list[ExportEvent]:
        """The live exports of one pool, by every cluster that exports it."""
        held = self._by_pool.get((namespace, name), {})
        return [e for e in held.values() if not e.withdrawn]


def _content(report: LoadReport) -> tuple[object, ...]:
    """What a report says about its pool, without who, when or in which order: the fields after
    ``published_at``, in the order a digest entry carries them too (a test keeps them equal)."""
    return astuple(report)[6:]
