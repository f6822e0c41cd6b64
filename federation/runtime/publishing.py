"""Publishing: turning this cluster's pools, load and liveness into full-state bus events.

Level-triggered: the publisher compares what it should have said with what it has said, and says
the difference. A failed publish is logged, counted and simply tried again on the next cycle, so
an outage costs latency, never an export.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec
from opentelemetry import propagate, trace

from federation import messages
from federation.messages import (
    Event,
    ExportEvent,
    ExportSet,
    Heartbeat,
    LoadDigest,
    LoadReport,
    PoolLoad,
)
from federation.model.beliefs import Beliefs
from federation.model.counts import EventCounts
from federation.model.exported import Acks
from federation.model.failures import explain
from federation.model.loads import LoadSample, worth_publishing
from federation.model.pools import LocalPool, PoolKey, is_exported
from federation.runtime.ports import Bus, Signer

log = logging.getLogger(__name__)

LOAD_CHANGE_THRESHOLD = 0.02  # saturation moves smaller than this wait for the keepalive
# Export publishes awaiting their acknowledgement at once. One that fails (or that the server
# already held) while later ones in its window are stored leaves a hole in our count of exports,
# which peers report as a gap (``model.gaps``).
EXPORTS_IN_FLIGHT = 64
# A digest's entries stop here (names may be long); the pools beyond go one report each.
DIGEST_BUDGET_BYTES = messages.MAX_EVENT_BYTES - 16 * 1024


def messaging_attributes(subject: str, payload: bytes, cluster: str) -> dict[str, str | int]:
    """OpenTelemetry messaging semantic conventions, plus which cluster did it."""
    return {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.message.body.size": len(payload),
        "federation.cluster": cluster,
    }


def export_content(e: ExportEvent) -> tuple[object, ...]:
    """What an export says, without its sequence and timestamps: equal content, no republish."""
    return (e.target_ports, e.app_protocol, e.model, e.epp, e.parents, e.withdrawn)


@dataclass
class Publisher:
    bus: Bus
    clusterset: str
    cluster: str
    wall: Callable[[], float]
    counts: EventCounts
    keepalive: float
    tracer: trace.Tracer | None = None  # None: nothing exports our spans, so none are made
    signer: Signer | None = None
    exported: dict[PoolKey, ExportEvent] = field(default_factory=dict)  # what we last said
    _sequences: dict[str, int] = field(default_factory=dict)
    # Keepalives are timed on this clock: a wall clock set back must not silence us.
    clock: Callable[[], float] = time.monotonic
    _loads: dict[PoolKey, tuple[LoadSample, float]] = field(default_factory=dict)
    _resend: bool = False  # the store lost what we said, or a set may have: say it all again
    # The last digest: each pool's entry in it and the sample that entry was made of; and when
    # the digest went (on ``clock``).
    _digested: dict[PoolKey, tuple[PoolLoad, LoadSample]] = field(default_factory=dict)
    _digested_at: float | None = None
    digests: bool = True  # load travels as one digest per cluster (else one report per pool)
    # The least time between two digests that the same pools' moves send (a pool that comes or
    # goes is said at once); checked a tenth short, as samples come a little late.
    digest_gap: float = 0.0
    exports_sent: int = 0  # ever: what the ``Exported`` conditions' generations come from
    export_sets: bool = True  # exports travel as one set per cluster (else one event per pool)
    # Per pool, the export its own subject last said (``exported`` holds what we said at all).
    _per_pool_said: dict[PoolKey, ExportEvent] = field(default_factory=dict)
    refused: bool = False  # the last failed publish was refused (not lost or timed out)
    _set_floor: int = 0  # the sequence of the newest export set we tried to publish
    # Every export says which of ours it is (peers count gaps in them), per start of this agent.
    export_epoch: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    exports_counted: int = 0
    # What our last beat said, and how many beats a digest made unneeded (see publish_beat).
    _beat_said: tuple[object, ...] | None = None
    _beat_at: float | None = None  # on ``clock``
    beats_covered: int = 0

    def state_lost(self) -> None:
        """Our outbound stream lost its store: the next syncs republish every export and load."""
        self._resend = True
        self._per_pool_said.clear()
        self._beat_said = None
        self._loads.clear()
        self._digested.clear()
        self._digested_at = None

    def adopt(self, beliefs: Beliefs) -> None:
        """Continue from what the stream says we published before a restart: exports, and every
        subject's sequence (so a clock set back across a restart cannot make us look stale)."""
        for (cluster, ns, name), export in beliefs.exports.items():
            if cluster == self.cluster:
                self.exported[PoolKey(ns, name)] = export
                self._sequences[messages.subject_for(self.clusterset, export)] = export.generation
        for (cluster, ns, name), report in beliefs.loads.items():
            if cluster == self.cluster:  # a renewed digest entry moved the order past the report
                held = beliefs.load_sequence(cluster, ns, name) or report.sequence
                self._sequences[messages.subject_for(self.clusterset, report)] = held
        beat = beliefs.beats.get(self.cluster)
        if beat is not None:
            self._sequences[messages.subject_for(self.clusterset, beat)] = beat.sequence
        digested = beliefs.digest_sequence(self.cluster)
        if digested is not None:
            self._sequences[messages.digest_subject(self.clusterset, self.cluster)] = digested
        listed = beliefs.export_set_sequence(self.cluster)
        if listed is not None:
            self._sequences[messages.export_set_subject(self.clusterset, self.cluster)] = listed
            self._set_floor = listed

    def next_sequence(self, subject: str, at_least: int = 0) -> int:
        """Strictly increasing per subject, across restarts: a hybrid of the clock and a counter."""
        seq = max(self._sequences.get(subject, 0) + 1, int(self.wall() * 1_000_000), at_least)
        self._sequences[subject] = seq
        return seq

    def _span(
        self, event: Event, subject: str, payload: bytes
    ) -> contextlib.AbstractContextManager[object]:
        if self.tracer is None:
            return contextlib.nullcontext()
        return self.tracer.start_as_current_span(
            f"publish {type(event).__name__}",
            kind=trace.SpanKind.PRODUCER,
            attributes=messaging_attributes(subject, payload, self.cluster),
        )

    async def _send(self, event: Event, counted: int | None = None) -> bool:
        """Publish one event; ``counted``: an export's place in our count of exports (the
        next one when not given)."""
        subject = messages.subject_for(self.clusterset, event)
        payload = messages.encode(event)
        if isinstance(event, ExportEvent | ExportSet) and counted is None:
            counted = self.exports_counted + 1
        try:
            with self._span(event, subject, payload):
                headers: dict[str, str] = {}
                if self.tracer is not None:
                    propagate.inject(headers)  # W3C traceparent rides in the NATS headers
                # Peers count gaps in our exports' own count (model.gaps).
                if counted is not None:
                    headers[messages.EXPORT_SEQ_HEADER] = messages.export_seq_header(
                        self.export_epoch, counted
                    )
                if self.signer is not None:
                    headers.update(self.signer.sign(subject, payload))
                # Only exports are de-duplicated by the server (a retried publish); a live
                # event is superseded by the next anyway, and a message without headers is
                # cheaper for every peer to parse.
                exports = isinstance(event, ExportEvent | ExportSet)
                msg_id = messages.msg_id(event) if exports else None
                stored = await self.bus.publish(subject, payload, msg_id, headers)
        except Exception as exc:  # the next cycle publishes again; never fatal
            self.refused = isinstance(exc, PermissionError)
            self.counts.publish_failures += 1
            log.warning("publish %s failed: %s", subject, explain(exc))
            return False
        self.counts.published[type(event).__name__] += 1
        if counted is not None and stored is not False:  # a duplicate is not stored
            self.exports_counted = max(self.exports_counted, counted)
        return True

    def _export_event(self, pool: LocalPool | None, key: PoolKey, now: float) -> ExportEvent:
        held = self.exported.get(key)
        first = held.exported_at if held is not None and not held.withdrawn else now
        subject = messages.export_subject(self.clusterset, self.cluster, *key)
        common = {
            "cluster": self.cluster,
            "namespace": key.namespace,
            "name": key.name,
            # Above every set we tried: one that timed out may have been stored, and withdrawn
            # at peers (by a tombstone of its sequence) what it left out.
            "generation": self.next_sequence(subject, at_least=self._set_floor + 1),
            "published_at": now,
        }
        if pool is None:
            exported_at = held.exported_at if held is not None else now
            return ExportEvent(**common, exported_at=exported_at, withdrawn=True)  # type: ignore[arg-type]
        return ExportEvent(
            **common,  # type: ignore[arg-type]
            exported_at=first,
            target_ports=pool.target_ports,
            app_protocol=pool.app_protocol,
            model=pool.model,
            epp=pool.epp,
            parents=pool.parents,
        )

    async def sync_exports(
        self, pools: Mapping[PoolKey, LocalPool], *, per_pool: bool = False
    ) -> int:
        """Say every export whose content differs from what we last said; return the count.

        With ``export_sets``, one :class:`ExportSet` of every live export says them all (peers
        read one message for our whole cluster); ``per_pool`` (a live peer reads no sets) also
        says each pool's export on its own subject, the same event as the set's entry. Without
        sets, or beyond what one set holds, each pool's export goes alone."""
        now = self.wall()
        wanted = {k: p for k, p in pools.items() if is_exported(p)}
        keys = set(wanted) | {k for k, e in self.exported.items() if not e.withdrawn}
        resend, self._resend = self._resend, False
        due: dict[PoolKey, ExportEvent] = {}
        for key in sorted(keys):
            event = self._export_event(wanted.get(key), key, now)
            held = self.exported.get(key)
            if not resend and held is not None and export_content(held) == export_content(event):
                continue
            due[key] = event
        in_set = await self._say_set(due, resend) if self.export_sets else None
        if in_set is None:  # no sets, or more exports than one holds: each pool's goes alone
            said = await self._say_each(list(due.items()))
            ok = said == len(due)
        else:
            ok, said = in_set, len(due) if in_set else 0
            if ok and per_pool:
                unsaid = self._unsaid_per_pool()
                ok = await self._say_each(unsaid) == len(unsaid)
        self.exports_sent += said
        self._resend = self._resend or (resend and not ok)  # the next cycle tries again
        return said

    async def _say_set(self, due: dict[PoolKey, ExportEvent], resend: bool) -> bool | None:
        """Publish the set that ``due`` makes of our exports (when anything is due); False when
        the publish failed (said again next cycle), None when no set can hold them all."""
        if not due and not resend:
            return True
        exported = {**self.exported, **due}
        live = tuple(e for _, e in sorted(exported.items()) if not e.withdrawn)
        if len(live) > messages.MAX_SET_EXPORTS:
            return None
        subject = messages.export_set_subject(self.clusterset, self.cluster)
        # Above every export we ever said: peers withdraw a pool the set leaves out by a
        # tombstone of this sequence, which must be newer than the export it ends.
        newest = max((e.generation for e in exported.values()), default=0)
        exports = ExportSet(
            cluster=self.cluster,
            sequence=self.next_sequence(subject, at_least=newest + 1),
            published_at=self.wall(),
            exports=live,
        )
        if len(messages.encode(exports)) > DIGEST_BUDGET_BYTES:
            return None
        # Every later export is newer than this set, said or not: a re-export of a pool it
        # leaves out must end peers' tombstone of it.
        self._set_floor = max(self._set_floor, exports.sequence)
        if not await self._send(exports):
            # It may have been stored all the same (a timeout): what peers hold is not known,
            # so the next cycle says every export again, in a set above this one.
            self._resend = True
            return False
        self.exported = exported
        return True

    def _unsaid_per_pool(self) -> list[tuple[PoolKey, ExportEvent]]:
        """Each export we said that its own subject has not said in this process (the same
        event as the set's entry, so a peer reading both takes it once), oldest first (a
        peer's acknowledgement covers every export below its watermark). Tombstones too: the
        subject may still hold a live export from before a restart or the upgrade."""
        unsaid = [
            (key, event)
            for key, event in self.exported.items()
            if self._per_pool_said.get(key) is not event
        ]
        return sorted(unsaid, key=lambda ke: ke[1].generation)

    async def _say_each(self, due: list[tuple[PoolKey, ExportEvent]]) -> int:
        """Publish each export on its own subject; the count said (stops at a failing window:
        the bus is failing, the next cycle tries what is left)."""
        sent = 0
        # Up to a window of publishes in flight, not one acknowledgement at a time: a start-up
        # says every export at once, and a busy agent's loop takes long to come back to each
        # ack (at 100 clusters x 100 pools, some agents had stored only 74 of their 100 exports
        # 300 s after start). One connection keeps them in order, as they are counted.
        for at in range(0, len(due), EXPORTS_IN_FLIGHT):
            window = due[at : at + EXPORTS_IN_FLIGHT]
            first = self.exports_counted + 1
            results = await asyncio.gather(
                *(self._send(event, first + i) for i, (_, event) in enumerate(window))
            )
            for (key, event), ok in zip(window, results, strict=True):
                if ok:
                    self.exported[key] = event
                    self._per_pool_said[key] = event
                    sent += 1
            if not all(results):
                break
        return sent

    def forget_loads_except(self, keys: set[PoolKey]) -> None:
        """Drop the publish history of pools no longer exported (a re-export starts afresh)."""
        for key in set(self._loads) - keys:
            del self._loads[key]

    async def publish_loads(
        self, exported: list[tuple[LocalPool, LoadSample]], *, per_pool: bool = False
    ) -> None:
        """Say the exported pools' load: one digest of them all when any pool moved (by the
        threshold or its rates), the set of pools changed, or at the keepalive; and one report
        per pool that is worth it when ``per_pool`` (a peer reads no digests), when digests are
        off, or for the pools beyond one digest's size."""
        ordered = sorted(exported, key=lambda ps: ps[0].key)
        spilled = ordered
        if self.digests:
            digested, spilled = _fit_digest(ordered)
            if not await self._publish_digest(digested) and self.refused:
                # Refused (servers whose permissions predate digests deny the subject): the
                # pools' reports carry the load meanwhile, each on its own pace. Not when it
                # timed out: a busy server is the worst one to send a report per pool instead
                # (at 100 x 100, 1,054 such reports timed out in one cold start); the digest
                # is simply tried again.
                per_pool = True
        if per_pool or not self.digests:
            spilled = ordered
        for pool, sample in spilled:
            await self._publish_report(pool, sample)

    def _worth(self, previous: tuple[LoadSample, float] | None, sample: LoadSample) -> bool:
        return worth_publishing(
            previous[0] if previous else None,
            sample,
            last_published_at=previous[1] if previous else None,
            now=self.clock(),
            threshold=LOAD_CHANGE_THRESHOLD,
            keepalive=self.keepalive,
        )

    async def _publish_digest(self, entries: list[tuple[LocalPool, PoolLoad, LoadSample]]) -> bool:
        """Send the digest when it is due; False only when sending it failed.

        Each pool's entry is its newest sample only when that sample is worth publishing against
        the one peers hold (moved by the threshold on any field the weights read), or at the
        digest's keepalive; otherwise the entry last sent, as it was. So a digest that one
        pool's move sends does not carry every other pool's drift below the thresholds: a peer
        finds those entries unchanged and recomputes only the imports of the pools that moved.
        (The keepalive runs from the last digest, so that all pools are refreshed together:
        from each pool's own, a quiet cluster would send one digest a pool. While digests keep
        going for other pools' moves, an entry below every threshold is repeated: it differs
        from the newest sample by less than a threshold on everything the weights read.)"""
        at, now = self._digested_at, self.clock()
        keys = {pool.key for pool, _, _ in entries}
        # A pool came or went (an emptied set is said once; a first digest of none is not said:
        # an agent starting before its pools are listed must not take its load from every peer).
        due = at is not None and keys != set(self._digested)
        if not due and at is not None and now - at < 0.9 * self.digest_gap:
            return True  # moves wait for the gap (``Agent`` sizes it by the members)
        chosen: dict[PoolKey, tuple[PoolLoad, LoadSample]] = {}
        for pool, entry, sample in entries:
            held = self._held_entry(pool, at)
            if held is None or at is None or self._worth((held[1], at), sample):
                chosen[pool.key] = (entry, sample)
                due = True
            else:
                chosen[pool.key] = held
        if not due:
            return True
        subject = messages.digest_subject(self.clusterset, self.cluster)
        # Above every report we sent of these pools, so no entry looks stale beside one.
        reported = (
            self._sequences.get(messages.load_subject(self.clusterset, self.cluster, *k), 0)
            for k in keys
        )
        digest = LoadDigest(
            cluster=self.cluster,
            sequence=self.next_sequence(subject, at_least=max(reported, default=0) + 1),
            published_at=self.wall(),
            pools=tuple(chosen[pool.key][0] for pool, _, _ in entries),
        )
        if not await self._send(digest):
            return False
        self._digested = chosen
        self._digested_at = now
        return True

    def _held_entry(self, pool: LocalPool, at: float | None) -> tuple[PoolLoad, LoadSample] | None:
        """What peers hold of a pool from us: the last digest's entry, or a report sent since
        (a peer that reads digests reads reports too: repeating the older entry above the
        report's sequence would take it back)."""
        reported = self._loads.get(pool.key)
        if reported is not None and (at is None or reported[1] > at):
            return pool_entry(pool, reported[0]), reported[0]
        return self._digested.get(pool.key)

    async def _publish_report(self, pool: LocalPool, sample: LoadSample) -> None:
        tick = self.clock()
        if not self._worth(self._loads.get(pool.key), sample):
            return
        subject = messages.load_subject(self.clusterset, self.cluster, *pool.key)
        # Above the last digest too: a pool it carried, now sent alone, must not look stale.
        digested = self._sequences.get(messages.digest_subject(self.clusterset, self.cluster), 0)
        report = LoadReport(
            cluster=self.cluster,
            sequence=self.next_sequence(subject, at_least=digested + 1),
            published_at=self.wall(),
            **msgspec.structs.asdict(pool_entry(pool, sample)),
        )
        if await self._send(report):
            self._loads[pool.key] = (sample, tick)

    def export_generation(self, key: PoolKey) -> int | None:
        """The generation of the export we last published for ``key`` (None if none is live)."""
        held = self.exported.get(key)
        return held.generation if held is not None and not held.withdrawn else None

    async def publish_beat(
        self,
        exports: int,
        version: str,
        acks: Acks | None = None,
        *,
        covered: float = 0.0,
        keepalive: float = math.inf,
    ) -> bool:
        """Say we are alive (and what we acknowledge); True when a beat went.

        A load digest renews our lease at every peer as a beat does, so with ``covered`` > 0 a
        beat that would say nothing new is left out when a digest went within the last
        ``covered`` seconds (at 100 clusters beats are most of every agent's inbound events) —
        but never for longer than ``keepalive``: plain NATS delivers at most once, so a beat
        lost on the way (a partition, a slow consumer) must be said again in time.
        """
        accepted, refused = (acks.accepted, acks.refused) if acks else ({}, {})
        # A snapshot: nothing the caller mutates later can hide a change.
        says = (
            exports,
            version,
            tuple(sorted(accepted.items())),
            tuple(sorted((k, tuple(v)) for k, v in refused.items())),
            self.digests,
            self.export_sets,
        )
        now, at = self.clock(), self._digested_at
        recent = at is not None and now - at < covered
        fresh = self._beat_at is not None and now - self._beat_at < keepalive
        if covered > 0 and recent and fresh and says == self._beat_said:
            self.beats_covered += 1
            return False
        subject = messages.beat_subject(self.clusterset, self.cluster)
        sent = await self._send(
            Heartbeat(
                cluster=self.cluster,
                sequence=self.next_sequence(subject),
                published_at=self.wall(),
                exports=exports,
                agent_version=version,
                accepted=accepted,
                refused=refused,
                load_digests=self.digests,
                export_sets=self.export_sets,
            )
        )
        if sent:
            self._beat_said, self._beat_at = says, now
        return sent


