"""An in-memory bus: a fake of the ``Bus`` port, checked by the same contract tests as NatsBus.

A :class:`MemoryNetwork` stands for a NATS supercluster: each cluster's outbound stream is a
list, and each cluster's inbound stream *sources* the exports of every member's outbound stream —
copied as published while the two are connected, caught up from where it stopped when a
partition heals, exactly what the real inbound streams do. Live events (heartbeats, loads) reach
the linked clusters watching them as published, and are lost to the others. What the agent
relies on, and the contract tests check on both buses: per-subject order, de-duplication by
message id within a window, a consumer that starts at the newest message per subject, redelivery
after ``nak``, publishing only on the cluster's own subjects, the origin (peer, sequence) of
every sourced message, live events newest per subject, and members' newest live events read at
start. A partition switch cuts a cluster off from all others; ``down`` takes its server away
(publishes and fetches fail until ``up``).

It is a fake, named so: no persistence, no limits but the per-subject history, no stalls.
"""

from __future__ import annotations

import asyncio
import fnmatch
import math
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from federation import messages
from federation.adapters.bus import LiveDelivery
from federation.adapters.live_mailbox import LiveMailbox

DUPLICATE_WINDOW = 120.0


@dataclass(frozen=True)
class Stored:
    sequence: int  # in the stream that holds it
    subject: str
    data: bytes
    headers: Mapping[str, str]
    origin: tuple[str, int] | None = None  # (peer, sequence in its outbound), once sourced
    stored_at: float = 0.0  # when the stream that holds it stored it (the network's wall clock)


@dataclass
class MemoryDelivery:
    subject: str
    data: bytes
    headers: Mapping[str, str]
    pending: int
    origin: tuple[str, int] | None
    stored_at: float | None
    _bus: MemoryBus
    _stored: Stored

    async def ack(self) -> None:
        return None

    async def term(self) -> None:
        return None

    async def nak(self, delay: float) -> None:
        self._bus.redeliver(self._stored, delay)


@dataclass
class _Cluster:
    outbound: list[Stored] = field(default_factory=list)
    inbound: list[Stored] = field(default_factory=list)
    sourced: dict[str, int] = field(default_factory=dict)  # peer -> its last sequence copied
    out_seq: int = 0
    in_seq: int = 0
    msg_ids: dict[str, float] = field(default_factory=dict)
    buses: list[MemoryBus] = field(default_factory=list)


