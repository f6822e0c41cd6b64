"""Replay: stored events → filtered rows, and the imports a cluster would have computed at a time.

``state_at`` feeds one cluster's inbound stream (everything that cluster received, in the order
it received it) through the same Beliefs, import rules and weight policy as the agent, stepping
the weight memory at every event and every reconcile interval up to the instant asked for, as the
agent's reconcile loop does. What the bus does not carry cannot be replayed: a same-named local
pool that this cluster does not export (the ``local`` backend) and its load are never published,
so replayed imports have no ``local`` backend.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from federation import messages
from federation.messages import (
    Event,
    ExportEvent,
    ExportSet,
    Heartbeat,
    InvalidEvent,
    LoadDigest,
)
from federation.model.beliefs import Beliefs
from federation.model.freshness import link_state
from federation.model.imports import desired_imports
from federation.model.pools import PoolKey
from federation.model.views import ImportView, import_views
from federation.model.weights import WeightMemory, WeightPolicy

TYPES = {
    "export": ExportEvent,
    "exports": ExportSet,
    "load": messages.LoadReport,
    "digest": LoadDigest,
    "beat": Heartbeat,
}


@dataclass(frozen=True)
class Stored:
    """One stored message, decoded when possible."""

    stream: str
    sequence: int
    stored_at: float
    subject: str
    event: Event | None
    error: str | None = None
    # Of an export set: the pools the same cluster exported in this stream just before it and
    # this one leaves out (each withdrawn by the omission; ``select`` fills it in).
    withdrew: tuple[PoolKey, ...] = ()

    @property
    def type(self) -> str:
        if self.event is None:
            return "invalid"
        return next(t for t, cls in TYPES.items() if isinstance(self.event, cls))


def decode_stored(
    stream: str, sequence: int, stored_at: float, subject: str, data: bytes
) -> Stored:
    try:
        return Stored(stream, sequence, stored_at, subject, messages.decode(data))
    except InvalidEvent as exc:
        return Stored(stream, sequence, stored_at, subject, None, exc.reason)


@dataclass(frozen=True)
class ReplayFilter:
    since: float | None = None
    until: float | None = None
    clusters: frozenset[str] = field(default_factory=frozenset)
    pools: frozenset[PoolKey] = field(default_factory=frozenset)
    types: frozenset[str] = field(default_factory=frozenset)

    def accepts(self, s: Stored) -> bool:
        if self.since is not None and s.stored_at < self.since:
            return False
        if self.until is not None and s.stored_at > self.until:
            return False
        if self.types and s.type not in self.types:
            return False
        e = s.event
        if self.clusters and (e is None or e.cluster not in self.clusters):
            return False
        if self.pools:
            if e is None:
                return False
            return not (self.pools.isdisjoint(pools_of(e)) and self.pools.isdisjoint(s.withdrew))
        return True


def pools_of(event: Event) -> list[PoolKey]:
    """The pools an event speaks of (every pool of a digest or an export set, none for a
    heartbeat)."""
    if isinstance(event, Heartbeat):
        return []
    if isinstance(event, LoadDigest):
        return [PoolKey(p.namespace, p.name) for p in event.pools]
    if isinstance(event, ExportSet):
        return [PoolKey(e.namespace, e.name) for e in event.exports]
    return [PoolKey(event.namespace, event.name)]


def parse_time(text: str) -> float:
    """Seconds since the epoch, or an ISO 8601 time (``Z`` or an offset; naive means UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def iso_ms(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def row(s: Stored) -> dict[str, Any]:
    """One event as a JSON line."""
    out: dict[str, Any] = {
        "stream": s.stream,
        "seq": s.sequence,
        "stored_at": iso_ms(s.stored_at),
        "subject": s.subject,
        "type": s.type,
    }
    if s.event is None:
        out["error"] = s.error
    else:
        out["cluster"] = s.event.cluster
        if isinstance(s.event, LoadDigest | ExportSet):
            out["pools"] = [str(k) for k in pools_of(s.event)]
            if s.withdrew:
                out["withdrew"] = [str(k) for k in s.withdrew]
        elif not isinstance(s.event, Heartbeat):
            out["pool"] = f"{s.event.namespace}/{s.event.name}"
        out["event"] = msgspec.to_builtins(s.event)
    return out


def select(stored: Iterable[Stored], f: ReplayFilter) -> list[Stored]:
    """The stored events ``f`` accepts, in the order they were stored. An export set withdraws
    a pool by leaving it out, so each set is first told what it withdrew (``Stored.withdrew``):
    the pools the same cluster exported in the same stream just before it — its previous set,
    and the per-pool exports and tombstones stored since — that it leaves out, read whatever
    the window. A ``--pool`` filter then shows the sets that withdrew the pool, not only those
    that listed it. Stream order is taken as the order they were said in (a set published
    again after a newer one would be judged against that one). Before a cluster's first set
    the stream still holds, nothing can be told: its per-pool exports are not followed."""
    ordered = sorted(stored, key=lambda s: (s.stream, s.sequence))
    exported: dict[tuple[str, str], set[PoolKey]] = {}  # (stream, cluster): since its first set
    told = []
    for s in ordered:
        e = s.event
        if isinstance(e, ExportSet):
            pools = set(pools_of(e))
            before = exported.get((s.stream, e.cluster), set())
            exported[(s.stream, e.cluster)] = pools
            if before - pools:
                s = replace(s, withdrew=tuple(sorted(before - pools)))
        elif isinstance(e, ExportEvent) and (s.stream, e.cluster) in exported:
            key, held = PoolKey(e.namespace, e.name), exported[(s.stream, e.cluster)]
            if e.withdrawn:
                held.discard(key)
            else:
                held.add(key)
        told.append(s)
    return sorted(
        (s for s in told if f.accepts(s)), key=lambda s: (s.stored_at, s.stream, s.sequence)
    )


def state_at(
    inbound: Sequence[Stored],
    *,
    cluster: str,
    members: Collection[str],
    at: float,
    policy: WeightPolicy,
    grace: float,
    step: float = 0.5,
) -> dict[PoolKey, ImportView]:
    """The import views ``cluster`` would have held at ``at``, from what it received: its
    inbound stream's exports and members' live events (as their outbound streams hold them),
    in the order they were stored."""
    events = sorted((s for s in inbound if s.event is not None and s.stored_at <= at),
                    key=lambda s: (s.stored_at, s.sequence))  # fmt: skip
    beliefs = Beliefs()
    memories: dict[PoolKey, WeightMemory] = {}
    views: dict[PoolKey, ImportView] = {}

    def recompute(now: float) -> None:
        nonlocal memories, views
        link = link_state(
            beliefs, own_cluster=cluster, members=members, connected=True, now=now,
            lease=policy.lease,
        )  # fmt: skip
        desired = desired_imports(
            beliefs, {}, own_cluster=cluster, now=now, grace=float("inf") if link.suspect else grace
        )
        views, memories = import_views(
            desired, beliefs, {}, memories, own_cluster=cluster, now=now, policy=policy,
            link=link, previous=views,
        )  # fmt: skip

    clock = events[0].stored_at if events else at
    for s in events:
        while clock + step < s.stored_at:  # the agent's periodic reconcile between events
            clock += step
            recompute(clock)
        assert s.event is not None
        beliefs.apply(s.event, s.stored_at)
        clock = s.stored_at
        recompute(clock)
    while clock + step < at:
        clock += step
        recompute(clock)
    recompute(at)
    return views
