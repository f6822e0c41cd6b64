"""Routing scenarios: the clusters, their demand and bursts, and the family the bench runs.

A policy is judged on a *family* of scenarios, never on one: a generator draws them from a seed
over the ranges a ClusterSet meets (2-6 clusters, equal and unequal capacity, one, two and
overlapping bursts, bursts beyond the whole set's capacity, 1 s and 5 s reports, 50-500 ms of
propagation, 20-200 ms round trips, 0.5-3 s service times), beside three named scenarios: the one
the project first shipped and the two that showed its policy worse than doing nothing.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Any

SLOTS_PER_POD = 4  # requests one model-server pod serves at once (the EPP reports pods)


@dataclass(frozen=True)
class Burst:
    factor: float
    start: float
    end: float


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    slots: int
    rate: float  # requests/s arriving at this cluster's gateway
    burst_factor: float = 1.0  # one burst, the first file format; ``bursts`` for more
    burst_start: float = 0.0
    burst_end: float = 0.0
    bursts: tuple[Burst, ...] = ()

    def rate_at(self, t: float) -> float:
        rate = self.rate * (self.burst_factor if self.burst_start <= t < self.burst_end else 1.0)
        for b in self.bursts:
            if b.start <= t < b.end:
                rate *= b.factor
        return rate


@dataclass(frozen=True)
class Scenario:
    clusters: tuple[ClusterSpec, ...]
    name: str = "scenario"
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
            name="shipped",
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
            ),
        )

    @classmethod
    def from_json(cls, text: str) -> Scenario:
        doc = json.loads(text)
        clusters = []
        for c in doc.pop("clusters"):
            bursts = tuple(Burst(**b) for b in c.pop("bursts", ()))
            clusters.append(ClusterSpec(**c, bursts=bursts))
        return cls(clusters=tuple(clusters), **doc)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clusters": [dataclasses.asdict(c) for c in self.clusters],
            "duration_s": self.duration,
            "service_time_s": self.service_time,
            "slo_s": self.slo,
            "rtt_s": self.rtt,
            "report_interval_s": self.report_interval,
            "propagation_s": self.propagation,
            "seed": self.seed,
        }


def named_scenarios() -> list[Scenario]:
    shipped = Scenario.default()
    three = Scenario(
        name="three-equal-overlapping",
        clusters=(
            ClusterSpec("c1", slots=20, rate=14.0, bursts=(Burst(1.8, 100.0, 220.0),)),
            ClusterSpec("c2", slots=20, rate=10.0),
            ClusterSpec("c3", slots=20, rate=10.0, bursts=(Burst(1.5, 160.0, 280.0),)),
        ),
        service_time=1.0,
        slo=0.5,
        rtt=0.1,
    )
    return [
        shipped,
        dataclasses.replace(
            shipped, name="shipped-5s-reports", report_interval=5.0, propagation=0.1
        ),
        three,
    ]


SHAPES = ("one-burst", "two-bursts", "overlapping", "beyond-capacity")


def generated_scenario(index: int, rng: random.Random) -> Scenario:
    """One scenario drawn over the family's ranges; its shape cycles so each occurs."""
    shape = SHAPES[index % len(SHAPES)]
    n = rng.randint(2, 6)
    service = round(rng.uniform(0.5, 3.0), 2)
    equal = rng.random() < 0.4
    slots = [rng.choice((16, 24, 32, 40, 48)) for _ in range(n)] if not equal else [32] * n
    clusters = []
    for i in range(n):
        utilization = rng.uniform(0.35, 0.8)
        clusters.append(
            ClusterSpec(
                f"c{i + 1}", slots=slots[i], rate=round(slots[i] / service * utilization, 2)
            )
        )
    duration = 300.0

    def burst(factor: float) -> Burst:
        start = rng.uniform(50.0, 180.0)
        return Burst(round(factor, 2), round(start, 1), round(start + rng.uniform(40, 110), 1))

    victims = rng.sample(range(n), k=min(n, 2))
    if shape == "one-burst":
        clusters[victims[0]] = _with(clusters[victims[0]], burst(rng.uniform(1.5, 3.0)))
    elif shape == "two-bursts":  # one cluster, twice, apart
        first = Burst(round(rng.uniform(1.5, 2.5), 2), 50.0, 50.0 + rng.uniform(30, 60))
        second = Burst(round(rng.uniform(1.5, 2.5), 2), 180.0, 180.0 + rng.uniform(30, 80))
        clusters[victims[0]] = _with(_with(clusters[victims[0]], first), second)
    elif shape == "overlapping":  # two clusters whose bursts overlap in time
        a = burst(rng.uniform(1.5, 2.5))
        b = Burst(round(rng.uniform(1.4, 2.2), 2), a.start + (a.end - a.start) / 2, a.end + 60)
        for victim, which in zip(victims, (a, b), strict=False):
            clusters[victim] = _with(clusters[victim], which)
    else:  # every cluster bursts at once, beyond what the whole set can serve
        total_capacity = sum(c.slots for c in clusters) / service
        total_rate = sum(c.rate for c in clusters)
        factor = round(total_capacity / total_rate * rng.uniform(1.1, 1.4), 2)
        start = rng.uniform(80.0, 150.0)
        wave = Burst(factor, round(start, 1), round(start + rng.uniform(30, 60), 1))
        clusters = [_with(c, wave) for c in clusters]
    report = 1.0 if index % 2 == 0 else 5.0
    rtt = round(rng.uniform(0.02, 0.2), 3)
    return Scenario(
        name=f"gen-{index:02d}-{shape}-{n}c-{int(report)}s",
        clusters=tuple(clusters),
        duration=duration,
        service_time=service,
        slo=round(max(0.5, 3 * rtt), 2),
        rtt=rtt,
        report_interval=report,
        propagation=round(rng.uniform(0.05, 0.5), 3),
        seed=rng.randint(1, 10_000),
    )


def _with(spec: ClusterSpec, burst: Burst) -> ClusterSpec:
    return dataclasses.replace(spec, bursts=(*spec.bursts, burst))


def scenario_family(*, seed: int = 2026, size: int = 16) -> list[Scenario]:
    """The named scenarios and ``size`` generated ones; the same seed gives the same family."""
    rng = random.Random(seed)
    return named_scenarios() + [generated_scenario(i, rng) for i in range(size)]
