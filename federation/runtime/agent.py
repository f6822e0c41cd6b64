"""The agent: one cluster's federation, as one TaskGroup of named long-lived tasks.

Start-up is ordered: connect to this cluster's NATS server, ensure the streams, rebuild beliefs
from the newest event per subject, adopt what we published before a restart — and only then start
publishing, so a restart never withdraws or re-times an export. Then these tasks run until stopped:

- ``watch-pools``: local InferencePools → export events (and tombstones)
- ``sample-load``: each local pool's EPP → one load digest of the exported ones
- ``heartbeat``: liveness for peers' leases
- ``consume``: exports, from the inbound stream → beliefs
- ``consume-live``: heartbeats and loads, heard on plain NATS (the newest per subject) → beliefs
- ``reconcile``: beliefs + local pools + local load → import views (only those whose inputs
  or time moved: ``model.import_book``) → sinks
- ``watch-sources``: re-attach peers' stream sources that stalled, helped by peers' live events
  (see the bus adapter)
- ``recall-stale``: read what peers whose lease ran out said last (a healed partition)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from federation import __version__
from federation.messages import ExportSet, Heartbeat, LoadDigest, subject_cluster
from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition
from federation.model.counts import EventCounts
from federation.model.exported import exported_condition
from federation.model.failures import explain
from federation.model.freshness import LinkState, next_lease_end, stale_among, staleness
from federation.model.gaps import SourceGaps
from federation.model.loads import LoadSample
from federation.model.pacing import Lateness, paced_gap
from federation.model.pools import LocalPool, PoolKey, is_exported
from federation.model.rates import RATE_WINDOW, SampleRates
from federation.model.recalls import RecallSchedule
from federation.model.status import status_document
from federation.model.views import ImportView
from federation.runtime.clocks import steady_clock
from federation.runtime.feeding import Feeds
from federation.runtime.intake import Intake
from federation.runtime.ports import (
    Bus,
    Delivery,
    DemandSource,
    ExportStatusSink,
    ImportSink,
    LoadSource,
    PoolSource,
    Service,
    Signer,
    Verifier,
)
from federation.runtime.publishing import Publisher
from federation.runtime.reconciling import Reconciler
from federation.runtime.retrying import with_backoff
from federation.runtime.stopping import raise_if_cancelling
from federation.settings import Settings

log = logging.getLogger(__name__)

FETCH_BATCH = 512
FETCH_WAIT = 1.0
# The least time between two reconciles woken by events. An event after a quiet spell is
# reconciled at once; a burst (at 100 clusters, digests arrive tens per second) is folded into
# one step per gap instead of one per event. Each step also reads every member's lease, so its
# fixed cost grows with the members: the gap grows with them too (0.2 s up to 20 members, 10 ms
# a member beyond, at most the periodic interval), which keeps the reconcile's share of an
# agent's CPU flat as the ClusterSet grows, at up to that much latency for a weight under
# continuous change.
RECONCILE_GAP = 0.2
RECONCILE_GAP_PER_MEMBER = 0.01


def reconcile_gap(members: int, reconcile_interval: float) -> float:
    return min(max(RECONCILE_GAP, RECONCILE_GAP_PER_MEMBER * members), reconcile_interval)


# The least time between two of our load digests. Every agent hears every member's digest, so
# its intake grows with the members: past this many members (a digest a sample each) the gap
# grows with them (2 s at 100 members with 1 s samples), which holds each agent's intake near
# this many digests a second as the ClusterSet grows, at up to that much more age for a load
# under continuous change. Never beyond the keepalive (a third of the lease), so a lease still
# sees three. (At 100 x 100 the digests alone took more than the two cores: BENCHMARKS.md.)
DIGESTS_HEARD_PER_S = 50


def digest_gap(members: int, load_interval: float, keepalive: float) -> float:
    return min(max(load_interval, members / DIGESTS_HEARD_PER_S), keepalive)


# A late event loop stretches that gap to its lateness (``model.pacing``), up to this share of a
# lease: steps at least that often, well within the lease.
PACED_GAP_OF_LEASE = 0.25
# Loop turns the reconciler yields before a step, so that events already read off the socket
# reach the live mailbox (the read loop, then the subscription's task: a turn each) and are
# applied first (``Agent._apply_received``).
TURNS_BEFORE_STEP = 3
LATENESS_TICK = 0.25  # seconds between the lateness probe's wake-ups (4 a second: cheap)


# Past a lease's end: staleness is ``age > lease``, so a step at the very instant is too early.
LEASE_END_MARGIN = 0.005


class RootTaskReturned(RuntimeError):
    """A long-lived task ended by itself: always a bug, so the agent stops loudly."""


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        bus: Bus,
        pools: PoolSource,
        loads: LoadSource,
        feeds: Mapping[str, ImportSink] | None = None,
        export_status: ExportStatusSink | None = None,
        services: Mapping[str, Service] | None = None,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        wall: Callable[[], float] = time.time,
        tracer: trace.Tracer | None = None,
        lag_observers: Sequence[Callable[[str, float], None]] = (),
        insecure: bool = False,
        demand: DemandSource | None = None,
    ) -> None:
        self.settings = settings
        self.demand = demand  # the local gateway's per-pool request counters, where one counts
        self.tracer = tracer  # None: nothing exports spans, and none are made (consuming)
        self.bus = bus
        self.pools = pools
        self.loads = loads
        # The gateways' feeds first: they never wait for API writes.
        self.feeds = Feeds(
            feeds or {},
            backoff=settings.backoff,
            timeout=settings.request_timeout,
            resync=settings.feed_resync,
            clock=time.monotonic,
            agent=settings.cluster,
        )
        self.services = dict(services or {})
        self.insecure = insecure  # said in status and metrics, never hidden
        self.wall = wall  # this cluster's wall clock: what our events say they were sent at
        # Every age, lease and due time runs on this: the wall clock as it was at start, moved on
        # by the monotonic clock — so a wall clock set forward or back changes nobody's weight.
        self.now = steady_clock(wall)
        self.intake = Intake(
            cluster=settings.cluster, clusterset=settings.clusterset, members=settings.members,
            wall=self.now, tracer=self.tracer, verifier=verifier, lag_observers=lag_observers,
        )  # fmt: skip
        self.reconciler = Reconciler(settings, self.feeds, export_status)
        self.local_pools: dict[PoolKey, LocalPool] = {}
        self.local_samples: dict[PoolKey, LoadSample] = {}
        self._rates: dict[PoolKey, SampleRates] = {}  # per local pool: its counters' history
        self.ready = asyncio.Event()  # caught up with the bus and serving
        # Seconds each start-up step took, and the whole ("started"): what a slow start waited on.
        self.startup_s: dict[str, float] = {}
        self.publisher = Publisher(
            bus=bus,
            clusterset=settings.clusterset,
            cluster=settings.cluster,
            wall=wall,
            counts=self.counts,
            keepalive=settings.lease / 3,
            digest_gap=digest_gap(
                len(settings.members), settings.load_interval, settings.lease / 3
            ),
            tracer=self.tracer,
            signer=signer,
            digests=settings.load_messages == "digest",
            export_sets=settings.export_messages == "set",
        )
        self._changed = asyncio.Event()
        self._reconcile_gap = reconcile_gap(len(settings.members), settings.reconcile_interval)
        self.lateness = Lateness()  # the loop's, as the watch-lateness task sees it
        self._pools_changed = asyncio.Event()
        self._members = frozenset(settings.members)
        self._live_beats: dict[str, float] = {}  # peer -> monotonic time it was last heard live
        self._recalled: dict[str, bytes] = {}  # live subject -> the words last read back on it
        self._recalls = RecallSchedule(interval=settings.beat_interval, cap=settings.lease)
        # What peers' beats last acknowledged to us (accepted, refused), and how often it moved:
        # the ``Exported`` conditions are recomputed only when this or their other inputs move.
        self._acks_of_peers: dict[str, tuple[int, tuple[str, ...]]] = {}
        self._acks_heard = 0
        self._pool_snapshots = 0
        self._export_stamp: tuple[object, ...] | None = None

    @property
    def name(self) -> str:
        return self.settings.cluster

    # What the intake and the reconciler hold, as metrics, status and tests read it.
    @property
    def beliefs(self) -> Beliefs:
        return self.intake.beliefs

    @property
    def counts(self) -> EventCounts:
        return self.intake.counts

    @property
    def gaps(self) -> SourceGaps:
        return self.intake.gaps

    @property
    def pending(self) -> int:
        return self.intake.pending

    def clock_offsets(self) -> dict[str, float]:
        return self.intake.offsets.offsets()

    @property
    def views(self) -> dict[PoolKey, ImportView]:
        return self.reconciler.views

    @property
    def live_heard(self) -> Mapping[str, float]:
        """When each peer was last heard on the live path (monotonic; before its payload was
        checked): what the source check reads, and what a benchmark asks of an agent behind."""
        return self._live_beats

    @property
    def link(self) -> LinkState:
        return self.reconciler.link

    async def run(self) -> None:
        try:
            await self._start()
            async with asyncio.TaskGroup() as tg:
                for task, coro in self._tasks().items():
                    tg.create_task(self._root(task, coro), name=f"{self.name}/{task}")
        finally:
            await self.bus.close()

    def _tasks(self) -> dict[str, Coroutine[Any, Any, None]]:
        services = {name: service.run() for name, service in self.services.items()}
        return services | {
            "watch-pools": self._watch_pools(),
            "publish-exports": self._publish_exports(),
            "sample-load": self._sample_load(),
            "heartbeat": self._heartbeat(),
            "consume": self._consume(),
            "consume-live": self._consume_live(),
            "reconcile": self._reconcile(),
            "watch-lateness": self._watch_lateness(),
            "watch-sources": self._watch_sources(),
            "recall-stale": self._recall_stale(),
        }

    async def _root(self, task: str, coro: Coroutine[Any, Any, None]) -> None:
        await coro
        raise RootTaskReturned(f"agent {self.name}: task {task} returned")

    async def _start(self) -> None:
        """Connect, ensure streams and consumer, watch beats: each retried until it works.
        A whole ClusterSet starting at once overloads the JetStream meta layer for tens of
        seconds (503s and timeouts, measured with 100 agents); giving up would only trade that
        for a restart loop."""
        s = self.settings
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("connect to NATS", self.bus.connect),
            ("ensure streams", self.bus.ensure_streams),
            ("create consumer", self.bus.start_consuming),
            ("watch live events", self.bus.watch_live),  # before reading the newest ones
        ]
        with self._timed("started"):
            for what, call in steps:
                with self._timed(what):
                    await with_backoff(
                        what, call, s.backoff, attempt_timeout=s.request_timeout, forever=True
                    )
            await self._catch_up()
        self.publisher.adopt(self.beliefs)
        self.ready.set()
        # Those heard live since we watched (their direct gets were skipped): applied now, as
        # caught up (as the live consumer would), before any task says or steps anything.
        await self._apply_waiting_live("at start")
        log.info(
            "agent %s caught up in %.1fs: %d events applied (%s)", self.name,
            self.startup_s["started"], self.counts.applied,
            ", ".join(f"{k} {v:.1f}s" for k, v in self.startup_s.items() if k != "started"),
        )  # fmt: skip

    async def _catch_up(self) -> None:
        """Apply the newest event of every subject before saying anything ourselves: exports
        from the inbound stream, then members' newest heartbeats and digests."""
        with self._timed("catch up exports"):
            await self._catch_up_exports()
        with self._timed("read newest live events"):
            try:
                async with asyncio.timeout(self.settings.request_timeout):
                    newest = await self.bus.newest_live()
            except Exception as exc:  # best effort: the live path brings them within lease/3
                log.warning("agent %s: reading members' newest live events failed: %s",
                            self.name, explain(exc))  # fmt: skip
                newest = []
            for delivery in newest:
                await self.apply_delivery(delivery)

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        """Keeps how long a start-up step took in ``startup_s``."""
        began = time.monotonic()
        try:
            yield
        finally:
            self.startup_s[step] = round(time.monotonic() - began, 3)

    async def _catch_up_exports(self) -> None:
        failures = 0
        while True:
            raise_if_cancelling()
            try:
                batch = await self.bus.fetch(FETCH_BATCH, FETCH_WAIT)
            except Exception as exc:  # a server too busy to answer in time: ask again
                failures += 1
                log.warning(
                    "agent %s: catch-up fetch failed (%d): %s", self.name, failures, explain(exc)
                )
                backoff = self.settings.backoff
                await asyncio.sleep(backoff[min(failures, len(backoff)) - 1])
                # The consumer itself may be gone (or failing every fetch): the store check
                # that runs later in watch-sources knows, and recreates it.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.request_timeout):
                        self._stores_repaired(await self.bus.repair_streams())
                continue
            failures = 0
            for delivery in batch:
                await self.apply_delivery(delivery)
            if not batch or batch[-1].pending == 0:
                return

    async def apply_delivery(self, delivery: Delivery, *, recalled: bool = False) -> None:
        """Apply one event, from either path (the benchmarks drive this directly); ``recalled``:
        read back by direct get, dated by the publisher's clock offset (``Intake.recalled_at``)."""
        applied = await self.intake.apply(
            delivery, caught_up=self.ready.is_set(), recalled=recalled
        )
        if applied is None:
            return
        moved: tuple[PoolKey, ...]
        if isinstance(applied, LoadDigest):
            policy = self.reconciler.policy
            dirty = self.beliefs.digest_dirty(policy.lease * policy.full_trust)
            exported = self.beliefs.ever_exported
            moved = tuple(PoolKey(*k) for k in dirty if exported(*k))
        elif isinstance(applied, ExportSet):
            moved = tuple(PoolKey(*k) for k in self.beliefs.set_moved)
        elif isinstance(applied, Heartbeat):
            acks = (
                applied.accepted.get(self.name, 0), tuple(applied.refused.get(self.name, ())),
            )  # fmt: skip
            if self._acks_of_peers.get(applied.cluster) != acks:
                self._acks_of_peers[applied.cluster] = acks
                self._acks_heard += 1
            moved = ()
        else:
            moved = (PoolKey(applied.namespace, applied.name),)
        # An event that moved no pool (a beat, a keepalive digest) moves a view only by renewing
        # a lease that had run out (the book sees that at its next step); any other waits for
        # the periodic reconcile: at 100 clusters, 30 such events a second would otherwise step
        # every import set many times as often, and each woken step reads every member's lease.
        if not moved and not self.reconciler.is_stale(applied.cluster):
            return
        self.reconciler.mark_dirty(moved)
        self._changed.set()

    async def _consume(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                batch = await self.bus.fetch(FETCH_BATCH, FETCH_WAIT)
            except Exception as exc:  # a reconnect in progress; the fetch is simply retried
                log.warning("agent %s: fetch failed: %s", self.name, explain(exc))
                await asyncio.sleep(self.settings.backoff[0])
                continue
            for delivery in batch:
                await self.apply_delivery(delivery)

    async def _consume_live(self) -> None:
        while True:
            raise_if_cancelling()
            batch = await self.bus.live(FETCH_WAIT)
            self.counts.superseded, self.counts.dropped = self.bus.live_unapplied()
            await self._apply_live(batch)

    async def _apply_live(self, batch: Sequence[Delivery]) -> None:
        for delivery in batch:
            self._heard_live(delivery.subject)
            await self.apply_delivery(delivery)

    def _heard_live(self, subject: str) -> None:
        """A hint for the source check (the subject's cluster token; the payload is checked
        when applied)."""
        cluster = subject_cluster(subject)
        if cluster in self._members and cluster != self.name:
            self._live_beats[cluster] = time.monotonic()

    async def _watch_sources(self) -> None:
        """Re-attach peers' sources that went quiet.

        Checked every heartbeat interval. A source is stalled when its peer's heartbeats arrive
        live on plain NATS but not through the source for three intervals (right after a
        gateway heal, for example), or, failing that hint, when it has been silent for a lease.
        Lost stores are looked for on the same task, every half lease.

        While no peer has been stale for a lease and no source needed a restart within one,
        the sources are checked every half lease instead: each check reads the inbound stream's
        state of every member's source (100 of them at 100 clusters, every agent, every 2 s),
        and a source stalls mostly when a link heals. A stall with no peer gone stale (a cut
        or a server restart shorter than a lease) is then found up to half a lease later.
        """
        s = self.settings
        delay = s.beat_interval
        # (The stores were ensured at start: the first check of them is half a lease later, and
        # the first check of the sources, which a whole ClusterSet starting at once needs, does
        # not wait behind it.)
        stores_checked = time.monotonic()
        sources_checked = unsettled_at = -math.inf
        peers = [m for m in s.members if m != self.name]
        while True:
            raise_if_cancelling()
            await asyncio.sleep(delay)
            delay = s.beat_interval
            now = time.monotonic()
            if stale_among(self.beliefs, peers, now=self.now(), lease=s.lease):
                unsettled_at = now
            settled = now - unsettled_at > s.lease
            # Heard live within the longest gap between a peer's live events (a beat is left
            # out while digests flow, up to half a lease) and one check interval.
            heard_within = max(2 * s.beat_interval, s.lease / 2 + s.beat_interval)
            live = [c for c, t in self._live_beats.items() if now - t <= heard_within]
            # Stores are checked every half lease, not every beat: three JetStream requests per
            # agent each time (200 a second at 100 clusters every 2 s), for a rare disaster.
            if now - stores_checked >= s.lease / 2:
                stores_checked = now
                try:
                    async with asyncio.timeout(s.request_timeout):
                        self._stores_repaired(await self.bus.repair_streams())
                except Exception as exc:  # servers down or JetStream not ready: next interval
                    log.info("agent %s: store check failed: %s", self.name, explain(exc))
                    stores_checked = -math.inf
            if settled and now - sources_checked < s.lease / 2:
                continue
            sources_checked = now
            try:
                async with asyncio.timeout(s.request_timeout):
                    restarted = await self.bus.restart_stalled_sources(
                        s.lease, heard_live=live, quiet_after=max(3 * s.beat_interval, 3.0)
                    )
            except Exception as exc:  # no meta leader (partition, heal) or a reconnect
                log.info("agent %s: source check failed: %s", self.name, explain(exc))
                sources_checked = -math.inf
                # After a heal JetStream answers 503 for seconds: retry soon, not a beat later.
                delay = min(1.0, s.beat_interval)
                continue
            if restarted:
                unsettled_at = now  # check again at the next beat: the restart may not hold
                self.counts.sources_restarted += len(restarted)
                log.warning("agent %s: restarted stalled sources %s", self.name, restarted)

    async def _recall_stale(self) -> None:
        """Every heartbeat interval, read what each peer whose lease ran out said last, by
        direct get from its outbound stream. After a partition heals, a peer's next live event
        may be a digest's keepalive (lease/3) away, since beats are left out while digests
        flow; this hears it back within a beat interval. A dead peer's last words renew
        nothing: they are dated when they were published (by the peer's clock offset, as
        estimated from its live events) and the same words are not applied twice. A peer whose
        servers answer with the same words (its agent is down) is asked again after twice as
        long each time, up to a lease; one whose servers do not answer (cut off) is asked at
        every interval, so it is heard as soon as the cut heals. Its own task: a recall waiting
        on an unreachable cluster delays nothing."""
        while True:
            raise_if_cancelling()
            await asyncio.sleep(self.settings.beat_interval)
            await self._recall_stale_peers(time.monotonic())

    async def _recall_stale_peers(self, at: float) -> None:
        s = self.settings
        peers = [m for m in s.members if m != self.name]
        stale = stale_among(self.beliefs, peers, now=self.now(), lease=s.lease)
        due = self._recalls.due(stale, at)
        if not due:
            return
        try:  # each get bounded on its own: one that hangs loses only its answer
            newest = await self.bus.newest_live(due, each_within=s.request_timeout)
        except Exception as exc:  # their clusters out of reach: the next interval
            log.debug("agent %s: recalling %s failed: %r", self.name, due, exc)
            return
        answered, new = set(), set()
        for delivery in newest:
            peer = subject_cluster(delivery.subject)
            answered.add(peer)
            if self._recalled.get(delivery.subject) == delivery.data:
                continue  # what we were told before
            self._recalled[delivery.subject] = delivery.data
            new.add(peer)
            await self.apply_delivery(delivery, recalled=True)
        self._recalls.asked(due, answered=answered, new=new, at=at)

    def _stores_repaired(self, repaired: list[str]) -> None:
        """A lost store was recreated: if it held what we said, say everything again now."""
        if not repaired:
            return
        self.counts.streams_repaired.update(repaired)
        log.warning("agent %s: recreated %s after a lost store", self.name, ", ".join(repaired))
        if "outbound" in repaired:
            self.publisher.state_lost()
            self._pools_changed.set()  # exports now; loads at the next sample; beats on time

    async def _watch_pools(self) -> None:
        async for snapshot in self.pools.watch():
            raise_if_cancelling()
            self.local_pools = dict(snapshot)
            self._pool_snapshots += 1
            self.reconciler.mark_dirty(None)
            self._pools_changed.set()
            self._changed.set()

    async def _publish_exports(self) -> None:
        """Say what changed; re-check periodically so a failed publish is retried."""
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.beat_interval):
                    await self._pools_changed.wait()
            self._pools_changed.clear()
            await self.publisher.sync_exports(self.local_pools, per_pool=self._peers_read_no_sets())

    async def _sample_load(self) -> None:
        while True:
            raise_if_cancelling()
            pools = list(self.local_pools.values())
            samples = await asyncio.gather(*(self._sample(p) for p in pools))
            # Replaced, not updated: a deleted pool's last sample must not linger. Its age runs
            # from when we took it, on our steady clock (the scraper's stamp is for peers).
            # Rates come from the counters' history, per pool, on the same clock.
            taken = self.now()
            offered = await self._offered([p.key for p in pools])
            self._rates = {p.key: self._rates.get(p.key) or SampleRates(RATE_WINDOW) for p in pools}
            samples = [
                self._rates[p.key].rate(s, taken, offered.get(p.key))
                for p, s in zip(pools, samples, strict=True)
            ]
            self.local_samples = {
                p.key: dataclasses.replace(s, observed_at=taken)
                for p, s in zip(pools, samples, strict=True)
            }
            exported = [(p, s) for p, s in zip(pools, samples, strict=True) if is_exported(p)]
            self.publisher.forget_loads_except({p.key for p, _ in exported})
            await self.publisher.publish_loads(exported, per_pool=self._peers_read_no_digests())
            # Our own samples weigh only `local` backends (unexported pools); exported ones
            # reach our imports as load digests through the bus, like everyone else's.
            local = [p.key for p in pools if not is_exported(p)]
            if local:  # nothing else reads our own samples: no step for the others
                self.reconciler.mark_dirty(local)
                self._changed.set()
            await asyncio.sleep(self.settings.load_interval)

    def _peers_read_no_digests(self) -> bool:
        """A live member's agent predates load digests (its newest beat says so): it hears our
        load only from per-pool reports, so those go out beside the digests until it upgrades."""
        return self._a_live_peer_lacks(lambda beat: beat.load_digests)

    def _peers_read_no_sets(self) -> bool:
        """A live member's agent predates export sets (its newest beat says so): it hears our
        exports only one pool at a time, so those go out beside the sets until it upgrades."""
        return self._a_live_peer_lacks(lambda beat: beat.export_sets)

    def _a_live_peer_lacks(self, reads: Callable[[Heartbeat], bool]) -> bool:
        now, lease = self.now(), self.settings.lease
        return any(
            not reads(beat) and not staleness(self.beliefs, c, now=now, lease=lease).stale
            for c, beat in self.beliefs.beats.items()
            if c != self.name
        )

    async def _offered(self, keys: list[PoolKey]) -> Mapping[PoolKey, float]:
        """The gateway's demand counters; none (the EPP's arrivals stand in) when it fails."""
        if self.demand is None:
            return {}
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await self.demand.offered(keys)
        except Exception as exc:
            log.warning(
                "agent %s: reading the gateway's demand failed: %s", self.name, explain(exc)
            )
            return {}

    async def _sample(self, pool: LocalPool) -> LoadSample:
        """A load source must not raise, but a hung or broken one must not stall the others."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await self.loads.sample(pool)
        except Exception as exc:
            log.warning("agent %s: sampling %s failed: %s", self.name, pool.key, explain(exc))
            return LoadSample(observed_at=self.now(), epp_status="unreachable")

    async def _heartbeat(self) -> None:
        while True:
            raise_if_cancelling()
            exports = sum(1 for p in self.local_pools.values() if is_exported(p))
            # A digest renews our lease as a beat does (except at agents that read no digests),
            # and one goes at least every lease/3 (its keepalive, checked at each sample of the
            # loads): a beat that says nothing new is left out when a digest went within half a
            # lease (never more, whatever the sampling: two chances per lease at least), and
            # said again once a lease, so a peer that lost one (plain NATS delivers at most
            # once) hears its acknowledgements at most a lease late. (Left out only within a
            # beat interval of a digest, and said every lease/3, beats were half of every
            # agent's inbound events.) A peer whose lease ran out reads our last words itself.
            s = self.settings
            digesting = max(s.beat_interval, s.lease / 2)
            covered = 0.0 if self._peers_read_no_digests() else digesting
            await self.publisher.publish_beat(
                exports, __version__, self.reconciler.acks, covered=covered, keepalive=s.lease,
            )  # fmt: skip
            await asyncio.sleep(s.beat_interval)

    @property
    def lease_lapses(self) -> int:
        return self.reconciler.lease_lapses

    @property
    def live_acks_missed(self) -> int:
        return self.bus.live_acks_missed

    def pacing(self) -> tuple[float, float]:
        mono = time.monotonic()
        return self.lateness.value(mono), self.paced_gap(mono)

    def feed_health(self) -> dict[str, tuple[bool, int]]:
        return {name: (st.healthy, st.failures) for name, st in self.feeds.states.items()}

    def status(self) -> dict[str, Any]:
        """What ``federation status`` shows: peers' leases, the link, every import and why."""
        doc = status_document(
            cluster=self.name,
            members=self.settings.members,
            beliefs=self.beliefs,
            views=self.views,
            link=self.link,
            now=self.now(),
            lease=self.settings.lease,
            missed=self.gaps.missed,
            offsets=self.intake.offsets.offsets(),
        )
        lateness, gap = self.pacing()
        pacing = {
            "loop_lateness_s": round(lateness, 3),
            "reconcile_gap_s": round(gap, 3),
            "reconcile_gap_base_s": round(self._reconcile_gap, 3),
        }
        return doc | {
            "feeds": self.feeds.status(), "insecure": self.insecure, "pacing": pacing,
            "startup_s": dict(self.startup_s),
        }  # fmt: skip

    def step_views(self, now: float) -> bool:
        """One weight step of the imports whose inputs or time moved; True if a view changed."""
        return self.reconciler.step(
            self.beliefs, self.local_pools, self.local_samples,
            connected=self.bus.connected, now=now,
        )  # fmt: skip

    async def _reconcile(self) -> None:
        last = done = -math.inf  # the previous step's start and end (monotonic)
        while True:
            raise_if_cancelling()
            woken = False
            wait = self._reconcile_wait()
            began = time.monotonic()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    woken = await self._changed.wait()
            now_mono = time.monotonic()
            if woken:  # woken within a gap of the previous step: fold in what follows
                # The members' gap runs from the previous step's start. A paced gap runs from
                # its end: a starved step takes long, and must not use up the gap itself.
                gap = self.paced_gap(now_mono)
                until = last + gap if gap <= self._reconcile_gap else done + gap
                # What is left of the wait computed above: no second pass over the leases.
                pause = min(until - now_mono, wait - (now_mono - began))
                if pause > 0:
                    await asyncio.sleep(pause)
            await self._apply_received()
            self._changed.clear()
            last = time.monotonic()
            now = self.now()
            self.step_views(now)
            done = time.monotonic()
            await self.reconciler.feed()
            # After the feed: pools' status (Kubernetes writes) must not delay the gateways.
            await self._report_exports(now)

    async def _apply_received(self) -> None:
        """Apply the live events already received before stepping the weights.

        A starved process runs the reconciler's timer in the same loop turn as the socket's
        data; the beats in that data reach the live mailbox turns later and the consume-live
        task after that, seconds later when every turn is long. Stepping first would run out
        the leases of peers that did speak, weigh them 0 and back, and step every import of
        theirs twice (``federation_peer_lease_lapses_total`` counts the lapses)."""
        for _ in range(TURNS_BEFORE_STEP):
            await asyncio.sleep(0)
        await self._apply_waiting_live("before a step")

    async def _apply_waiting_live(self, when: str) -> None:
        """Apply the live events waiting now, without waiting for more. A failure is logged
        and left to the live consumer, which goes on from there: neither the start nor the
        weights wait on intake."""
        try:
            await self._apply_live(await self.bus.live(0.0))
        except Exception as exc:
            log.warning("agent %s: applying received events %s failed: %s",
                        self.name, when, explain(exc))  # fmt: skip

    async def _watch_lateness(self) -> None:
        """A timer every ``LATENESS_TICK``: how late it fires is how late the loop runs,
        whatever the other tasks are doing (``model.pacing``). A starved process loses most of
        its time inside its own long steps, where the reconciler has no timer to see it."""
        while True:
            raise_if_cancelling()
            began = time.monotonic()
            await asyncio.sleep(LATENESS_TICK)
            woke = time.monotonic()
            self.lateness.observe(woke - began - LATENESS_TICK, woke)

    def paced_gap(self, at: float) -> float:
        """The least time between two event-woken steps at ``at`` (monotonic): the members'
        gap, or the loop's lateness where that is longer (``model.pacing``)."""
        most = self.settings.lease * PACED_GAP_OF_LEASE
        return paced_gap(self._reconcile_gap, self.lateness.value(at), most)

    def _reconcile_wait(self) -> float:
        """How long the reconciler may sleep with nothing changing: the periodic interval, or
        less when a peer's lease runs out sooner, so that a dead peer's weight goes to 0 at the
        end of its lease (at most a gap later: leases ending within a gap are folded into one
        step), not up to an interval later. While the loop runs late the interval stretches
        to the paced gap: so do the time-driven steps (smoothing, slow start, a report's trust
        fading, a failed feed's retry), but not a member's lease end.

        A lease that ran out after the last step computed its weights (a step that began just
        before the end and ran long on a starved machine) is due at once: counted from that
        step's clock, not from now, it would otherwise wait for a periodic or paced step."""
        s = self.settings
        now = self.now()
        interval = max(s.reconcile_interval, self.paced_gap(time.monotonic()))
        peers = [m for m in s.members if m != self.name]
        stepped = self.reconciler.stepped_at
        since = now if stepped is None else min(now, stepped)
        end = next_lease_end(
            self.beliefs, peers, now=since, lease=s.lease, fold=self._reconcile_gap
        )
        if end is None:
            return interval
        return max(0.0, min(interval, end - now + LEASE_END_MARGIN))

    def live_members(self, now: float) -> list[str]:
        members = self.settings.members
        stale = stale_among(self.beliefs, members, now=now, lease=self.settings.lease)
        return [m for m in members if m not in stale]

    async def _report_exports(self, now: float) -> None:
        """The pools' ``Exported`` conditions, recomputed only when one of their inputs moved
        since they were last reported (pools x peers each reconcile otherwise: 10,000 checks
        at 100 x 100); a failed report is retried on the next reconcile."""
        live = self.live_members(now)
        stamp = (
            self._pool_snapshots, self.publisher.exports_sent, frozenset(live),
            self.reconciler.acks_made, self._acks_heard,
        )  # fmt: skip
        if stamp == self._export_stamp:
            return
        if await self.reconciler.report_exports(self.compute_export_conditions(now, live)):
            self._export_stamp = stamp

    def compute_export_conditions(
        self, now: float, live: list[str] | None = None
    ) -> dict[PoolKey, Condition | None]:
        live = self.live_members(now) if live is None else live
        return {
            key: exported_condition(
                pool,
                generation=self.publisher.export_generation(key),
                beliefs=self.beliefs,
                own_cluster=self.name,
                live_peers=live,
                own_acks=self.reconciler.acks,
            )
            for key, pool in self.local_pools.items()
        }
