"""The agent's intake: every delivery from the inbound stream, checked and applied to beliefs.

Holds what consuming builds up: the beliefs, the event counts by outcome and reason, the
sequence gaps per peer and the consumer's backlog, and tells its observers each applied event's
propagation lag.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from opentelemetry import trace

from federation import messages
from federation.messages import Event
from federation.model.beliefs import Beliefs
from federation.model.clock_offsets import ClockOffsets
from federation.model.counts import EventCounts
from federation.model.gaps import SourceGaps
from federation.runtime.consuming import consume_one
from federation.runtime.ports import Delivery, Verifier

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        *,
        cluster: str,
        clusterset: str,
        members: Sequence[str],
        wall: Callable[[], float],
        tracer: trace.Tracer | None,
        verifier: Verifier | None = None,
        lag_observers: Sequence[Callable[[str, float], None]] = (),
    ) -> None:
        self.cluster = cluster
        self.clusterset = clusterset
        self.members = tuple(members)
        self.wall = wall
        self.tracer = tracer
        self.verifier = verifier
        self.lag_observers = tuple(lag_observers)  # (peer, seconds) of every applied event
        self.beliefs = Beliefs()
        self.counts = EventCounts()
        self.gaps = SourceGaps()  # peers' events that never reached us
        self.pending = 0  # messages behind the last delivery: the consumer's backlog
        self.offsets = ClockOffsets()  # peers' clocks against ours: reported, never used
        self._newest_stored: float | None = None  # the local server's clock, as far as we know

    def received_at(self, delivery: Delivery) -> float:
        """When a live delivery reached this cluster, on our clock: now, less how long it waited
        in the local inbound stream — measured between two of the local server's own timestamps
        (this one and the newest seen), so no two clocks are ever compared."""
        now = self.wall()
        stored = delivery.stored_at
        if stored is None:
            return now
        newest = stored if self._newest_stored is None else max(self._newest_stored, stored)
        self._newest_stored = newest
        return now - (newest - stored)

    def _count_gaps(self, delivery: Delivery, caught_up: bool) -> None:
        """Sourced exports carry their publisher's count of exports (model.gaps)."""
        if delivery.origin is None:  # a live event: a newer one replaces a lost one
            return
        counted = messages.parse_export_seq(delivery.headers.get(messages.EXPORT_SEQ_HEADER))
        if counted is None:  # an agent from before the count
            return
        peer, (epoch, count) = delivery.origin[0], counted
        skipped = self.gaps.observe(peer, count, counting=caught_up, epoch=epoch)
        if skipped:
            log.warning("agent %s: %d exports of %s never arrived", self.cluster, skipped, peer)

    @staticmethod
    def _published(delivery: Delivery) -> tuple[str, float] | None:
        """(publisher, its publish time) of a delivery, None if it does not decode."""
        try:
            event = messages.decode(delivery.data)
        except messages.InvalidEvent:
            return None  # consume_one rejects it and says why
        return event.cluster, event.published_at

    def _published_at(self, delivery: Delivery, default: float) -> float:
        published = self._published(delivery)
        return default if published is None else published[1]

    def recalled_at(self, delivery: Delivery) -> float | None:
        """When a peer's event read back by direct get was published, on our clock: its publish
        time less the peer's clock offset as estimated from its live events (so a peer whose
        clock runs ahead cannot look alive for longer than it was); None when no estimate
        exists (a peer never heard live since we started: its last words are not dated)."""
        published = self._published(delivery)
        if published is None:
            return self.wall()  # consume_one rejects it and says why
        offset = self.offsets.offset(published[0])
        if offset is None:
            return None
        return min(self.wall(), published[1] - offset)

    async def apply(
        self, delivery: Delivery, *, caught_up: bool, recalled: bool = False
    ) -> Event | None:
        """Check and apply one delivery; the event if it changed beliefs, else None.

        ``recalled``: a peer's newest event read back by direct get (its lease had run out),
        dated by ``recalled_at``; not applied when it cannot be dated."""
        self.pending = delivery.pending
        if recalled:
            at = self.recalled_at(delivery)
            if at is None:
                return None
            return await self._apply_at(delivery, at, caught_up=False)
        self._count_gaps(delivery, caught_up)
        received_at = self.received_at(delivery)
        if not caught_up:
            # A start-up's replay of old events arrives all at once and in order, so the stream's
            # timestamps cannot say how old each is; bounding it by its publisher's clock keeps a
            # peer that died before our restart from looking alive for a lease (a skewed peer is
            # at worst stale until its next heartbeat, seconds later, on our clock).
            received_at = min(received_at, self._published_at(delivery, received_at))
        return await self._apply_at(delivery, received_at, caught_up=caught_up)

    async def _apply_at(
        self, delivery: Delivery, received_at: float, *, caught_up: bool
    ) -> Event | None:
        applied = await consume_one(
            delivery,
            beliefs=self.beliefs,
            clusterset=self.clusterset,
            members=self.members,
            counts=self.counts,
            wall=self.wall,
            cluster=self.cluster,
            tracer=self.tracer,
            verifier=self.verifier,
            received_at=received_at,
        )
        if applied is not None and caught_up:
            # A catch-up's or a recall's old events say nothing about a clock, nor about how
            # long events take to arrive.
            self.offsets.observe(applied.cluster, applied.published_at, received_at)
            lag = self.wall() - applied.published_at
            for observe in self.lag_observers:
                observe(applied.cluster, lag)
        return applied
