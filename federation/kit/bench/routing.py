"""Routing quality: a discrete-event simulation of request traffic across clusters.

Each cluster has ``slots`` (model-server concurrency) serving requests with exponential service
times and a FIFO queue; an EPP sheds (rejects) a request when the queue holds ``max_queue_per_slot
x slots``. Requests arrive at each cluster's gateway (Poisson, with optional bursts) and the
gateway picks a destination by policy:

- ``local-only``: always its own cluster;
- ``static``: equal weights over all clusters;
- ``capacity``: the real weight policy (:func:`federation.model.weights.step_weights`, with its
  smoothing, hysteresis and slow start), fed with each cluster's EPP report every
  ``report_interval`` seconds, arriving ``propagation`` seconds later at every other gateway;
- ``oracle``: global join-the-shortest-expected-delay with perfect, instant information.

A request's delay is its queue wait plus the round trip to another cluster when sent away; it
meets the SLO when served with delay ≤ ``slo``. Deterministic for a seed.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from federation.model.weights import BackendLoad, WeightMemory, WeightPolicy, step_weights

POLICIES = ("local-only", "static", "capacity", "oracle")
SLOTS_PER_POD = 4  # requests one model-server pod serves at once (the EPP reports pods)


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    slots: int
    rate: float  # requests/s arriving at this cluster's gateway
    burst_factor: float = 1.0
    burst_start: float = 0.0
    burst_end: float = 0.0

    def rate_at(self, t: float) -> float:
        return self.rate * (self.burst_factor if self.burst_start <= t < self.burst_end else 1.0)


@dataclass(frozen=True)
class Scenario:
    clusters: tuple[ClusterSpec, ...]
    duration: float = 300.0
    warmup: float = 30.0  # requests arriving before this are not scored
    service_time: float = 1.0  # mean seconds per request
    slo: float = 0.5  # seconds of queue wait (+ round trip when remote)
    rtt: float = 0.08  # seconds added to a request sent to another cluster
    max_queue_per_slot: float = 4.0
    report_interval: float = 1.0
    propagation: float = 0.05
    seed: int = 7

    @classmethod
    def default(cls) -> Scenario:
        """Three regions of unequal capacity; ap-south's demand triples for a minute."""
        return cls(
            clusters=(
                ClusterSpec("us-east", slots=40, rate=24.0),
                ClusterSpec("eu-west", slots=24, rate=14.0),
                ClusterSpec(
                    "ap-south",
                    slots=12,
                    rate=8.0,
                    burst_factor=3.0,
                    burst_start=120.0,
                    burst_end=180.0,
                ),
            )
        )

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        doc = json.loads(text)
        clusters = tuple(ClusterSpec(**c) for c in doc.pop("clusters"))
        return cls(clusters=clusters, **doc)


