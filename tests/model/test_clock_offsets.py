"""Peers' clock offsets: the least-delayed sample of a window."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from federation.model.clock_offsets import ClockOffsets


@given(
    skew=st.floats(-300, 300),
    delays=st.lists(st.floats(0, 2), min_size=1, max_size=40),
)
def test_the_estimate_is_the_skew_less_the_smallest_recent_delay(
    skew: float, delays: list[float]
) -> None:
    offsets = ClockOffsets()
    for i, delay in enumerate(delays):
        received = 1000.0 + i
        offsets.observe("a", published_at=received - delay + skew, received_at=received)
    estimate = offsets.offset("a")
    assert estimate is not None
    assert abs(estimate - (skew - min(delays[-32:]))) < 1e-6
    assert offsets.offset("b") is None


def test_the_steady_clock_reads_as_the_wall_clock_but_never_jumps() -> None:
    from federation.runtime.clocks import steady_clock

    wall, mono = [1_000.0], [5.0]
    now = steady_clock(lambda: wall[0], lambda: mono[0])
    assert now() == 1_000.0
    wall[0], mono[0] = 955.0, 6.0  # the wall clock is set back 45 s while one second passes
    assert now() == 1_001.0
    wall[0], mono[0] = 2_000.0, 7.5  # ...and then forward
    assert now() == 1_002.5
