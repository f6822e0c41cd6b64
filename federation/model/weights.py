"""Capacity weights: how an importing gateway should split one pool's traffic across backends.

A backend is an exporting cluster (by name) or ``local``. Its *headroom* is
``ready_pods * (1 - saturation)``; a report's influence decays with its age, fully trusted for the
first half of the lease and falling linearly to nothing at the lease. Weights are integers that
sum to ``WEIGHT_SCALE`` (Gateway API style, 0..1,000,000) whenever any backend has headroom, so
``weight / 10_000`` is the percent of traffic. Every weight comes with a one-line reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from federation.messages import LoadReport

WEIGHT_SCALE = 1_000_000
UNHEALTHY_STATUSES = frozenset({"unreachable", "no-endpoints", "shedding", "invalid"})


@dataclass(frozen=True, kw_only=True)
class WeightPolicy:
    lease: float = 10.0  # seconds: a report this old carries no weight
    full_trust: float = 0.5  # fraction of the lease during which a report counts fully


@dataclass(frozen=True, kw_only=True)
class BackendLoad:
    ready_pods: int
    saturation: float  # 0..1
    status: str = "ok"
    age: float = 0.0  # seconds since the report was published


@dataclass(frozen=True)
class BackendWeight:
    weight: int
    reason: str

    @property
    def percent(self) -> float:
        return round(self.weight / (WEIGHT_SCALE / 100), 2)


def clamp01(value: float) -> float:
    if math.isnan(value):
        return 1.0  # an unreadable saturation is treated as full, never as free capacity
    return min(1.0, max(0.0, value))


def load_from_report(report: LoadReport, *, now: float, seen_at: float) -> BackendLoad:
    return BackendLoad(
        ready_pods=max(0, report.ready_pods),
        saturation=clamp01(max(report.saturation, report.kv_cache_utilization)),
        status=report.epp_status,
        age=max(0.0, now - seen_at),
    )


def trust(age: float, policy: WeightPolicy) -> float:
    """1 while a report is young, falling linearly to 0 at the lease."""
    full = policy.lease * policy.full_trust
    if age <= full:
        return 1.0
    if age >= policy.lease:
        return 0.0
    return (policy.lease - age) / (policy.lease - full)


def _score(load: BackendLoad | None, policy: WeightPolicy) -> tuple[float, str]:
    if load is None:
        return 0.0, "no load report yet"
    if load.status in UNHEALTHY_STATUSES:
        return 0.0, f"EPP {load.status}"
    if load.age >= policy.lease:
        return 0.0, f"stale: last report {load.age:.1f}s ago (lease {policy.lease:g}s)"
    if load.ready_pods == 0:
        return 0.0, "no ready pods"
    headroom = load.ready_pods * (1.0 - load.saturation)
    factor = trust(load.age, policy)
    reason = f"headroom {headroom:.2f} = {load.ready_pods} pods x (1 - {load.saturation:.2f})"
    if factor < 1.0:
        reason += f", x{factor:.2f} for a {load.age:.1f}s old report"
    return headroom * factor, reason


def apportion(scores: Mapping[str, float], total: int = WEIGHT_SCALE) -> dict[str, int]:
    """Integers proportional to ``scores`` that sum to ``total`` (largest remainder, by name)."""
    positive = sum(s for s in scores.values() if s > 0)
    if positive <= 0:
        return dict.fromkeys(scores, 0)
    exact = {k: (s * total / positive if s > 0 else 0.0) for k, s in scores.items()}
    result = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(result.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - result[k]), k))[:left]:
        result[k] += 1
    return result


def compute_weights(
    loads: Mapping[str, BackendLoad | None], policy: WeightPolicy
) -> dict[str, BackendWeight]:
    scored = {name: _score(load, policy) for name, load in loads.items()}
    weights = apportion({name: s for name, (s, _) in scored.items()})
    return {name: BackendWeight(weights[name], scored[name][1]) for name in sorted(loads)}
