"""Rates from counters: requests per second over a sliding window of a counter's readings."""

from __future__ import annotations

import dataclasses
import math
from collections import deque

from federation.model.loads import LoadSample

RATE_WINDOW = 3.0  # seconds of counter history a rate spans (longer when samples are further apart)
CAPACITY_SPAN = 30.0  # seconds of samples a capacity estimate sums (``CapacityMeter``)


class RateMeter:
    """The rate of one monotonic counter over (at least) the last ``window`` seconds.

    A reading below the previous one is a counter reset (a restarted EPP): the history starts
    again and no rate is given until two readings of the new counter exist.
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._readings: deque[tuple[float, float]] = deque()

    def observe(self, at: float, value: float) -> float | None:
        if not math.isfinite(value) or value < 0:
            self._readings.clear()
            return None
        if self._readings and (value < self._readings[-1][1] or at < self._readings[-1][0]):
            self._readings.clear()
        self._readings.append((at, value))
        # Keep the newest reading that is at least a window old: the rate spans the whole window.
        while len(self._readings) > 2 and self._readings[1][0] <= at - self.window:
            self._readings.popleft()
        first_at, first = self._readings[0]
        if at <= first_at:
            return None
        return (value - first) / (at - first_at)


class CapacityMeter:
    """What a pool completes per second when full: its completion rates over its busy shares
    (KV-cache utilization), each summed over the samples of the last ``span`` seconds.

    Why a long span and a ratio of sums: the EPP recomputes its pool-average gauges only every
    few seconds (upstream's default is 5 s) while its completion counter counts as it goes, so
    over a short window the busy share is seconds older than the completions: rising load reads
    as more capacity, falling load as less, by a third or more at the onset of a burst. Capacity
    changes slowly (pods come and go, hardware does not change under load), so summing both over
    ``span`` seconds leaves that lag a small part of the window. A sample of a nearly idle pool
    (busy below ``MIN_BUSY``) is left out of both sums: its ratio is noise (and at an onset, the
    stale gauge of the calm before); while none is held, the last estimate stands. A change of
    ready pods rescales the estimate at once: the busy shares held are restated for the new
    pods, so the history is kept.
    """

    MIN_BUSY = 0.25  # below this share of the pods in use, completions say little of capacity

    def __init__(self, span: float = CAPACITY_SPAN) -> None:
        self.span = span
        self._seen: deque[tuple[float, float, float]] = deque()  # (at, busy, completions)
        self._pods = 0
        self.estimate: float | None = None  # the last one stands while nothing busy is held

    def observe(
        self, at: float, *, busy: float, ready_pods: int, completion_rate: float | None
    ) -> float | None:
        if ready_pods != self._pods:
            if self._pods > 0 and ready_pods > 0:
                # The same completions from more pods are a smaller busy share of them: the
                # ratio of every sample held scales by new / old, as the capacity does.
                scale = self._pods / ready_pods
                self._seen = deque((t, b * scale, c) for t, b, c in self._seen)
                if self.estimate is not None:
                    self.estimate /= scale
            else:  # no pods: no capacity, and nothing to scale from
                self._seen.clear()
                self.estimate = None
            self._pods = ready_pods
        if completion_rate is not None and busy >= self.MIN_BUSY and ready_pods > 0:
            self._seen.append((at, busy, completion_rate))
        while self._seen and self._seen[0][0] <= at - self.span:
            self._seen.popleft()
        if self._seen:
            busy_sum = math.fsum(b for _, b, _ in self._seen)
            self.estimate = math.fsum(c for _, _, c in self._seen) / busy_sum
        return self.estimate


class SampleRates:
    """The rates of one pool's samples: fills a sample's rates from its counters' history."""

    def __init__(self, window: float) -> None:
        self.requests = RateMeter(window)
        self.completions = RateMeter(window)
        self.offered = RateMeter(window)
        self.capacity = CapacityMeter()

    def rate(self, sample: LoadSample, at: float, offered: float | None = None) -> LoadSample:
        """``sample`` with its rates (``at``: our steady clock, so a clock step is no rate);
        ``offered`` is the gateway's demand counter for the pool, when one counts."""
        demand = self.offered.observe(at, offered) if offered is not None else None
        arrival = completion = None
        if sample.requests_total is not None:
            arrival = self.requests.observe(at, sample.requests_total)
        if sample.completions_total is not None:
            completion = self.completions.observe(at, sample.completions_total)
        # A failed scrape says nothing of the pods (its ready pods are 0 for want of a number):
        # the estimate stands, and its history with it.
        capacity = (
            self.capacity.observe(
                at,
                busy=sample.kv_cache_utilization,
                ready_pods=sample.ready_pods,
                completion_rate=completion,
            )
            if sample.epp_status == "ok"
            else self.capacity.estimate
        )
        return dataclasses.replace(
            sample,
            arrival_rate=arrival,
            completion_rate=completion,
            capacity_rate=capacity,
            demand_rate=demand,
        )
