"""Freshness: is a peer stale, or is it *my* link to the bus that is down?

Each exporting cluster holds a lease, renewed by its heartbeats and load digests (or reports).
Past the lease its weight is 0 and its imports say since when it is stale; past the grace period
it leaves ``exportingClusters`` (see :mod:`federation.model.imports`).

A partition of this cluster's own link looks, from inside, like every peer dying at once. The two
are told apart so that a local outage does not drain every remote backend: when this agent is
disconnected from its NATS server, or when *every* peer (at least two of them) went silent past
the lease, the link is suspect: the agent keeps the last known weights, marks them suspect, and
collects no garbage. With a single peer the two cases cannot be told apart; the peer is then
treated as stale, which is the safe choice for traffic.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from federation.model.beliefs import Beliefs


@dataclass(frozen=True)
class LinkState:
    suspect: bool
    reason: str = ""
    since: float | None = None  # when the last peer was heard, if suspect


def link_state(
    beliefs: Beliefs,
    *,
    own_cluster: str,
    members: Collection[str],
    connected: bool,
    now: float,
    lease: float,
) -> LinkState:
    peers = [m for m in members if m != own_cluster]
    heard = [beliefs.last_heard(p) for p in peers]
    last = max((t for t in heard if t is not None), default=None)
    if not connected:
        return LinkState(True, "disconnected from this cluster's NATS server", last)
    if len(peers) >= 2 and last is not None and now - last > lease:
        # No age in the text: it must not change while nothing but the clock moves.
        return LinkState(True, f"no peer heard within the lease ({lease:g}s)", last)
    return LinkState(False)


@dataclass(frozen=True)
class Staleness:
    cluster: str
    age: float | None  # seconds since the cluster was last heard; None: never
    stale: bool

    def since(self, lease: float, now: float) -> float | None:
        """When the lease ran out (wall-clock seconds), if it did."""
        return None if self.age is None or not self.stale else now - self.age + lease


def staleness(beliefs: Beliefs, cluster: str, *, now: float, lease: float) -> Staleness:
    heard = beliefs.last_heard(cluster)
    age = None if heard is None else max(0.0, now - heard)
    return Staleness(cluster, age, age is None or age > lease)


def stale_among(beliefs: Beliefs, clusters: Iterable[str], *, now: float, lease: float) -> set[str]:
    """Those of ``clusters`` whose lease ran out (or that were never heard): ``staleness`` for
    many at once, without a record per cluster (every reconcile asks it of every member)."""
    heard = beliefs.heard_at
    return {c for c in clusters if (at := heard.get(c)) is None or now - at > lease}


def next_lease_end(
    beliefs: Beliefs, clusters: Collection[str], *, now: float, lease: float, fold: float = 0.0
) -> float | None:
    """The earliest instant after ``now`` at which one of ``clusters``' leases runs out (None
    when none still runs): when a dead cluster's weight must go to 0, whatever the reconcile's
    period. With ``fold``, the last end within ``fold`` seconds of the earliest: clusters cut
    off together end their leases over a heartbeat interval, and one step should see several."""
    ends = [
        heard + lease
        for c in clusters
        if (heard := beliefs.last_heard(c)) is not None and heard + lease >= now
    ]
    if not ends:
        return None
    first = min(ends)
    return max(e for e in ends if e <= first + fold)
