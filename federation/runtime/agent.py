"""The agent: one cluster's federation, as one TaskGroup of named long-lived tasks.

Start-up is ordered: connect to this cluster's NATS server, ensure the streams, rebuild beliefs
from the newest event per subject, adopt what we published before a restart — and only then start
publishing, so a restart never withdraws or re-times an export. Then these tasks run until stopped:

- ``watch-pools``: local InferencePools → export events (and tombstones)
- ``sample-load``: each local pool's EPP → load reports for the exported ones
- ``heartbeat``: liveness for peers' leases
- ``consume``: inbound stream → beliefs
- ``reconcile``: beliefs + local pools + local load → import views (only those whose inputs
  or time moved: ``model.import_book``) → sinks
- ``watch-sources``: re-attach peers' stream sources that stalled, helped by peers' heartbeats
  heard live on plain NATS (see the bus adapter)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import trace

from federation import __version__
from federation.messages import Heartbeat
from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition
from federation.model.counts import EventCounts
from federation.model.exported import Acks, acks_for, exported_condition
from federation.model.freshness import LinkState, link_state, staleness
from federation.model.gaps import SourceGaps
from federation.model.import_book import ImportBook
from federation.model.loads import LoadSample
from federation.model.pools import LocalPool, PoolKey, is_exported
from federation.model.status import status_document
from federation.model.views import ImportView
from federation.model.weights import WeightPolicy
from federation.runtime.consuming import consume_one
from federation.runtime.feeding import Feeds
from federation.runtime.ports import (
    Bus,
    Delivery,
    ExportStatusSink,
    ImportSink,
    LoadSource,
    PoolSource,
    Service,
    Signer,
    Verifier,
)
from federation.runtime.publishing import Publisher
from federation.runtime.retrying import with_backoff
from federation.runtime.stopping import raise_if_cancelling
from federation.settings import Settings

log = logging.getLogger(__name__)

FETCH_BATCH = 512
FETCH_WAIT = 1.0


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
    ) -> None:
        self.settings = settings
        self.tracer = tracer or trace.get_tracer("federation")
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
        self.export_status = export_status
        self.services = dict(services or {})
        self.verifier = verifier
        self.wall = wall  # wall clock: event times are compared across clusters
        self.policy = WeightPolicy(
            lease=settings.lease,
            spill_threshold=settings.spill_threshold,
            slow_start=settings.slow_start,
        )
        self.beliefs = Beliefs()
        self.counts = EventCounts()
        self.gaps = SourceGaps()  # peers' events that never reached us
        self.local_pools: dict[PoolKey, LocalPool] = {}
        self.local_samples: dict[PoolKey, LoadSample] = {}
        self.book = ImportBook(self.policy, settings.cluster)  # views, weight memories
        self._dirty: set[PoolKey] | None = None  # pools whose inputs changed; None: any
        self.link = LinkState(False)
        self.acks: Acks | None = None  # what our heartbeat acknowledges to exporters
        self.export_conditions: dict[PoolKey, Condition | None] = {}
        self.pending = 0  # messages behind the last delivery: the consumer's backlog
        self.lag_observers = tuple(lag_observers)  # (peer, seconds) of every applied event
        self.ready = asyncio.Event()  # caught up with the bus and serving
        self.publisher = Publisher(
            bus=bus,
            clusterset=settings.clusterset,
            cluster=settings.cluster,
            wall=wall,
            counts=self.counts,
            keepalive=settings.lease / 3,
            tracer=self.tracer,
            signer=signer,
        )
        self._changed = asyncio.Event()
        self._pools_changed = asyncio.Event()
        self._members = frozenset(settings.members)
        self._live_beats: dict[str, float] = {}  # peer -> monotonic time its beat was seen live

    @property
    def name(self) -> str:
        return self.settings.cluster

    @property
    def views(self) -> dict[PoolKey, ImportView]:
        return self.book.views

    def mark_dirty(self, keys: Iterable[PoolKey] | None) -> None:
        """These pools' inputs changed (None: anything may have); the next reconcile sees it."""
        if keys is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.update(keys)

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
            "reconcile": self._reconcile(),
            "watch-sources": self._watch_sources(),
        }

    async def _root(self, task: str, coro: Coroutine[Any, Any, None]) -> None:
        await coro
        raise RootTaskReturned(f"agent {self.name}: task {task} returned")

    async def _start(self) -> None:
        s = self.settings
        await with_backoff(
            "connect to NATS", self.bus.connect, s.backoff, attempt_timeout=s.request_timeout
        )
        await with_backoff(
            "ensure streams", self.bus.ensure_streams, s.backoff, attempt_timeout=s.request_timeout
        )
        await with_backoff(
            "create consumer",
            self.bus.start_consuming,
            s.backoff,
            attempt_timeout=s.request_timeout,
        )
        await with_backoff(
            "watch live heartbeats",
            lambda: self.bus.watch_beats(self._heard_live),
            s.backoff,
            attempt_timeout=s.request_timeout,
        )
        await self._catch_up()
        self.publisher.adopt(self.beliefs)
        self.ready.set()
        log.info("agent %s caught up: %d events applied", self.name, self.counts.applied)

    async def _catch_up(self) -> None:
        """Apply the newest event of every subject before saying anything ourselves."""
        while True:
            raise_if_cancelling()
            batch = await self.bus.fetch(FETCH_BATCH, FETCH_WAIT)
            for delivery in batch:
                await self.apply_delivery(delivery)
            if not batch or batch[-1].pending == 0:
                return

    async def apply_delivery(self, delivery: Delivery) -> None:
        """Apply one event from the inbound stream (the benchmarks drive this directly)."""
        self.pending = delivery.pending
        if delivery.origin is not None:
            peer, sequence = delivery.origin
            skipped = self.gaps.observe(peer, sequence, counting=self.ready.is_set())
            if skipped:
                log.warning("agent %s: %d events of %s never arrived", self.name, skipped, peer)
        applied = await consume_one(
            delivery,
            beliefs=self.beliefs,
            clusterset=self.settings.clusterset,
            members=self.settings.members,
            counts=self.counts,
            wall=self.wall,
            cluster=self.name,
            tracer=self.tracer,
            verifier=self.verifier,
        )
        if applied is not None:
            if not isinstance(applied, Heartbeat):  # beats move leases: the book sees those
                self.mark_dirty((PoolKey(applied.namespace, applied.name),))
            self._changed.set()
            lag = self.wall() - applied.published_at
            for observe in self.lag_observers:
                observe(applied.cluster, lag)

    async def _consume(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                batch = await self.bus.fetch(FETCH_BATCH, FETCH_WAIT)
            except Exception as exc:  # a reconnect in progress; the fetch is simply retried
                log.warning("agent %s: fetch failed: %s", self.name, exc)
                await asyncio.sleep(self.settings.backoff[0])
                continue
            for delivery in batch:
                await self.apply_delivery(delivery)

    def _heard_live(self, cluster: str) -> None:
        if cluster in self._members and cluster != self.name:  # a hint: names only, no payload
            self._live_beats[cluster] = time.monotonic()

    async def _watch_sources(self) -> None:
        """Re-attach peers' sources that went quiet.

        Checked every heartbeat interval. A source is stalled when its peer's heartbeats arrive
        live on plain NATS but not through the source for three intervals (right after a
        gateway heal, for example), or, failing that hint, when it has been silent for a lease.
        """
        s = self.settings
        delay = s.beat_interval
        while True:
            raise_if_cancelling()
            await asyncio.sleep(delay)
            delay = s.beat_interval
            now = time.monotonic()
            live = [c for c, t in self._live_beats.items() if now - t <= 2 * s.beat_interval]
            try:
                async with asyncio.timeout(s.request_timeout):
                    restarted = await self.bus.restart_stalled_sources(
                        s.lease, heard_live=live, quiet_after=max(3 * s.beat_interval, 3.0)
                    )
            except Exception as exc:  # no meta leader (partition, heal) or a reconnect
                log.info("agent %s: source check failed: %s", self.name, exc)
                # After a heal JetStream answers 503 for seconds: retry soon, not a beat later.
                delay = min(1.0, s.beat_interval)
                continue
            if restarted:
                self.counts.sources_restarted += len(restarted)
                log.warning("agent %s: restarted stalled sources %s", self.name, restarted)

    async def _watch_pools(self) -> None:
        async for snapshot in self.pools.watch():
            raise_if_cancelling()
            self.local_pools = dict(snapshot)
            self.mark_dirty(None)
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
            await self.publisher.sync_exports(self.local_pools)

    async def _sample_load(self) -> None:
        while True:
            raise_if_cancelling()
            pools = list(self.local_pools.values())
            samples = await asyncio.gather(*(self._sample(p) for p in pools))
            # Replaced, not updated: a deleted pool's last sample must not linger.
            self.local_samples = {p.key: s for p, s in zip(pools, samples, strict=True)}
            exported = [(p, s) for p, s in zip(pools, samples, strict=True) if is_exported(p)]
            self.publisher.forget_loads_except({p.key for p, _ in exported})
            for pool, sample in exported:
                await self.publisher.publish_load(pool, sample)
            # Our own samples weigh only `local` backends (unexported pools); exported ones
            # reach our imports as load reports through the bus, like everyone else's.
            self.mark_dirty(p.key for p in pools if not is_exported(p))
            self._changed.set()
            await asyncio.sleep(self.settings.load_interval)

    async def _sample(self, pool: LocalPool) -> LoadSample:
        """A load source must not raise, but a hung or broken one must not stall the others."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                return await self.loads.sample(pool)
        except Exception as exc:
            log.warning("agent %s: sampling %s failed: %s", self.name, pool.key, exc)
            return LoadSample(observed_at=self.wall(), epp_status="unreachable")

    async def _heartbeat(self) -> None:
        while True:
            raise_if_cancelling()
            exports = sum(1 for p in self.local_pools.values() if is_exported(p))
            await self.publisher.publish_beat(exports, __version__, self.acks)
            await asyncio.sleep(self.settings.beat_interval)

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
            now=self.wall(),
            lease=self.settings.lease,
            missed=self.gaps.missed,
        )
        return doc | {"feeds": self.feeds.status()}

    def step_views(self, now: float) -> bool:
        """One weight step of the imports whose inputs or time moved; True if a view changed."""
        s = self.settings
        self.link = link_state(
            self.beliefs,
            own_cluster=s.cluster,
            members=s.members,
            connected=self.bus.connected,
            now=now,
            lease=s.lease,
        )
        # A suspect link collects no garbage: peers are not gone just because we cannot hear them.
        grace = math.inf if self.link.suspect else s.grace
        local_loads = {k: v.as_backend_load(now) for k, v in self.local_samples.items()}
        dirty, self._dirty = self._dirty, set()
        return self.book.step(
            self.beliefs, self.local_pools, local_loads, self.link,
            now=now, grace=grace, dirty=dirty,
        )  # fmt: skip

    async def _reconcile(self) -> None:
        acked = False  # the acknowledgements reflect the views every feed holds
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.reconcile_interval):
                    await self._changed.wait()
            self._changed.clear()
            now = self.wall()
            if self.step_views(now):
                self.feeds.changed()
                acked = False
            views = self.views
            # Each feed that is due (new views, a retry, a resync) takes them; acknowledgements
            # follow only once every feed holds them.
            if await self.feeds.feed(views) and not acked:
                self.acks = acks_for(self.beliefs, views, self.feeds.refused())
                acked = True
            # After the feed: pools' status (Kubernetes writes) must not delay the gateways.
            await self._report_exports(now)

    def live_members(self, now: float) -> list[str]:
        lease = self.settings.lease
        return [
            m
            for m in self.settings.members
            if not staleness(self.beliefs, m, now=now, lease=lease).stale
        ]

    def compute_export_conditions(self, now: float) -> dict[PoolKey, Condition | None]:
        live = self.live_members(now)
        return {
            key: exported_condition(
                pool,
                generation=self.publisher.export_generation(key),
                beliefs=self.beliefs,
                own_cluster=self.name,
                live_peers=live,
            )
            for key, pool in self.local_pools.items()
        }

    async def _report_exports(self, now: float) -> None:
        """Tell the pools' status what peers acknowledged; only when something changed."""
        if self.export_status is None:
            return
        conditions = self.compute_export_conditions(now)
        if conditions == self.export_conditions:
            return
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                await self.export_status.apply_export_status(conditions)
        except Exception as exc:  # retried on the next cycle: the remembered set stays old
            log.warning("agent %s: export status failed: %s", self.name, exc)
            return
        self.export_conditions = conditions