def pool_entry(pool: LocalPool, sample: LoadSample) -> PoolLoad:
    """One pool's sample as it travels: a digest entry (or the body of its report)."""
    return PoolLoad(
        namespace=pool.namespace,
        name=pool.name,
        observed_at=sample.observed_at,
        ready_pods=sample.ready_pods,
        kv_cache_utilization=sample.kv_cache_utilization,
        queue_size=sample.queue_size,
        running_requests=sample.running_requests,
        saturation=sample.saturation,
        epp_status=sample.epp_status,
        arrival_rate=sample.arrival_rate,
        completion_rate=sample.completion_rate,
        capacity_rate=sample.capacity_rate,
        demand_rate=sample.demand_rate,
    )


def _fit_digest(
    ordered: list[tuple[LocalPool, LoadSample]],
) -> tuple[list[tuple[LocalPool, PoolLoad, LoadSample]], list[tuple[LocalPool, LoadSample]]]:
    """The pools one digest carries (by count and bytes), and the rest."""
    fitted: list[tuple[LocalPool, PoolLoad, LoadSample]] = []
    size = 0
    for i, (pool, sample) in enumerate(ordered):
        entry = pool_entry(pool, sample)
        size += len(messages.encode_entry(entry)) + 1
        if len(fitted) >= messages.MAX_DIGEST_POOLS or size > DIGEST_BUDGET_BYTES:
            return fitted, ordered[i:]
        fitted.append((pool, entry, sample))
    return fitted, []