class MemoryNetwork:
    """The fake supercluster for one cluster set."""

    def __init__(
        self,
        clusterset: str,
        members: Collection[str],
        *,
        history_per_subject: int = 8,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clusterset = clusterset
        self.members = tuple(members)
        self.history = history_per_subject
        self.clock = clock
        self.wall = wall  # the servers' clock: what stored times are stamped with
        self.clusters = {m: _Cluster() for m in self.members}
        self.isolated: set[str] = set()
        self.down_: set[str] = set()

    def bus(self, cluster: str) -> MemoryBus:
        return MemoryBus(self, cluster)

    def linked(self, a: str, b: str) -> bool:
        if a in self.down_ or b in self.down_:
            return False
        return a == b or (a not in self.isolated and b not in self.isolated)

    def partition(self, cluster: str) -> None:
        """Cut ``cluster`` off from every other member (its own server stays up)."""
        self.isolated.add(cluster)

    def heal(self, cluster: str) -> None:
        self.isolated.discard(cluster)
        self._catch_up()

    def down(self, cluster: str) -> None:
        self.down_.add(cluster)

    def up(self, cluster: str) -> None:
        self.down_.discard(cluster)
        self._catch_up()

    def store(self, cluster: str, subject: str, data: bytes, headers: Mapping[str, str]) -> Stored:
        c = self.clusters[cluster]
        c.out_seq += 1
        stored = Stored(c.out_seq, subject, data, dict(headers), None, self.wall())
        c.outbound.append(stored)
        self._trim(c.outbound)
        self._catch_up()
        return stored

    def _trim(self, stream: list[Stored]) -> None:
        """Keep the newest ``history`` messages per subject, as max_msgs_per_subject does."""
        seen: dict[str, int] = {}
        keep: list[Stored] = []
        for s in reversed(stream):
            seen[s.subject] = seen.get(s.subject, 0) + 1
            if seen[s.subject] <= self.history:
                keep.append(s)
        stream[:] = reversed(keep)

    def _catch_up(self) -> None:
        """Every inbound stream sources each linked member's exports from where it stopped."""
        exports = messages.prefix(self.clusterset) + ".export."
        for name, c in self.clusters.items():
            grew = False
            for peer, p in self.clusters.items():
                if not self.linked(name, peer):
                    continue
                done = c.sourced.get(peer, 0)
                for s in p.outbound:
                    if s.sequence <= done or not s.subject.startswith(exports):
                        continue
                    c.in_seq += 1
                    c.inbound.append(
                        Stored(
                            c.in_seq, s.subject, s.data, s.headers, (peer, s.sequence), self.wall()
                        )
                    )
                    c.sourced[peer] = s.sequence
                    grew = True
            if grew:
                self._trim(c.inbound)
                for bus in c.buses:
                    bus.wake()

    def heard_live(self, cluster: str, stored: Stored) -> None:
        """A live event reaches the linked clusters' buses that watch live events, as sent."""
        for name, c in self.clusters.items():
            if self.linked(name, cluster):
                for bus in c.buses:
                    if bus.watching_live:
                        bus.live_mailbox.put(LiveDelivery(stored.subject, stored.data,
                                                          dict(stored.headers)))  # fmt: skip

    def newest_live(
        self, cluster: str, members: Collection[str] | None = None
    ) -> list[LiveDelivery]:
        """The newest heartbeat and digest in each member's (or each of ``members``') outbound
        linked to ``cluster``."""
        cs = self.clusterset
        found: list[LiveDelivery] = []
        for peer, p in self.clusters.items():
            if not self.linked(cluster, peer) or (members is not None and peer not in members):
                continue
            for subject in (messages.beat_subject(cs, peer), messages.digest_subject(cs, peer)):
                newest = [s for s in p.outbound if s.subject == subject]
                if newest:
                    found.append(LiveDelivery(subject, newest[-1].data, dict(newest[-1].headers)))
        return found


class MemoryBus:
    """One cluster's connection to the fake network (the ``Bus`` port)."""

    def __init__(self, network: MemoryNetwork, cluster: str) -> None:
        self.network = network
        self.cluster = cluster
        self.watching_live = False
        self.live_mailbox: LiveMailbox[LiveDelivery] = LiveMailbox()
        self._open = False
        self._queue: deque[Stored] = deque()
        self._cursor = 0  # inbound sequence delivered up to
        self._consuming = False
        self._new = asyncio.Event()
        self._own = messages.own_subjects(network.clusterset, cluster)

    @property
    def _state(self) -> _Cluster:
        return self.network.clusters[self.cluster]

    @property
    def connected(self) -> bool:
        return self._open and self.cluster not in self.network.down_

    def _check(self) -> None:
        if not self.connected:
            raise ConnectionError(f"memory bus {self.cluster}: not connected")

    async def connect(self) -> None:
        if self.cluster in self.network.down_:
            raise ConnectionError(f"memory bus {self.cluster}: server down")
        self._open = True
        if self not in self._state.buses:
            self._state.buses.append(self)

    async def ensure_streams(self) -> None:
        self._check()

    async def start_consuming(self) -> None:
        """From the newest message per subject, then everything after (LAST_PER_SUBJECT)."""
        self._check()
        inbound = self._state.inbound
        newest: dict[str, Stored] = {}
        for s in inbound:
            newest[s.subject] = s
        self._queue = deque(sorted(newest.values(), key=lambda s: s.sequence))
        self._cursor = inbound[-1].sequence if inbound else 0
        self._consuming = True

    async def watch_live(self) -> None:
        self._check()
        self.watching_live = True

    async def live(self, wait: float = 1.0) -> list[LiveDelivery]:
        self._check()
        return await self.live_mailbox.take(wait)

    live_acks_missed = 0  # (the in-memory store takes every event at once: none is missed)

    def live_unapplied(self) -> tuple[int, int]:
        return self.live_mailbox.superseded, self.live_mailbox.dropped

    async def newest_live(
        self, members: Collection[str] | None = None, *, each_within: float | None = None
    ) -> list[LiveDelivery]:
        self._check()  # (in memory nothing waits: ``each_within`` has nothing to bound)
        found = self.network.newest_live(self.cluster, members)
        # As the real bus: one heard live since watching is taken from the mailbox, not read.
        return [d for d in found if not self.live_mailbox.holds(d.subject)]

    async def restart_stalled_sources(
        self,
        stalled_after: float,
        *,
        heard_live: Collection[str] = (),
        quiet_after: float = math.inf,
    ) -> list[str]:
        self._check()
        return []  # sources of the fake never stall

    async def repair_streams(self) -> list[str]:
        self._check()
        return []  # the fake's stores are never lost

    def wake(self) -> None:
        self._new.set()

    def redeliver(self, stored: Stored, delay: float) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, delay), self._requeue, stored)

    def _requeue(self, stored: Stored) -> None:
        self._queue.append(stored)
        self.wake()

    def _pull_new(self) -> None:
        for s in self._state.inbound:
            if s.sequence > self._cursor:
                self._queue.append(s)
                self._cursor = s.sequence

    async def fetch(self, batch: int = 256, wait: float = 1.0) -> list[MemoryDelivery]:
        if not self._consuming:
            raise RuntimeError("start_consuming() first")
        self._check()
        self._pull_new()
        if not self._queue:
            self._new.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._new.wait()
            except TimeoutError:
                return []
            self._check()
            self._pull_new()
        out: list[MemoryDelivery] = []
        while self._queue and len(out) < batch:
            s = self._queue.popleft()
            out.append(
                MemoryDelivery(
                    s.subject, s.data, s.headers, len(self._queue), s.origin, s.stored_at, self, s
                )
            )
        return out

    async def publish(
        self,
        subject: str,
        payload: bytes,
        msg_id: str | None,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        self._check()
        if not any(fnmatch.fnmatchcase(subject, p.replace(">", "*")) for p in self._own):
            raise PermissionError(f"no stream for {subject!r} (not a subject of {self.cluster})")
        now = self.network.clock()
        ids = self._state.msg_ids
        for old, at in list(ids.items()):
            if now - at > DUPLICATE_WINDOW:
                del ids[old]
        if msg_id is not None:
            if msg_id in ids:
                return False
            ids[msg_id] = now
        id_header = {} if msg_id is None else {"Nats-Msg-Id": msg_id}
        stored = self.network.store(self.cluster, subject, payload, id_header | dict(headers or {}))
        if messages.is_live_subject(self.network.clusterset, subject):
            self.network.heard_live(self.cluster, stored)
        return True

    async def close(self) -> None:
        self._open = False
        self._consuming = False
        if self in self._state.buses:
            self._state.buses.remove(self)
