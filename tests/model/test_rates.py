"""Rates from counters, and the capacity estimate."""

from __future__ import annotations

import pytest

from federation.model.loads import LoadSample
from federation.model.rates import CapacityMeter, RateMeter, SampleRates


def test_a_rate_spans_the_window_and_a_reset_starts_again() -> None:
    meter = RateMeter(window=3.0)
    assert meter.observe(0.0, 100.0) is None  # one reading is no rate
    assert meter.observe(1.0, 110.0) == pytest.approx(10.0)
    meter.observe(2.0, 130.0)
    assert meter.observe(4.0, 170.0) == pytest.approx((170 - 110) / 3.0)  # from 1.0: 3 s back
    assert meter.observe(5.0, 3.0) is None  # the EPP restarted: its counter began again
    assert meter.observe(6.0, 9.0) == pytest.approx(6.0)
    assert meter.observe(7.0, float("nan")) is None


def test_capacity_is_completions_per_busy_share_and_follows_the_pods() -> None:
    meter = CapacityMeter(window=3.0, smoothing=1.0)
    assert meter.observe(0.0, busy=0.1, ready_pods=4, completion_rate=2.0) is None  # idle: noise
    assert meter.observe(1.0, busy=0.5, ready_pods=4, completion_rate=6.0) == pytest.approx(
        6.0 / 0.3  # the busy share is averaged over the window: (0.1 + 0.5) / 2
    )
    estimate = meter.estimate
    assert estimate is not None
    assert meter.observe(2.0, busy=0.0, ready_pods=8, completion_rate=None) == pytest.approx(
        estimate * 2  # twice the pods: twice the capacity, at once
    )


def test_sample_rates_fill_a_sample_from_its_counters() -> None:
    rates = SampleRates(window=3.0)
    first = LoadSample(observed_at=0.0, ready_pods=2, kv_cache_utilization=0.5,
                       requests_total=10.0, completions_total=8.0)  # fmt: skip
    assert rates.rate(first, 0.0).arrival_rate is None
    second = LoadSample(observed_at=1.0, ready_pods=2, kv_cache_utilization=0.5,
                        requests_total=15.0, completions_total=12.0)  # fmt: skip
    rated = rates.rate(second, 1.0)
    assert rated.arrival_rate == pytest.approx(5.0)
    assert rated.completion_rate == pytest.approx(4.0)
    assert rated.capacity_rate == pytest.approx(8.0)
