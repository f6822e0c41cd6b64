"""The reconciler's pacing by its loop's lateness (``model.pacing``)."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.model.pacing import LATENESS_FLOOR, Lateness, paced_gap


def test_lateness_is_the_worst_seen_halving_every_half_life() -> None:
    late = Lateness(half_life=5.0)
    assert late.value(0.0) == 0.0
    late.observe(2.0, at=10.0)
    late.observe(0.5, at=10.5)  # smaller than what is remembered: no change
    assert late.value(10.0) == 2.0
    assert late.value(15.0) == pytest.approx(1.0)
    assert late.value(20.0) == pytest.approx(0.5)
    late.observe(0.8, at=20.0)  # now the larger
    assert late.value(20.0) == 0.8


def test_lateness_ignores_timers_on_time_or_early_and_nonsense() -> None:
    late = Lateness()
    for overshoot in (0.0, -0.3, math.nan, math.inf, -math.inf):
        late.observe(overshoot, at=1.0)
    assert late.value(1.0) == 0.0


def test_a_loop_on_time_keeps_the_base_gap() -> None:
    assert paced_gap(0.5, 0.0, 2.5) == 0.5
    assert paced_gap(0.5, LATENESS_FLOOR / 2, 2.5) == 0.5
    assert paced_gap(0.5, 0.3, 2.5) == 0.5  # late, but less than the gap already is


def test_a_late_loop_stretches_the_gap_to_its_lateness_up_to_the_bound() -> None:
    assert paced_gap(0.5, 1.2, 2.5) == 1.2
    assert paced_gap(0.5, 7.0, 2.5) == 2.5


@given(st.floats(0.01, 5), st.floats(0, 60, allow_nan=False), st.floats(0, 10, allow_nan=False))
def test_the_gap_is_never_below_its_base_nor_above_the_larger_of_base_and_bound(
    base: float, lateness: float, most: float
) -> None:
    gap = paced_gap(base, lateness, most)
    assert base <= gap <= max(base, most)
    assert gap == base or gap == min(lateness, most)
