"""The intake dates what it applies: live events by arrival, recalled ones by their publisher's
clock offset as estimated from its live events."""

from __future__ import annotations

import msgspec
from opentelemetry import trace

from federation import messages
from federation.adapters.bus import LiveDelivery
from federation.runtime.intake import Intake
from tests.model.factories import beat

CS = "cs"


def _intake(now: list[float]) -> Intake:
    return Intake(cluster="a", clusterset=CS, members=("a", "b"), wall=lambda: now[0],
                  tracer=trace.NoOpTracer())  # fmt: skip


def _beat(sequence: int, published_at: float) -> LiveDelivery:
    event = beat("b", sequence=sequence, published_at=published_at)
    return LiveDelivery(messages.beat_subject(CS, "b"), msgspec.json.encode(event), {})


async def test_recalled_words_are_dated_by_the_peers_offset_and_never_without_one() -> None:
    now = [1000.0]
    intake = _intake(now)
    # Never heard live: its last words cannot be dated, so they are not applied.
    assert await intake.apply(_beat(1, 1090.0), caught_up=True, recalled=True) is None
    assert intake.beliefs.last_heard("b") is None
    # Heard live with its clock 100 s ahead (published 1100 on its clock, arrived at 1000).
    assert await intake.apply(_beat(2, 1100.0), caught_up=True) is not None
    assert intake.beliefs.last_heard("b") == 1000.0
    now[0] = 1030.0  # its lease ran out; what it said last was published at 1120 on its clock
    assert await intake.apply(_beat(3, 1120.0), caught_up=True, recalled=True) is not None
    assert intake.beliefs.last_heard("b") == 1020.0  # on our clock: 20 s after the first, not now
    assert intake.offsets.offset("b") == 100.0  # a recall says nothing about a clock


async def test_a_recall_is_no_propagation_lag() -> None:
    now, lags = [1000.0], []
    intake = Intake(cluster="a", clusterset=CS, members=("a", "b"), wall=lambda: now[0],
                    tracer=trace.NoOpTracer(),
                    lag_observers=(lambda peer, s: lags.append(s),))  # fmt: skip
    await intake.apply(_beat(1, 999.5), caught_up=True)
    now[0] = 1050.0
    await intake.apply(_beat(2, 1010.0), caught_up=True, recalled=True)
    assert lags == [0.5]
