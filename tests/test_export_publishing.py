"""Exports go out a window at a time, not one acknowledgement at a time, and stay counted in
the order they were sent (peers count gaps in that count: ``model.gaps``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from federation import messages
from federation.model.counts import EventCounts
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.runtime.publishing import EXPORTS_IN_FLIGHT, Publisher


class SlowAckBus:
    """Acknowledges each publish only after a loop turn or two, as a busy server does; keeps
    the count header of what it stored, in the order the publishes were written, and refuses
    the subjects in ``failing``."""

    def __init__(self) -> None:
        self.counts: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.failing: set[str] = set()

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        refused = subject in self.failing
        if not refused:  # written to the connection now: stored in this order
            self.counts.append(int(headers[messages.EXPORT_SEQ_HEADER].split(".")[1]))
        try:
            for _ in range(2):
                await asyncio.sleep(0)
        finally:
            self.in_flight -= 1
        if refused:
            raise TimeoutError("no ack")
        return True


def pools(n: int) -> dict[PoolKey, LocalPool]:
    made = (
        LocalPool(namespace="llm", name=f"p{i:03}", target_ports=(8000,), export=EXPORT_VALUE)
        for i in range(n)
    )
    return {p.key: p for p in made}


def publisher(bus: SlowAckBus, *, sets: bool = False) -> Publisher:
    """One export per pool unless ``sets`` (what agents before export sets send, and every
    agent beside its sets while a peer reads none)."""
    return Publisher(
        bus=bus, clusterset="cs", cluster="a", wall=time.time, counts=EventCounts(),
        keepalive=3.0, export_sets=sets,
    )  # type: ignore[arg-type]  # fmt: skip


async def test_a_start_up_sends_its_exports_a_window_at_a_time_counted_in_order() -> None:
    bus = SlowAckBus()
    pub = publisher(bus)
    held = pools(150)
    assert await pub.sync_exports(held) == 150
    assert bus.most_in_flight == EXPORTS_IN_FLIGHT
    assert bus.counts == list(range(1, 151))  # contiguous: a peer sees no gap
    assert pub.exports_counted == 150
    assert await pub.sync_exports(held) == 0  # nothing changed: nothing said


async def test_a_failed_export_is_sent_again_on_the_next_sync_with_a_new_count() -> None:
    bus = SlowAckBus()
    pub = publisher(bus)
    held = pools(100)
    bus.failing = {messages.export_subject("cs", "a", "llm", "p010")}
    sent = await pub.sync_exports(held)
    assert sent == EXPORTS_IN_FLIGHT - 1  # the failing window's others; the rest wait
    assert PoolKey("llm", "p010") not in pub.exported
    bus.failing = set()
    assert await pub.sync_exports(held) == 100 - sent
    assert len(pub.exported) == 100
    # The refused export's count (11) is a hole peers report; every later count is new.
    assert 11 not in bus.counts
    assert bus.counts == sorted(set(bus.counts))
    assert bus.counts[-1] == pub.exports_counted
