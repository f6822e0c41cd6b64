"""The import book: every import's view and weight memory, kept up to date incrementally.

Recomputing every import at every reconcile made the agent's CPU grow with imports x reconciles
(84 % of its time at 1,000 imports, BENCHMARKS.md). A view can only change when

1. an input of that pool changed — an export or load of it (a report, or a digest entry that
   says something new), the local pool or its EPP sample: the caller names these keys
   (``dirty``);
2. an exporter's lease ran out or was renewed, or the link's state changed (suspect or back):
   the book sees it by comparing with its previous step;
3. time alone moves it — smoothing or a slow start under way, a target waiting to settle, a
   report ageing past full trust or the lease, a grace period running out: each import records
   the earliest instant at which that can happen (its *due* time) and is recomputed then —
   unless, asked again then, that instant has moved on (its report was renewed meanwhile: the
   common case with load digests), when it is only rescheduled.

A lone import whose only due time is its report's lease end, that report given by its exporter's
newest load digest, is *parked* on that digest instead of queued on its own: all of a cluster's
such imports share one due time, and when it comes while a newer digest has renewed them they
move on together, a lookup each, where a queued import costs a pop, a ``next_due`` and a push
(at 100 x 100, 9,900 lone imports renewed every few seconds: about 1,000 of those a second, most
of an agent's steady work; BENCHMARKS.md, session 24).

Every other import would be recomputed to the same view, so it is skipped. The result equals a
full recomputation at every step (a property test checks it): a skipped import's weight memory is
treated as stepped at the previous reconcile, as a full recomputation would have left it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition, accepted, fresh
from federation.model.freshness import LinkState, Staleness, stale_among, staleness
from federation.model.imports import DesiredImport, desired_import
from federation.model.pools import LocalPool, PoolKey
from federation.model.views import ImportView, backend_loads, import_view
from federation.model.weights import (
    BackendLoad,
    WeightMemory,
    WeightPolicy,
    lone_weights,
    next_ramp_step,
)


def next_due(
    d: DesiredImport,
    memory: WeightMemory | None,
    beliefs: Beliefs,
    local_loads: Mapping[PoolKey, BackendLoad],
    *,
    now: float,
    policy: WeightPolicy,
    grace: float,
    as_of: float | None = None,
) -> float:
    """The earliest instant after ``as_of`` (default: now) at which time alone could change
    this import's view; ``now`` is the instant the local loads' ages are measured at."""
    sampled = now
    now = sampled if as_of is None else as_of
    if memory is None or memory.weights != memory.goal:
        return now  # smoothing under way (or nothing remembered): step at every reconcile
    # (Asked per import at every recomputation, over every exporter: one running minimum.)
    soonest = math.inf
    ramping = policy.slow_start
    for since in memory.healthy_since.values():
        if now - since >= ramping:
            continue  # (its ramp is done: next_ramp_step would say None, after a call)
        step = next_ramp_step(now - since, policy)  # a slow start rises in steps
        if step is not None and since + step < soonest:
            soonest = since + step
    if memory.target != memory.goal:  # a target waiting to settle
        held = memory.target_since
        soonest = min(soonest, now if held is None else held + policy.settle)
    ns, name = d.key
    report_seen_at = beliefs.report_seen_at
    full, lease = policy.lease * policy.full_trust, policy.lease
    local = local_loads.get(d.key) if d.has_local else None
    seen = [report_seen_at(cluster, ns, name) for cluster in d.exporting_clusters]
    if local is not None:
        seen.append(sampled - local.age)
    # One backend serving (``WeightMemory.lone``) takes all the traffic whatever its trust:
    # only a lease's end can move the view (it stops serving, a reason turns to "stale").
    lone = memory.lone
    for at in seen:
        if at is None:
            continue
        if lone:
            if now < at + lease < soonest:
                soonest = at + lease
        elif now < at + full:
            if at + full < soonest:
                soonest = at + full
        elif now < at + lease:
            return now  # trust falls continuously between full trust and the lease
    if math.isfinite(grace):
        last_heard, seen_at = beliefs.last_heard, beliefs.seen_at
        for export in beliefs.live_exports_of(ns, name):
            latest = last_heard(export.cluster)
            exported = seen_at.get(("export", export.cluster, ns, name))
            if exported is not None and (latest is None or exported > latest):
                latest = exported
            if latest is not None and latest + grace < soonest:
                soonest = latest + grace
    return soonest


def _still_lone(
    d: DesiredImport,
    held: ImportView,
    memory: WeightMemory,
    loads: Mapping[str, BackendLoad | None],
    conditions: tuple[Condition, ...],
    policy: WeightPolicy,
) -> bool:
    """Whether a lone import (``WeightMemory.lone``), settled at its goal, would be recomputed
    to the view it has: the same exporters, the weights a lone step gives these loads
    (``lone_weights``), the same conditions. Such a step reads no load but to say who can
    serve, so its backend's load moving — the common case at scale, an import per exported
    pool that one cluster serves — costs this, not a recomputation. (Its memory is as a full
    recomputation would leave it but for its instant, which the book treats as for any import
    it skips.)"""
    return (
        held.desired == d
        and memory.weights == memory.goal == memory.target
        and lone_weights(loads, policy) == held.weights
        and held.conditions == conditions
    )


@dataclass
class ImportBook:
    """Views, memories and due times of one cluster's imports; see the module's docstring."""

    policy: WeightPolicy
    own_cluster: str
    views: dict[PoolKey, ImportView] = field(default_factory=dict)
    memories: dict[PoolKey, WeightMemory] = field(default_factory=dict)
    due: dict[PoolKey, float] = field(default_factory=dict)
    computed_at: dict[PoolKey, float] = field(default_factory=dict)  # each import's last step
    conflicted: set[PoolKey] = field(default_factory=set)  # views with excluded exporters
    recomputed: int = 0  # imports recomputed, over the book's life (for benchmarks)
    kept_lone: int = 0  # lone imports whose inputs moved, found as they were (``_still_lone``)
    _queue: list[tuple[float, PoolKey]] = field(default_factory=list)  # due heap, lazily pruned
    # Parked imports (see the module's docstring), by (exporter, digest received at): each group
    # is due at its digest's lease end, on a heap of its own.
    _parked: dict[tuple[str, float], set[PoolKey]] = field(default_factory=dict)
    _parked_in: dict[PoolKey, tuple[str, float]] = field(default_factory=dict)
    _park_queue: list[tuple[float, tuple[str, float]]] = field(default_factory=list)
    stale: frozenset[str] = frozenset()  # exporters whose lease had run out at the last step
    _link: LinkState = field(default_factory=lambda: LinkState(False))
    _last_live_step: float | None = None  # the previous step with the link not suspect

    def step(
        self,
        beliefs: Beliefs,
        local_pools: Mapping[PoolKey, LocalPool],
        local_loads: Mapping[PoolKey, BackendLoad],
        link: LinkState,
        *,
        now: float,
        grace: float,
        dirty: Collection[PoolKey] | None,
    ) -> bool:
        """Bring every import up to date at ``now``; True when some view changed.

        ``dirty`` names the pools whose inputs changed; None means anything may have (a first
        step, or local pools changed).
        """
        stale = self._stale_exporters(beliefs, now)  # (recomputing moves no belief)
        if grace < self.policy.lease:
            self._unpark_all()  # (a grace within the lease could come due first: see _parking)
        if dirty is None or link != self._link:
            keys = set(self.views) | {PoolKey(e.namespace, e.name) for e in beliefs.live_exports()}
        else:
            came = self._pop_due(now) | self._pop_parked(beliefs, now)
            keys = set(dirty) | self._still_due(came - set(dirty), beliefs, local_loads, now, grace)
            # Leases that ran out or were renewed: a renewed one may also revive exports that
            # had left after the grace period, so every pool the cluster exported is looked at.
            for cluster in stale ^ self.stale:
                keys |= {PoolKey(*k) for k in beliefs.pools_exported_by(cluster)}
        changed = self._recompute(keys, beliefs, local_pools, local_loads, link, now, grace)
        self.stale = stale
        self._link = link
        if not link.suspect:
            self._last_live_step = now
        return changed

    def _stale_exporters(self, beliefs: Beliefs, now: float) -> frozenset[str]:
        return frozenset(
            stale_among(beliefs, beliefs.exporters(), now=now, lease=self.policy.lease)
        )

    def _schedule(
        self,
        key: PoolKey,
        due: float,
        parking: tuple[DesiredImport, WeightMemory | None, Beliefs, float] | None = None,
    ) -> None:
        """``due`` is when time alone can next move the import (never: inf, not queued);
        ``parking`` (its import, memory, the beliefs and the step's grace) lets it be parked."""
        self._unpark(key)
        self.due[key] = due
        if not math.isfinite(due):
            return
        group = None if parking is None else self._parking(due, *parking)
        if group is None:
            heapq.heappush(self._queue, (due, key))
            return
        held = self._parked.get(group)
        if held is None:
            held = self._parked[group] = set()
            heapq.heappush(self._park_queue, (due, group))
        held.add(key)
        self._parked_in[key] = group

    def _parking(
        self,
        due: float,
        d: DesiredImport,
        memory: WeightMemory | None,
        beliefs: Beliefs,
        grace: float,
    ) -> tuple[str, float] | None:
        """The group a lone import can be parked in: one exporter (and no other live export of
        the pool, a conflicting one included), no local pool, settled, its slow start over, and
        its due time its report's lease end, the report given by the exporter's newest digest.
        Then nothing but that report's lease end can come due before the report is renewed (a
        grace period ends ``grace`` after the exporter was last heard, never before its report's
        lease end while ``grace >= lease``), and a renewal moves the due time to the next
        digest's lease end."""
        if (
            memory is None
            or not memory.lone
            or len(d.exporting_clusters) != 1
            or d.has_local
            or grace < self.policy.lease
            or not memory.weights == memory.goal == memory.target
        ):
            return None
        if len(beliefs.live_exports_of(*d.key)) != 1:
            # A conflicting exporter left out of the import still has a grace end of its own
            # (``next_due``), which a renewal would pass over.
            return None
        cluster = d.exporting_clusters[0]
        at = beliefs.digest_seen_at(cluster)
        if at is None or due != at + self.policy.lease:
            return None
        if not beliefs.given_by_newest_digest(cluster, *d.key):
            return None
        if memory.at is None or any(
            memory.at - since < self.policy.slow_start for since in memory.healthy_since.values()
        ):
            return None  # a slow start under way comes due at its next step
        return (cluster, at)

    def _unpark(self, key: PoolKey) -> None:
        group = self._parked_in.pop(key, None)
        if group is not None:
            self._parked[group].discard(key)  # (an emptied group's heap entry finds it gone)

    def _unpark_all(self) -> None:
        for key in list(self._parked_in):
            self._unpark(key)
            heapq.heappush(self._queue, (self.due[key], key))

    def _pop_parked(self, beliefs: Beliefs, now: float) -> set[PoolKey]:
        """The parked imports whose due time came and whose report was not renewed since; the
        renewed move on to their exporter's newest digest's group, without a ``next_due``."""
        came: set[PoolKey] = set()
        lease = self.policy.lease
        while self._park_queue and self._park_queue[0][0] <= now:
            _, group = heapq.heappop(self._park_queue)
            keys = self._parked.pop(group, set())
            cluster = group[0]
            newest = beliefs.digest_seen_at(cluster)
            if newest is None or newest + lease <= now:
                renewed: set[PoolKey] = set()
            else:
                given = beliefs.given_by_newest_digest
                renewed = {k for k in keys if given(cluster, *k)}
            for key in keys - renewed:
                del self._parked_in[key]
                came.add(key)
            if renewed:
                assert newest is not None
                moved_to = (cluster, newest)
                held = self._parked.get(moved_to)
                if held is None:
                    held = self._parked[moved_to] = set()
                    heapq.heappush(self._park_queue, (newest + lease, moved_to))
                held |= renewed
                due = newest + lease
                for key in renewed:
                    self._parked_in[key] = moved_to
                    self.due[key] = due  # (what ``next_due`` would have said: see _parking)
        return came

    def _pop_due(self, now: float) -> set[PoolKey]:
        keys = set()
        while self._queue and self._queue[0][0] <= now:
            at, key = heapq.heappop(self._queue)
            if self.due.get(key) == at:  # else superseded by a later recomputation
                keys.add(key)
        return keys

    def _still_due(
        self,
        keys: set[PoolKey],
        beliefs: Beliefs,
        local_loads: Mapping[PoolKey, BackendLoad],
        now: float,
        grace: float,
    ) -> set[PoolKey]:
        """Of imports whose due time came (and whose inputs did not change), those time can
        move now. A renewed report pushes its import's due time on without changing the view:
        asked again with the held import and memory, such an import is simply rescheduled,
        at a small part of a recomputation's cost."""
        due: set[PoolKey] = set()
        for key in keys:
            held, memory = self.views.get(key), self.memories.get(key)
            last = self.computed_at.get(key)
            if held is None or last is None or self.due.get(key, last) <= last:
                due.add(key)  # computed while moving (smoothing, trust falling): step it on
                continue
            # The view held still from its last recomputation until this due time. Asked again
            # as of then, with today's beliefs: does anything fall due between then and now?
            at = next_due(held.desired, memory, beliefs, local_loads, now=now, as_of=last,
                          policy=self.policy, grace=grace)  # fmt: skip
            if at <= now:
                due.add(key)
            else:
                self._schedule(key, at, (held.desired, memory, beliefs, grace))
        return due

    def _recompute(
        self,
        keys: Collection[PoolKey],
        beliefs: Beliefs,
        local_pools: Mapping[PoolKey, LocalPool],
        local_loads: Mapping[PoolKey, BackendLoad],
        link: LinkState,
        now: float,
        grace: float,
    ) -> bool:
        policy, own = self.policy, self.own_cluster
        freshness: dict[str, Staleness] = {}
        updates: dict[PoolKey, ImportView | None] = {}
        for key in keys:
            d = desired_import(
                key, beliefs.live_exports_of(*key), local_pools.get(key), beliefs,
                own_cluster=own, now=now, grace=grace,
            )  # fmt: skip
            held = self.views.get(key)
            if d is None:
                self.recomputed += 1
                if held is not None:
                    updates[key] = None
                self.memories.pop(key, None)
                self._unpark(key)
                self.due.pop(key, None)
                self.computed_at.pop(key, None)
                continue
            for c in d.exporting_clusters:
                if c not in freshness:
                    freshness[c] = staleness(beliefs, c, now=now, lease=policy.lease)
            memory = self.memories.get(key)
            if (
                held is not None
                and memory is not None
                and memory.lone
                and _still_lone(
                    d, held, memory, backend_loads(d, beliefs, local_loads, now=now),
                    (accepted(d), fresh(d, freshness, link, now=now, lease=policy.lease)), policy,
                )
            ):  # fmt: skip
                self.kept_lone += 1
                # As it was. A due time still to come stays queued (asked again then, it moves
                # on to the renewed report's lease end); one that came was popped by this step,
                # so the next is queued here, or time alone would never step the import again.
                if self.due.get(key, math.inf) <= now:
                    self._schedule(key, next_due(d, memory, beliefs, local_loads, now=now,
                                                 policy=policy, grace=grace),
                                   (d, memory, beliefs, grace))  # fmt: skip
                continue
            self.recomputed += 1
            last = self._last_live_step
            if (
                memory is not None
                and memory.at is not None
                and last is not None
                and memory.at < last
            ):
                # Skipped since: a full recomputation would have stepped it, unchanged, then.
                memory = replace(memory, at=last)
            view, memory = import_view(
                d, beliefs, local_loads, memory, freshness,
                own_cluster=own, now=now, policy=policy, link=link, held=held,
            )  # fmt: skip
            if memory is not None:
                self.memories[key] = memory
            if view != held:
                updates[key] = view
            due = next_due(d, memory, beliefs, local_loads, now=now, policy=policy, grace=grace)
            self._schedule(key, due, (d, memory, beliefs, grace))
            self.computed_at[key] = now
        if not updates:
            return False
        views = dict(self.views)  # a new mapping: sinks may keep the one they were given
        for key, update in updates.items():
            if update is None:
                views.pop(key, None)
            else:
                views[key] = update
            if update is not None and update.desired.excluded:
                self.conflicted.add(key)
            else:
                self.conflicted.discard(key)
        self.views = views
        return True
