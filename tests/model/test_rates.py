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


def test_capacity_is_completions_per_busy_share_over_the_span_and_follows_the_pods() -> None:
    meter = CapacityMeter(span=30.0)
    assert meter.observe(0.0, busy=0.1, ready_pods=4, completion_rate=2.0) is None  # idle: noise
    assert meter.observe(1.0, busy=0.5, ready_pods=4, completion_rate=6.0) == pytest.approx(12.0)
    assert meter.observe(2.0, busy=0.3, ready_pods=4, completion_rate=4.8) == pytest.approx(
        (6.0 + 4.8) / (0.5 + 0.3)  # a ratio of sums over the span, not a mean of ratios
    )
    assert meter.observe(3.0, busy=0.05, ready_pods=4, completion_rate=0.1) == pytest.approx(
        10.8 / 0.8  # a nearly idle sample is left out of both sums
    )
    assert meter.observe(40.0, busy=0.5, ready_pods=4, completion_rate=5.0) == pytest.approx(
        10.0  # what is older than the span is gone
    )
    assert meter.observe(80.0, busy=0.0, ready_pods=4, completion_rate=0.0) == pytest.approx(
        10.0  # nothing busy held: the last estimate stands
    )
    # Twice the pods: the samples held are restated for them (without it: 15.0/1.0), so the
    # estimate doubles at once and keeps its history.
    meter.observe(81.0, busy=0.5, ready_pods=4, completion_rate=5.0)
    assert meter.observe(82.0, busy=0.5, ready_pods=8, completion_rate=10.0) == pytest.approx(
        (5.0 + 10.0) / (0.25 + 0.5)
    )
    assert meter.observe(83.0, busy=0.5, ready_pods=0, completion_rate=None) is None  # no pods


def test_a_failed_scrape_keeps_the_capacity_and_its_history() -> None:
    rates = SampleRates(window=3.0)
    for t in range(5):
        sample = LoadSample(observed_at=float(t), ready_pods=2, kv_cache_utilization=0.5,
                            requests_total=10.0 * t, completions_total=8.0 * t)  # fmt: skip
        held = rates.rate(sample, float(t)).capacity_rate
    assert held == pytest.approx(16.0)
    failed = LoadSample(observed_at=5.0, epp_status="unreachable")  # (ready pods 0: not known)
    assert rates.rate(failed, 5.0).capacity_rate == pytest.approx(16.0)
    again = LoadSample(observed_at=6.0, ready_pods=2, kv_cache_utilization=0.5,
                       requests_total=60.0, completions_total=48.0)  # fmt: skip
    assert rates.rate(again, 6.0).capacity_rate == pytest.approx(16.0)


def test_a_stale_busy_share_misleads_the_capacity_little() -> None:
    """The EPP refreshes its gauges every 5 s while its completions count as they go: at the
    onset of a burst, completions over a busy share seconds old read as more capacity. Over a
    30 s span the error stays small (the 3 s window smoothed across windows that came before
    was off by 95 %)."""
    capacity, meter = 20.0, CapacityMeter(span=30.0)
    gauge = 0.0
    worst = 0.0
    for t in range(120):
        load = 8.0 if t < 61 else 18.0  # req/s served; the burst begins between refreshes
        if t % 5 == 0:
            gauge = load / capacity  # the EPP's refresh
        estimate = meter.observe(float(t), busy=gauge, ready_pods=5, completion_rate=load)
        assert estimate is not None
        worst = max(worst, abs(estimate - capacity) / capacity)
    assert worst < 0.25


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
