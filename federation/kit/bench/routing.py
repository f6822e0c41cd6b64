"""Routing quality: a discrete-event simulation of request traffic across clusters.

Each cluster has ``slots`` (model-server concurrency) serving requests with exponential service
times and a FIFO queue; an EPP sheds (rejects) a request when the queue holds ``max_queue_per_slot
x slots``. Requests arrive at each cluster's gateway (Poisson, with optional bursts) and the
gateway picks a destination by policy:

- ``local-only``: always its own cluster;
- ``static``: equal weights over all clusters;
- ``capacity``: the real weight policy (:func:`federation.model.weights.step_weights`, with its
  smoothing, hysteresis and slow start), fed what a real EPP exposes: the pool averages of
  KV-cache utilization, queue and running requests, ready pods and flow-control saturation,
  which the EPP recomputes every ``report_interval`` seconds (upstream's default is 5 s), and its
  request and completion counters, which count each request as it goes. Each agent scrapes them
  every second, reduces them with its own :func:`~federation.model.loads.sample_from_metrics`,
  rates the counters over its rate window and publishes what moved (its own publish rule, with
  its keepalive); a report reaches every other gateway ``propagation`` seconds later (its own at
  once). ``demand_source`` says whether the gateway counts its own demand (``gateway``, the
  HAProxy feed) or the EPP's arrivals stand in for it (``epp``);
- ``oracle``: global join-the-shortest-expected-delay with perfect, instant information.

A request's delay is its queue wait plus the round trip to another cluster when sent away; it
meets the SLO when served with delay ≤ ``slo``. Deterministic for a seed.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from federation.kit.bench.routing_scenarios import SLOTS_PER_POD, ClusterSpec, Scenario
from federation.model.loads import LoadSample, sample_from_metrics, worth_publishing
from federation.model.rates import RATE_WINDOW, RateMeter, SampleRates
from federation.model.weights import BackendLoad, WeightMemory, WeightPolicy, step_weights
from federation.runtime.publishing import LOAD_CHANGE_THRESHOLD

__all__ = ["POLICIES", "ClusterSpec", "Scenario", "run_family", "run_routing", "simulate"]

POLICIES = ("local-only", "static", "capacity", "oracle")
SAMPLE_INTERVAL = 1.0  # seconds between the agent's EPP scrapes (``--load-interval``)


@dataclass
class _Cluster:
    spec: ClusterSpec
    rate_window: float
    busy: int = 0
    queue: deque[tuple[float, float, bool]] = field(default_factory=deque)  # (arrived, rtt, scored)
    arrived: int = 0  # the EPP's request counter: requests that reached this pool
    completed: int = 0  # the EPP's completion counter
    offered: int = 0  # the gateway's: requests that arrived at this cluster, before routing
    rates: SampleRates = field(init=False)  # the agent's own, as it runs
    demand: RateMeter = field(init=False)  # a gateway's counter of what it was offered
    gauges: dict[str, float] = field(default_factory=dict)  # the EPP's, as last refreshed
    published: tuple[LoadSample, float] | None = None  # the agent's last report, and when

    def __post_init__(self) -> None:
        self.rates = SampleRates(self.rate_window)
        self.demand = RateMeter(self.rate_window)

    def full(self, max_per_slot: float) -> bool:
        return len(self.queue) >= max_per_slot * self.spec.slots

    def refresh(self, max_per_slot: float) -> None:
        """The EPP recomputes its pool-average gauges (every ``report_interval``)."""
        pods = max(1, self.spec.slots // SLOTS_PER_POD)
        self.gauges = {
            "inference_pool_ready_pods": float(pods),
            "inference_pool_average_kv_cache_utilization": self.busy / self.spec.slots,
            "inference_pool_average_queue_size": len(self.queue) / pods,
            "inference_pool_average_running_requests": self.busy / pods,
            "inference_extension_flow_control_pool_saturation": min(
                1.0, len(self.queue) / (max_per_slot * self.spec.slots)
            ),
        }

    def sample(self, now: float, demand_source: str) -> LoadSample:
        """What this cluster's agent reads at one scrape: the gauges as last refreshed and the
        counters as they stand (an EPP counts each request as it goes), reduced and rated as
        the agent does it."""
        metrics = {
            **self.gauges,
            "inference_objective_request_total": float(self.arrived),
            "inference_objective_request_duration_seconds_count": float(self.completed),
        }
        sample = sample_from_metrics(metrics, observed_at=now)
        sample = self.rates.rate(sample, now)
        if demand_source == "gateway":
            sample = dataclasses.replace(sample, demand_rate=self.demand.observe(now, self.offered))
        return sample


def _says(s: LoadSample) -> LoadSample:
    """What a report carries of a sample: all but its time and the raw counters."""
    return dataclasses.replace(s, observed_at=0.0, requests_total=None, completions_total=None)


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


def simulate(
    scenario: Scenario,
    policy: str,
    *,
    weight_policy: WeightPolicy | None = None,
    demand_source: str = "gateway",
) -> Outcome:
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}")
    # Separate streams, so every policy sees the same arrivals and service times.
    rng = random.Random(scenario.seed)  # arrivals
    service_rng = random.Random(scenario.seed + 1)
    route_rng = random.Random(scenario.seed + 2)
    names = [c.name for c in scenario.clusters]
    clusters = {c.name: _Cluster(c, RATE_WINDOW) for c in scenario.clusters}
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
    known: dict[str, dict[str, LoadSample]] = {g: {} for g in names}
    rated: dict[str, dict[str, float]] = {g: {} for g in names}  # when each was first received
    memory: dict[str, WeightMemory] = {g: WeightMemory() for g in names}
    weights: dict[str, dict[str, int]] = {g: {n: 1 for n in names} for g in names}
    wpolicy = weight_policy or WeightPolicy()  # the agent's defaults
    if policy == "capacity":
        push(0.0, "refresh", None)
        push(SAMPLE_INTERVAL / 2, "sample", None)

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
        # Ages as the agent sees them: from the sample, so propagation counts.
        samples = known[gateway]
        loads: Mapping[str, BackendLoad | None] = {
            n: msgspec.structs.replace(
                samples[n].as_backend_load(now), sampled_at=rated[gateway].get(n)
            )
            if n in samples
            else None
            for n in names
        }
        result, memory[gateway] = step_weights(
            loads, wpolicy, here=gateway, memory=memory[gateway], now=now
        )
        weights[gateway] = {n: w.weight for n, w in result.items()}

    handlers: dict[str, Callable[[float, Any], None]] = {}

    def on_arrive(now: float, origin: str) -> None:
        spec = clusters[origin].spec
        push(now + rng.expovariate(max(spec.rate_at(now), 1e-9)), "arrive", origin)
        scored = now >= scenario.warmup
        clusters[origin].offered += 1
        dest = choose(origin, now)
        c = clusters[dest]
        c.arrived += 1
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
        c.completed += 1
        if c.queue:
            arrived, rtt, scored = c.queue.popleft()
            start_service(c, now)
            if scored:
                delay = now - arrived + rtt
                out.delays.append(delay)
                out.met += delay <= scenario.slo

    def on_refresh(now: float, _: Any) -> None:
        for c in clusters.values():
            c.refresh(scenario.max_queue_per_slot)
        push(now + scenario.report_interval, "refresh", None)

    def on_sample(now: float, _: Any) -> None:
        # Each agent scrapes its EPP and publishes what moved (or a keepalive), as it runs.
        for name, c in clusters.items():
            load = c.sample(now, demand_source)
            last, last_at = c.published if c.published else (None, None)
            if not worth_publishing(
                last, load, last_published_at=last_at, now=now,
                threshold=LOAD_CHANGE_THRESHOLD, keepalive=wpolicy.lease / 3,
            ):  # fmt: skip
                continue
            c.published = (load, now)
            for gateway in names:  # its own gateway at once; peers after the bus's propagation
                delay = 0.0 if gateway == name else scenario.propagation
                push(now + delay, "deliver", (gateway, name, load))
        push(now + SAMPLE_INTERVAL, "sample", None)

    def on_deliver(now: float, data: tuple[str, str, LoadSample]) -> None:
        gateway, name, load = data
        held = known[gateway].get(name)
        if held is None or _says(held) != _says(load):  # (a keepalive that repeats: renewed)
            rated[gateway][name] = now  # as the agent dates a report's rates: first received
        known[gateway][name] = load
        reweigh(gateway, now)

    handlers.update(
        arrive=on_arrive, done=on_done, refresh=on_refresh, sample=on_sample, deliver=on_deliver
    )
    while events:
        now, _, kind, data = heapq.heappop(events)
        if now > scenario.duration:
            break
        handlers[kind](now, data)
    return out


def run_routing(
    scenario: Scenario,
    *,
    weight_policy: WeightPolicy | None = None,
    demand_source: str = "gateway",
) -> dict[str, Any]:
    """Every policy on one scenario, and how capacity compares with the others."""
    results = {
        p: simulate(scenario, p, weight_policy=weight_policy, demand_source=demand_source).as_dict()
        for p in POLICIES
    }
    oracle, capacity, static = results["oracle"], results["capacity"], results["static"]
    ratio = capacity["slo_attainment"] / oracle["slo_attainment"] if oracle["slo_attainment"] else 0
    fewer = static["slo_misses"] / capacity["slo_misses"] if capacity["slo_misses"] else math.inf
    better_baseline = max(results["local-only"]["slo_attainment"], static["slo_attainment"])
    static_misses_share = static["slo_misses"] / static["requests"] if static["requests"] else 0
    return {
        "name": scenario.name,
        "scenario": scenario.describe(),
        "policies": results,
        "capacity_vs_oracle_attainment": round(ratio, 4),
        "static_misses_per_capacity_miss": round(fewer, 2) if math.isfinite(fewer) else None,
        "capacity_minus_better_baseline": round(capacity["slo_attainment"] - better_baseline, 4),
        "targets": {
            "capacity_at_least_better_baseline": capacity["slo_attainment"] >= better_baseline,
            "capacity_at_least_95pct_of_oracle": ratio >= 0.95,
            # Only where static misses enough for the ratio to mean something (>= 2 %).
            "capacity_2x_fewer_misses_than_static": (
                fewer >= 2.0 if static_misses_share >= 0.02 else None
            ),
        },
    }


def run_family(
    scenarios: list[Scenario],
    *,
    weight_policy: WeightPolicy | None = None,
    demand_source: str = "gateway",
) -> dict[str, Any]:
    """Every scenario, and the summary the targets are judged on (median and worst case)."""
    results = [
        run_routing(s, weight_policy=weight_policy, demand_source=demand_source) for s in scenarios
    ]
    return {"demand_source": demand_source, "results": results, "summary": summarize(results)}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    def by_interval(interval: float) -> list[float]:
        return [
            r["capacity_vs_oracle_attainment"]
            for r in results
            if r["scenario"]["report_interval_s"] == interval
        ]

    margins = [r["capacity_minus_better_baseline"] for r in results]
    fewer = [
        r["static_misses_per_capacity_miss"] or math.inf
        for r in results
        if r["targets"]["capacity_2x_fewer_misses_than_static"] is not None
    ]
    one, five = by_interval(1.0), by_interval(5.0)
    worst = min(results, key=lambda r: r["capacity_minus_better_baseline"]) if results else None
    summary = {
        "scenarios": len(results),
        "capacity_at_least_better_baseline": sum(m >= 0 for m in margins),
        "worst_margin_over_better_baseline": min(margins) if margins else None,
        "worst_scenario": worst["name"] if worst else None,
        "median_capacity_vs_oracle_1s": _median(one),
        "worst_capacity_vs_oracle_1s": min(one) if one else None,
        "median_capacity_vs_oracle_5s": _median(five),
        "worst_capacity_vs_oracle_5s": min(five) if five else None,
        "median_static_misses_per_capacity_miss": _median(fewer),
        "worst_static_misses_per_capacity_miss": min(fewer) if fewer else None,
    }
    summary["targets"] = {
        "every_scenario_at_least_better_baseline": bool(margins) and min(margins) >= 0,
        "median_1s_at_least_95pct_of_oracle": (summary["median_capacity_vs_oracle_1s"] or 0)
        >= 0.95,
        "median_5s_at_least_90pct_of_oracle": (summary["median_capacity_vs_oracle_5s"] or 0)
        >= 0.90,
        "2x_fewer_misses_than_static_wherever_it_misses_2pct": all(f >= 2.0 for f in fewer),
    }
    return summary


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    m = statistics.median(values)
    return round(m, 4) if math.isfinite(m) else None
