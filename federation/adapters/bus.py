"""The bus adapter: the agent's only door to NATS JetStream.

Topology (one set per cluster ``c`` of cluster set ``cs``):

- ``FED_OUT_<cs>_<c>``: the cluster's outbound stream, placed in its own NATS cluster, holding
  everything it publishes (``fed.v1.<cs>.{export,load}.<c>.>``, ``fed.v1.<cs>.digest.<c>`` and
  ``fed.v1.<cs>.beat.<c>``) with a short per-subject history for replay.
- ``FED_IN_<cs>_<c>``: the cluster's inbound stream, also placed in its own NATS cluster, which
  *sources* the exports of every member's outbound stream (its own included). Reads of exports
  stay local and survive partitions; NATS catches the sources up when a link heals.

Two paths in, by what the events are worth:

- **Exports** (rare, full state that stays true until replaced) through the inbound stream, by one
  durable pull consumer that starts at the last message per subject: exactly what a (re)starting
  agent needs to rebuild them.
- **Live events** (heartbeats, load digests, per-pool load reports: each worth something only
  until the next, seconds later) on plain NATS, subscribed across the supercluster's gateways:
  no sourced copy, stored message, delivery state or acknowledgement per peer and event — at
  100 clusters that is 10,000 stream sources' traffic the servers no longer carry. What is
  missed during a partition is superseded by the next event after the heal. A (re)starting agent
  reads the newest live events of every member once, by direct get from their outbound streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Placement,
    PubAck,
    StorageType,
    StreamConfig,
    StreamInfo,
    StreamSource,
    StreamSourceInfo,
)
from nats.js.errors import NotFoundError

from federation import messages
from federation.adapters.live_mailbox import LiveMailbox
from federation.model.failures import explain

log = logging.getLogger(__name__)

DUPLICATE_WINDOW = 120.0  # seconds in which a re-sent Nats-Msg-Id is dropped by the server
FETCH_FAILURES_TO_RECREATE = 3  # fetches failing in a row before the consumer is recreated
STREAM_INFO_WAIT = 1.0  # seconds: a stream info unanswered for this long is asked again
DIRECT_GETS_AT_ONCE = 32  # a starting agent's reads of members' newest live events in flight
ACKS_KEPT = 256  # our newest stored sequences, remembered to notice one given twice
# A server's refusal of one of our publishes (-ERR, then no ack: the publish times out) is told
# apart from a busy server's late ack for this long after the refusal came.
REFUSAL_MEMORY = 60.0
_REFUSED = re.compile(r"permissions violation for publish to \W*([^\s\"']+)", re.IGNORECASE)


def outbound_stream(clusterset: str, cluster: str) -> str:
    return f"FED_OUT_{clusterset}_{cluster}"


def inbound_stream(clusterset: str, cluster: str) -> str:
    return f"FED_IN_{clusterset}_{cluster}"


def shared_inbound_stream(clusterset: str, nats_cluster: str) -> str:
    """One inbound stream for every agent whose streams live in ``nats_cluster`` (cluster names
    are DNS labels, without ``_``: this never names a cluster's own)."""
    return f"FED_IN_{clusterset}_at_{nats_cluster}"


def inbound_stream_of(clusterset: str, cluster: str, nats_cluster: str, shared: bool) -> str:
    return (
        shared_inbound_stream(clusterset, nats_cluster)
        if shared
        else inbound_stream(clusterset, cluster)
    )


def config_holds(have: StreamConfig, want: StreamConfig) -> bool:
    """Whether a stream's config already says what the agent cares about in ``want``: its
    subjects, sources, placement, storage, history, duplicate window (when set), direct gets
    and replicas. Other fields (limits, retention, an operator's metadata) are not compared, so
    an edit of them by hand is left in place, not undone at the next start."""

    def sources(c: StreamConfig) -> set[tuple[str, str | None]]:
        return {(src.name, src.filter_subject) for src in c.sources or ()}

    def placed(c: StreamConfig) -> str | None:
        return c.placement.cluster if c.placement is not None else None

    return (
        set(have.subjects or ()) == set(want.subjects or ())
        and sources(have) == sources(want)
        and placed(have) == placed(want)
        and have.storage == want.storage
        and have.max_msgs_per_subject == want.max_msgs_per_subject
        and (not want.duplicate_window or have.duplicate_window == want.duplicate_window)
        and bool(have.allow_direct) == bool(want.allow_direct)
        and (have.num_replicas or 1) == (want.num_replicas or 1)
    )


def consumer_name(cluster: str) -> str:
    return f"agent-{cluster}"


@dataclass
class Delivery:
    """One message from the inbound stream, with the acknowledgement calls the runtime needs."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    pending: int  # messages still waiting behind this one
    _msg: Msg
    # (peer cluster, sequence in the peer's outbound stream), from the header the servers add
    # to sourced messages; None for anything else.
    origin: tuple[str, int] | None = None
    stored_at: float | None = None  # the inbound stream's timestamp (the local server's clock)

    async def ack(self) -> None:
        await self._msg.ack()

    async def term(self) -> None:
        await self._msg.term()

    async def nak(self, delay: float) -> None:
        await self._msg.nak(delay=delay)


@dataclass
class LiveDelivery:
    """A live event heard on plain NATS (or read by direct get at start): nothing is stored for
    us, so there is nothing to acknowledge, and no origin sequence (gaps of superseded state
    mean nothing)."""

    subject: str
    data: bytes
    headers: Mapping[str, str]
    pending: int = 0
    origin: tuple[str, int] | None = None
    stored_at: float | None = None

    async def ack(self) -> None:
        return None

    async def term(self) -> None:
        return None

    async def nak(self, delay: float) -> None:
        return None  # the next event on its subject is the retry


@dataclass(frozen=True)
class BusAddress:
    url: str
    clusterset: str
    cluster: str
    placement_cluster: str
    members: tuple[str, ...]
    history_per_subject: int = 8
    request_timeout: float = 5.0
    # Deliver every stored event at start, not only the newest per subject (benchmarks only:
    # it lets one agent ingest a pre-filled stream through its normal consume path).
    deliver_all: bool = False
    # One inbound stream per NATS cluster, shared by the agents placed there (each with its own
    # consumer), instead of one per cluster: C x C stream sources become N x C.
    shared_inbound: bool = False

    @property
    def inbound(self) -> str:
        return inbound_stream_of(
            self.clusterset, self.cluster, self.placement_cluster, self.shared_inbound
        )


class NatsBus:
    """Connects to this cluster's own NATS server and nothing else."""

    def __init__(
        self,
        address: BusAddress,
        *,
        on_state: Callable[[str], Awaitable[None]] | None = None,
        connect_options: Mapping[str, object] | None = None,
    ) -> None:
        self.address = address
        self._on_state = on_state
        self._connect_options = dict(connect_options or {})
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._closing = False
        self._watching_live = False
        self.live_mailbox: LiveMailbox[LiveDelivery] = LiveMailbox()
        self._reopening = asyncio.Lock()
        self.reopened = 0  # clients replaced: closed by the server, or a renewed login
        self.stream_updates_skipped = 0  # ensures that found a stream already as configured
        # The last sequences seen in our streams: a stream below them lost its store.
        self._outbound_last = 0
        self._inbound_last = 0
        # Inbound sources seen without contact, and since when (monotonic): see
        # restart_stalled_sources.
        self._uncontacted: dict[str, float] = {}
        self._outbound_lost = False  # a publish was stored at a sequence we had passed
        self._outbound_behind = False  # the last check found the stream below our last sequence
        self._publishing = 0  # publishes awaiting their ack
        self._reorder = 1  # the most at once: how far acks may arrive out of order
        # The newest sequences our publishes were stored at: a stream never gives one twice.
        self._acked: deque[int] = deque(maxlen=ACKS_KEPT)
        self._refused: dict[str, float] = {}  # subjects the server refused us, and when (bounded)
        self._acks_awaited: set[asyncio.Task[None]] = set()  # live events' acks, taken later
        self.live_acks_missed = 0  # live events the stream did not ack within the timeout
        self._fetch_failures = 0  # in a row
        self._consuming = False  # a consumer was made once: the start is over
        self._create_tried = False  # this process asked for one (its answer may have been lost)

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus is not connected")
        return self._js

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> None:
        self._closing = False
        self._nc = await self._new_client()
        self._js = self._nc.jetstream(timeout=self.address.request_timeout)

    async def _new_client(self) -> Client:
        a = self.address
        this: list[Client] = []  # the client these callbacks belong to, once connected

        async def note(state: str) -> None:
            log.info("nats %s: %s", a.cluster, state)
            if self._on_state is not None:
                await self._on_state(state)

        async def disconnected() -> None:
            await note("disconnected")

        async def reconnected() -> None:
            await note("reconnected")

        async def error(exc: Exception) -> None:
            log.warning("nats %s: %s", a.cluster, explain(exc))
            refused = _REFUSED.search(str(exc))
            if refused is not None:
                if len(self._refused) >= ACKS_KEPT:
                    self._refused.clear()
                self._refused[refused[1]] = time.monotonic()

        async def closed() -> None:
            if not self._closing and this and self._nc is this[0]:  # not a replaced client
                await note("closed; a new connection is opened on next use")

        client = await nats.connect(
            servers=[a.url],
            name=f"federation-agent/{a.cluster}",
            connect_timeout=a.request_timeout,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
            closed_cb=closed,
            **self._connect_options,
        )
        this.append(client)
        return client

    async def _reopen_if_closed(self) -> None:
        """Replace a client the server closed for good with a new one, bound to our consumer.

        nats-py does not reconnect after the server sends 'Authorization Violation' to a live
        connection; it closes the client. A nats-server config reload after a password rotation
        does exactly that to connections made with the old password. The new client logs in with
        the current options (the rotated password); failures propagate and the caller retries.
        """
        if self._nc is None or not self._nc.is_closed or self._closing:
            return
        async with self._reopening:  # fetch, publish and the source check may all get here
            if not self._nc.is_closed or self._closing:
                return
            log.warning("nats %s: client closed; opening a new one", self.address.cluster)
            await self._reopen()

    async def renew_connection(self) -> None:
        """Log in again with a new client (a rotated nkey). The old client keeps working until
        the new one is in: when the servers refuse the new login, this raises and nothing
        changed."""
        if self._nc is None or self._closing:
            return
        async with self._reopening:
            old = self._nc
            try:
                await self._reopen()
            except Exception:
                self._nc, self._js = old, old.jetstream(timeout=self.address.request_timeout)
                raise
            with contextlib.suppress(Exception):  # the new client is in; the old one may go
                await old.close()

    async def _reopen(self) -> None:
        """A new client with the current options, subscribed and bound like the old one; on any
        failure it is closed again, so the next use starts over."""
        client = await self._new_client()
        self._nc, self._js = client, client.jetstream(timeout=self.address.request_timeout)
        try:
            if self._watching_live:
                await self.watch_live()
            if self._sub is not None:
                a = self.address
                self._sub = await self.js.pull_subscribe_bind(
                    durable=consumer_name(a.cluster),
                    stream=a.inbound,
                )
        except Exception:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        self.reopened += 1

    def _outbound_config(self, first_seq: int | None = None) -> StreamConfig:
        a = self.address
        return StreamConfig(
            name=outbound_stream(a.clusterset, a.cluster),
            subjects=messages.own_subjects(a.clusterset, a.cluster),
            storage=StorageType.FILE,
            max_msgs_per_subject=a.history_per_subject,
            duplicate_window=DUPLICATE_WINDOW,
            placement=Placement(cluster=a.placement_cluster),
            allow_direct=True,  # peers read our newest live events by direct get at start
            num_replicas=1,
            first_seq=first_seq,
        )

    def _inbound_config(self) -> StreamConfig:
        a = self.address
        return StreamConfig(
            name=a.inbound,
            storage=StorageType.FILE,
            max_msgs_per_subject=a.history_per_subject,
            placement=Placement(cluster=a.placement_cluster),
            sources=self._inbound_sources(),
            allow_direct=True,
            num_replicas=1,
        )

    async def ensure_streams(self) -> None:
        """Create or update this cluster's outbound and inbound streams (idempotent)."""
        await self._ensure(self._outbound_config())
        await self._ensure(self._inbound_config())

    async def repair_streams(self) -> list[str]:
        """Recreate what a lost store took: ``outbound``, ``inbound`` and/or ``consumer``.

        A cluster's servers that come back with empty stores recreate our streams empty from the
        JetStream meta layer's assignments (checked with nats-server 2.15), or, when the whole
        supercluster lost its stores, do not have them at all. Either way the stream's last
        sequence is below the last one we saw in it. The outbound stream is then made to go on
        from our last sequence (created with ``first_seq``, or purged up to it), so that peers'
        sources, which resume after the last sequence they hold, take what we publish next; the
        caller republishes its whole state. A lost inbound stream is recreated (its sources
        fill it again from peers' outbound streams) and the consumer with it.
        """
        await self._reopen_if_closed()
        a = self.address
        repaired: list[str] = []
        out, inbound = (
            outbound_stream(a.clusterset, a.cluster),
            a.inbound,
        )
        # Read before asking: an ack may overtake a stream-info answer taken before its message.
        outbound_last, inbound_last = self._outbound_last, self._inbound_last
        info = await self._stream_info(out)
        behind = info is not None and (info.state.last_seq or 0) < outbound_last
        # Behind on two checks in a row, never on one (a purge is no step to take on a race).
        if info is None or (behind and self._outbound_behind):
            self._outbound_lost = True  # sticky until repaired: a failed repair is retried
        self._outbound_behind = behind
        if self._outbound_lost:
            if info is None:
                await self.js.add_stream(self._outbound_config(self._outbound_last + 1))
            else:  # what it took since it came back empty sits below sequences peers passed
                await self.js.purge_stream(out, seq=self._outbound_last + 1)
            self._outbound_lost = False
            repaired.append("outbound")
        try:
            repaired += await self._repair_inbound(inbound, inbound_last)
        except Exception as exc:  # retried at the next check; what was repaired is still said
            if not repaired:
                raise
            log.warning("nats %s: inbound repair failed, retrying: %s", a.cluster, explain(exc))
        return repaired

    async def _repair_inbound(self, inbound: str, inbound_last: int) -> list[str]:
        info = await self._stream_info(inbound)
        if info is None:
            await self.js.add_stream(self._inbound_config())
        if info is None or (info.state.last_seq or 0) < inbound_last:
            self._inbound_last = 0
            await self.start_consuming()
            return ["inbound"]
        try:
            await self.js.consumer_info(inbound, consumer_name(self.address.cluster))
            lost = self._fetch_failures >= FETCH_FAILURES_TO_RECREATE
        except NotFoundError:
            lost = True
        if lost:  # gone, or there but failing every fetch (recreated without its state)
            await self.start_consuming()
            return ["consumer"]
        return []

    async def _stream_info(self, name: str) -> StreamInfo | None:
        try:
            return await self._stream_info_soon(name)
        except NotFoundError:
            return None

    async def _stream_info_soon(self, name: str) -> StreamInfo:
        """The stream's info, asked again every ``STREAM_INFO_WAIT`` while no answer comes, for
        at most the request timeout in all (then ``TimeoutError``, as one ask timed out before).

        Measured with 100 agents starting at once (BENCHMARKS.md, session 19): the first ask for
        the shared inbound stream's info, a stream other agents had just created or were
        creating, went unanswered for most of them, and each waited out its whole 5 s attempt;
        asked again after a second, it was answered at once. (Why the first goes unanswered we
        have not found; the stream's leader not yet in place is the likely cause.)"""
        async with asyncio.timeout(self.address.request_timeout):
            while True:
                try:
                    async with asyncio.timeout(STREAM_INFO_WAIT):
                        return await self.js.stream_info(name)
                except TimeoutError:
                    continue  # unanswered: ask again

    async def _ensure(self, config: StreamConfig) -> None:
        assert config.name is not None
        info = await self._stream_info(config.name)
        if info is None:
            await self.js.add_stream(config)
            log.info("created stream %s", config.name)
            return
        if config_holds(info.config, config):
            # Nothing to change: no update. Every agent of a NATS cluster updated its shared
            # inbound stream (a hundred sources) with the list it already had, a JetStream
            # meta-layer proposal each, when a whole ClusterSet started at once.
            self.stream_updates_skipped += 1
            return
        config.first_seq = info.config.first_seq  # fixed at creation (see repair_streams)
        await self.js.update_stream(config)
        log.info("updated stream %s", config.name)

    async def watch_live(self) -> None:
        """Subscribe to every member's live events on plain NATS (into :attr:`live_mailbox`).

        They are checked and verified like any event when applied. Subscribing is needed before
        :meth:`newest_live`, so nothing published between the two is missed.
        """
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        mailbox = self.live_mailbox

        async def heard(msg: Msg) -> None:
            mailbox.put(LiveDelivery(msg.subject, msg.data, dict(msg.headers or {})))

        for subject in messages.live_subjects(self.address.clusterset):
            await self._nc.subscribe(subject, cb=heard)
        self._watching_live = True

    async def live(self, wait: float = 1.0) -> list[LiveDelivery]:
        """The live events heard since the last call, the newest per subject; waits at most
        ``wait`` for the first."""
        return await self.live_mailbox.take(wait)

    def live_unapplied(self) -> tuple[int, int]:
        """Live events never handed out: (superseded while waiting, dropped by the cap)."""
        return self.live_mailbox.superseded, self.live_mailbox.dropped

    async def newest_live(
        self, members: Collection[str] | None = None, *, each_within: float | None = None
    ) -> list[LiveDelivery]:
        """Every member's (or each of ``members``') newest heartbeat and load digest, read by
        direct get from its outbound stream (wherever its NATS cluster is): what a (re)starting
        agent knew from the inbound stream before live events left it, and what a peer whose
        lease ran out said last (after a partition heals). Members cut off or without either are
        skipped; the live path brings them within a third of the lease (a digest's keepalive).
        One already heard live since :meth:`watch_live` is not read: the caller takes the newer
        one from :attr:`live_mailbox`.
        Per-pool reports (agents from before digests) are not read: they come again within a
        load interval. ``each_within`` bounds each get on its own: one that hangs (a black-holed
        link) loses only its own answer."""
        await self._reopen_if_closed()
        a = self.address
        gate = asyncio.Semaphore(DIRECT_GETS_AT_ONCE)

        async def newest(member: str, subject: str) -> LiveDelivery | None:
            async with gate:
                if self.live_mailbox.holds(subject):
                    # Heard live since we subscribed: that one is newer than the stream's. (At
                    # 100 members the live path brings most of them before their turn comes: a
                    # beat within its interval, a digest within its keepalive.)
                    return None
                try:
                    async with asyncio.timeout(each_within):
                        m = await self.js.get_msg(
                            outbound_stream(a.clusterset, member), subject=subject, direct=True
                        )
                except Exception as exc:  # none yet, or its cluster out of reach: skipped
                    log.debug("nats %s: no newest %s: %r", a.cluster, subject, exc)
                    return None
            return LiveDelivery(subject, m.data or b"", dict(m.headers or {}))

        asked = [
            newest(m, subject(a.clusterset, m))
            for m in (a.members if members is None else members)
            for subject in (messages.beat_subject, messages.digest_subject)
        ]
        return [d for d in await asyncio.gather(*asked) if d is not None]

    async def restart_stalled_sources(
        self,
        stalled_after: float,
        *,
        heard_live: Collection[str] = (),
        quiet_after: float = math.inf,
    ) -> list[str]:
        """Re-attach inbound sources that have been silent for ``stalled_after`` seconds, or for
        ``quiet_after`` seconds when their cluster was just heard live (``heard_live``).

        Checked with nats-server 2.15: after this cluster's server restarts, or a gateway link
        heals, its inbound stream's sources from *other* NATS clusters can stay inactive for
        minutes. Removing and re-adding them re-establishes them at once. A re-added source
        resumes after the last message the stream holds from it (nats-server scans back for
        it); anything delivered twice is dropped by the consumer as a duplicate. A healthy source
        is in contact every few seconds even when no export moves (its idle heartbeats keep
        ``active`` below a second, measured), so a peer heard live whose source is out of
        contact is the sure sign of a stall, hence the shorter bound; a source that never made
        contact is restarted only on that sign. Sources
        missing from the stream's config (a restart whose second step failed) are put back
        first. Returns the names of the sources restarted or put back (none when all are live;
        needs the JetStream meta leader).
        """
        await self._reopen_if_closed()
        a = self.address
        name = a.inbound
        info = await self._stream_info_soon(name)
        own = outbound_stream(a.clusterset, a.cluster)
        live = {outbound_stream(a.clusterset, c) for c in heard_live}

        now = time.monotonic()

        def is_stalled(source: StreamSourceInfo) -> bool:
            active = source.active
            if active is None or active < 0:  # no contact since it was (re-)added
                # A peer not deployed yet, or a source just re-added: only the hint says more.
                # On a shared stream another agent may have re-added it a moment ago: give it
                # ``quiet_after`` from when we first saw it so, or agents restart each other's.
                first = self._uncontacted.setdefault(source.name, now)
                grace = quiet_after if a.shared_inbound else 0.0
                return source.name in live and now - first >= grace
            self._uncontacted.pop(source.name, None)
            # The peer is up (heard live): its source must be in contact too.
            limit = quiet_after if source.name in live else stalled_after
            return active / 1e9 > limit

        stalled = [s.name for s in info.sources or [] if s.name != own and is_stalled(s)]
        config = info.config
        wanted = self._inbound_sources()
        configured = {s.name for s in config.sources or []}
        missing = [s.name for s in wanted if s.name not in configured]
        if missing:
            # A restart whose second step failed (JetStream answers 503 for seconds after a
            # heal) left sources out: put every member's back, which also restarts them.
            config.sources = wanted
            await self.js.update_stream(config)
            log.warning("nats %s: inbound sources %s were missing; re-added", a.cluster, missing)
            self._uncontacted.update(dict.fromkeys(missing, now))  # re-added: a fresh start
            return missing
        if not stalled:
            return []
        config.sources = [s for s in wanted if s.name not in stalled]
        await self.js.update_stream(config)
        config.sources = wanted
        await self.js.update_stream(config)
        self._uncontacted.update(dict.fromkeys(stalled, now))  # re-added: a fresh start
        return stalled

    def _inbound_sources(self) -> list[StreamSource]:
        a = self.address
        return [
            StreamSource(
                name=outbound_stream(a.clusterset, m),
                filter_subject=messages.exports_subject(a.clusterset, m),
            )
            for m in a.members
        ]

    async def start_consuming(self) -> None:
        """(Re)create the durable consumer from the newest message per subject.

        Re-creating on start is deliberate: the agent's beliefs live in memory, so a restarted
        agent must see the latest state of every subject again, not only what it had not acked.
        The one exception: a retry of this process's own create, which timed out on our side but
        made the consumer, binds to it while it has delivered nothing.
        """
        a = self.address
        stream = a.inbound
        durable = consumer_name(a.cluster)
        if self._sub is not None:  # a consumer recreated after a lost store: drop the old one
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._fetch_failures = 0
        if (
            self._create_tried
            and not self._consuming
            and await self._unused_consumer(stream, durable)
        ):
            # At start, our own earlier attempt's create that finished after we stopped waiting
            # (a busy meta layer: 100 agents starting at once). It has delivered nothing, so it
            # is what a new one would be; deleting it would make the retry redo the work.
            # (A repair later always starts over: that consumer may be the broken one.)
            self._sub = await self.js.pull_subscribe_bind(durable=durable, stream=stream)
            self._consuming = True
            return
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(stream, durable)
        config = ConsumerConfig(
            durable_name=durable,
            deliver_policy=DeliverPolicy.ALL if a.deliver_all else DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=30.0,
            max_ack_pending=20_000,
            # Exports only: an inbound stream from before the live path still holds old live
            # events, which must not be applied as news.
            filter_subject=messages.exports_subject(a.clusterset),
        )
        self._create_tried = True
        self._sub = await self.js.pull_subscribe(
            messages.exports_subject(a.clusterset), durable=durable, stream=stream, config=config
        )
        self._consuming = True

    async def _unused_consumer(self, stream: str, durable: str) -> bool:
        try:
            info = await self.js.consumer_info(stream, durable)
        except NotFoundError:
            return False
        wanted = DeliverPolicy.ALL if self.address.deliver_all else DeliverPolicy.LAST_PER_SUBJECT
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        return (
            info.config.deliver_policy == wanted
            and info.config.filter_subject == messages.exports_subject(self.address.clusterset)
            and not delivered
        )

    async def fetch(self, batch: int = 256, wait: float = 1.0) -> list[Delivery]:
        """Up to ``batch`` deliveries, waiting at most ``wait`` for the first one."""
        if self._sub is None:
            raise RuntimeError("start_consuming() first")
        await self._reopen_if_closed()
        try:
            msgs = await self._sub.fetch(batch, timeout=wait)
        except (NatsTimeoutError, TimeoutError):
            self._fetch_failures = 0
            return []
        except Exception:
            self._fetch_failures += 1
            raise
        self._fetch_failures = 0
        return [self._delivery(m) for m in msgs]

    def _delivery(self, m: Msg) -> Delivery:
        md = m.metadata  # parsed from the reply subject at every access: once
        self._inbound_last = max(self._inbound_last, md.sequence.stream)
        return Delivery(
            subject=m.subject,
            data=m.data,
            headers=dict(m.headers or {}),
            pending=md.num_pending,
            _msg=m,
            origin=self._origin(m.headers),
            stored_at=md.timestamp.timestamp() if md.timestamp else None,
        )

    def _origin(self, headers: Mapping[str, str] | None) -> tuple[str, int] | None:
        """Parse ``Nats-Stream-Source: FED_OUT_<cs>_<peer> <seq> ...`` (nats-server 2.10+)."""
        fields = (headers or {}).get("Nats-Stream-Source", "").split()
        prefix = outbound_stream(self.address.clusterset, "")
        if len(fields) < 2 or not fields[0].startswith(prefix) or not fields[1].isdigit():
            return None
        return fields[0][len(prefix) :].split(":", 1)[0], int(fields[1])

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Publish to JetStream; True when stored, False when the server saw ``msg_id`` already;
        PermissionError when the server's permissions refuse the subject (not a timeout).
        Without an id or headers the message goes bare (``MSG``, not ``HMSG``): every live
        subscriber parses it without nats-py's per-line header parse."""
        await self._reopen_if_closed()
        hdrs = {} if msg_id is None else {"Nats-Msg-Id": msg_id}
        hdrs.update(headers or {})
        live = msg_id is None  # (live events carry no id: the next supersedes them anyway)
        if live and self._refused_lately(subject):
            raise PermissionError(f"the server refuses publishes to {subject}")
        if live and subject not in self._refused:
            # A live event: peers hear it on plain NATS as it is written, and the stream keeps
            # a copy for replay, so its ack is taken when it comes, not waited for. (Waited
            # for, a busy server's or a starved loop's late acks held each beat and digest up
            # by up to the request timeout: at 100 x 100, 600-700 beats and 500 digests timed
            # out in a cold start.) A refusal reaches us after the publish, as an error: the
            # next publish to that subject raises, and a subject refused before is published
            # waiting for its ack (told at once, not one publish late, after REFUSAL_MEMORY).
            # nats-py takes a permit for the ack before it writes and never gives it back if
            # the write fails: while disconnected, the event is not written at all.
            if self._nc is None or not self._nc.is_connected:
                raise ConnectionError("not connected: a live event is not buffered")
            self._publishing += 1
            self._reorder = max(self._reorder, self._publishing)
            try:
                stored = await self.js.publish_async(
                    subject, payload, headers=hdrs or None,
                    wait_stall=self.address.request_timeout,
                )  # fmt: skip
            except BaseException:
                self._publishing -= 1
                raise
            later = asyncio.get_running_loop().create_task(self._stored_later(subject, stored))
            self._acks_awaited.add(later)
            later.add_done_callback(self._ack_taken)
            return True
        self._publishing += 1
        self._reorder = max(self._reorder, self._publishing)
        try:
            ack = await self.js.publish(
                subject, payload, headers=hdrs or None, timeout=self.address.request_timeout
            )
        except TimeoutError:
            if self._refused_lately(subject):  # (its -ERR came while we waited)
                raise PermissionError(f"the server refuses publishes to {subject}") from None
            raise
        finally:
            self._publishing -= 1
        self._stored(ack)
        return not ack.duplicate

    def _refused_lately(self, subject: str) -> bool:
        """The server refused us this subject (its permissions) within REFUSAL_MEMORY."""
        refused_at = self._refused.get(subject)
        return refused_at is not None and time.monotonic() - refused_at < REFUSAL_MEMORY

    async def _stored_later(self, subject: str, stored: asyncio.Future[PubAck]) -> None:
        """A live event's ack, whenever it comes (within the request timeout)."""
        try:
            async with asyncio.timeout(self.address.request_timeout):
                ack = await stored  # (a timeout cancels it: nats-py forgets the request)
        except Exception as exc:
            self.live_acks_missed += 1
            log.debug("nats %s: no ack for %s: %s", self.address.cluster, subject, explain(exc))
            return
        self._stored(ack)

    def _ack_taken(self, later: asyncio.Task[None]) -> None:
        # (A done callback: it runs even for a task cancelled before it started.)
        self._acks_awaited.discard(later)
        self._publishing -= 1

    def _stored(self, ack: PubAck) -> None:
        if ack.duplicate:
            return
        # Sequences only grow and are never given twice; one far below the last (more than
        # acks can be out of order), or one already given, means the stream was recreated
        # empty: a lost store (see repair_streams). (A stream that held only a few of our
        # messages when it was lost refills past them before two checks find it behind.)
        if ack.seq <= self._outbound_last - self._reorder or ack.seq in self._acked:
            self._outbound_lost = True
        self._acked.append(ack.seq)
        self._outbound_last = max(self._outbound_last, ack.seq)

    def set_password(self, password: str) -> None:
        """Use this password from the next (re)connection on: a rotation needs no restart."""
        self._connect_options["password"] = password
        if self._nc is not None:
            self._nc.options["password"] = password  # nats-py reads it at every reconnect

    async def publish_raw(self, subject: str, payload: bytes) -> None:
        """Core publish without JetStream's ack (for drills that send hostile input)."""
        if self._nc is None:
            raise RuntimeError("bus is not connected")
        await self._nc.publish(subject, payload)

    async def close(self) -> None:
        # close, not drain: every delivery is acked before its effect returns, so nothing
        # in flight is lost, and drain can stall on an outstanding pull request.
        self._closing = True
        for later in list(self._acks_awaited):
            later.cancel()
        if self._nc is not None:
            try:
                async with asyncio.timeout(self.address.request_timeout):
                    await self._nc.close()
            except Exception as exc:  # closing is best effort; the socket dies with us anyway
                log.warning("nats %s: close failed: %r", self.address.cluster, exc)
        self._nc = self._js = self._sub = None