@dataclass
class _Cluster:
    spec: ClusterSpec
    busy: int = 0
    queue: deque[tuple[float, float, bool]] = field(default_factory=deque)  # (arrived, rtt, scored)

    def full(self, max_per_slot: float) -> bool:
        return len(self.queue) >= max_per_slot * self.spec.slots

    def load(self, max_per_slot: float) -> BackendLoad:
        pods = max(1, self.spec.slots // SLOTS_PER_POD)
        kv = self.busy / self.spec.slots
        queue_per_pod = len(self.queue) / pods
        saturation = min(1.0, max(kv, queue_per_pod / 5.0))  # the EPP scraper's rule
        status = "shedding" if self.full(max_per_slot) else "ok"
        return BackendLoad(ready_pods=pods, saturation=saturation, status=status)


@dataclass
class Outcome:
    policy: str
    requests: int = 0
    met: int = 0
    rejected: int = 0
    remote: int = 0
    delays: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        served = sorted(self.delays)
        p99 = served[min(len(served) - 1, int(0.99 * len(served)))] if served else math.nan
        return {
            "policy": self.policy,
            "requests": self.requests,
            "slo_attainment": round(self.met / self.requests, 4) if self.requests else 0.0,
            "slo_misses": self.requests - self.met,
            "p99_delay_s": round(p99, 3),
            "rejected_share": round(self.rejected / self.requests, 4) if self.requests else 0.0,
            "remote_share": round(self.remote / self.requests, 4) if self.requests else 0.0,
        }


def simulate(scenario: Scenario, policy: str) -> Outcome:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    # Separate streams, so every policy sees the same arrivals and service times.
    rng = random.Random(scenario.seed)  # arrivals
    service_rng = random.Random(scenario.seed + 1)
    route_rng = random.Random(scenario.seed + 2)
    names = [c.name for c in scenario.clusters]
    clusters = {c.name: _Cluster(c) for c in scenario.clusters}
    out = Outcome(policy)
    events: list[tuple[float, int, str, Any]] = []
    counter = 0

    def push(t: float, kind: str, data: Any) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, data))

    for spec in scenario.clusters:
        push(rng.expovariate(spec.rate), "arrive", spec.name)
    # What each gateway knows of each cluster (capacity policy), and its weight memory.
    known: dict[str, dict[str, BackendLoad]] = {g: {} for g in names}
    memory: dict[str, WeightMemory] = {g: WeightMemory() for g in names}
    weights: dict[str, dict[str, int]] = {g: {n: 1 for n in names} for g in names}
    wpolicy = WeightPolicy(lease=10.0, smoothing_period=0.5)
    if policy == "capacity":
        push(0.0, "report", None)

    def start_service(c: _Cluster, now: float) -> None:
        c.busy += 1
        push(now + service_rng.expovariate(1.0 / scenario.service_time), "done", c.spec.name)

    def expected_delay(c: _Cluster, remote: bool) -> float:
        ahead = len(c.queue) + c.busy + 1 - c.spec.slots
        wait = max(0.0, ahead) * scenario.service_time / c.spec.slots
        return wait + (scenario.rtt if remote else 0.0)

    def choose(origin: str, now: float) -> str:
        if policy == "local-only":
            return origin
        if policy == "static":
            return route_rng.choice(names)
        if policy == "oracle":
            return min(names, key=lambda n: (expected_delay(clusters[n], n != origin), n != origin))
        w = weights[origin]
        total = sum(w.values())
        if total <= 0:
            return origin
        pick = route_rng.uniform(0, total)
        for name in names:
            pick -= w.get(name, 0)
            if pick <= 0:
                return name
        return names[-1]

    def reweigh(gateway: str, now: float) -> None:
        loads: Mapping[str, BackendLoad | None] = {n: known[gateway].get(n) for n in names}
        result, memory[gateway] = step_weights(
            loads, wpolicy, here=gateway, memory=memory[gateway], now=now
        )
        weights[gateway] = {n: w.weight for n, w in result.items()}

    handlers: dict[str, Callable[[float, Any], None]] = {}

    def on_arrive(now: float, origin: str) -> None:
        spec = clusters[origin].spec
        push(now + rng.expovariate(max(spec.rate_at(now), 1e-9)), "arrive", origin)
        scored = now >= scenario.warmup
        dest = choose(origin, now)
        c = clusters[dest]
        rtt = scenario.rtt if dest != origin else 0.0
        if scored:
            out.requests += 1
            out.remote += dest != origin
        if c.full(scenario.max_queue_per_slot):
            if scored:
                out.rejected += 1
            return
        if c.busy < c.spec.slots and not c.queue:
            start_service(c, now)
            if scored:
                out.delays.append(rtt)
                out.met += rtt <= scenario.slo
        else:
            c.queue.append((now, rtt, scored))

    def on_done(now: float, name: str) -> None:
        c = clusters[name]
        c.busy -= 1
        if c.queue:
            arrived, rtt, scored = c.queue.popleft()
            start_service(c, now)
            if scored:
                delay = now - arrived + rtt
                out.delays.append(delay)
                out.met += delay <= scenario.slo

    def on_report(now: float, _: Any) -> None:
        for name, c in clusters.items():
            load = c.load(scenario.max_queue_per_slot)
            for gateway in names:  # own EPP: instant; peers: after the bus's propagation
                delay = 0.0 if gateway == name else scenario.propagation
                push(now + delay, "deliver", (gateway, name, load))
        push(now + scenario.report_interval, "report", None)

    def on_deliver(now: float, data: tuple[str, str, BackendLoad]) -> None:
        gateway, name, load = data
        known[gateway][name] = load
        reweigh(gateway, now)

    handlers.update(arrive=on_arrive, done=on_done, report=on_report, deliver=on_deliver)
    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > scenario.duration:
            break
        handlers[kind](now, data)
    return out


def run_routing(scenario: Scenario) -> dict[str, Any]:
    results = {p: simulate(scenario, p).as_dict() for p in POLICIES}
    oracle, capacity, static = results["oracle"], results["capacity"], results["static"]
    ratio = capacity["slo_attainment"] / oracle["slo_attainment"] if oracle["slo_attainment"] else 0
    fewer = static["slo_misses"] / capacity["slo_misses"] if capacity["slo_misses"] else math.inf
    return {
        "scenario": {
            "clusters": [c.__dict__ for c in scenario.clusters],
            "duration_s": scenario.duration,
            "slo_s": scenario.slo,
            "rtt_s": scenario.rtt,
            "report_interval_s": scenario.report_interval,
            "propagation_s": scenario.propagation,
            "seed": scenario.seed,
        },
        "policies": results,
        "capacity_vs_oracle_attainment": round(ratio, 4),
        "static_misses_per_capacity_miss": round(fewer, 2) if math.isfinite(fewer) else None,
        "targets": {
            "capacity_at_least_95pct_of_oracle": ratio >= 0.95,
            "capacity_2x_fewer_misses_than_static": fewer >= 2.0,
        },
    }
