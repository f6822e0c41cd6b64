"""The spill plan: how much of each cluster's demand should go where, computed from rates.

Why rates and not saturation: saturation is what the *current routing* did to a cluster, so a
policy that spills by saturation chases its own effect through reports that are seconds old
(spill, the queue drains, stop, the queue builds) and lets a queue build before any spill starts.
Demand — requests per second offered at a cluster's own gateway — does not move when traffic is
rerouted, so a plan built on it is not a feedback loop and stale reports only delay the start of
a burst by their age.

Why one plan for all: every agent computes the same plan from the same reports, so the importers
that are over capacity share each remote's spare capacity instead of all sending their whole
excess to the same remote on the same report (herding, the classic failure of load balancing on
old information).

The plan, per pool (a *water-filling* to a common level):

- ``capacity_j = throughput_per_pod x ready_pods_j``; the per-pod throughput is pooled over every
  backend's completions per busy pod (completion rate / (ready pods x KV-cache utilization)), so a
  cluster at rest still has a capacity;
- ``load_j = demand_j + backlog_j / drain`` — a queue already built is demand too, to be cleared
  within ``drain`` seconds;
- the level ``L = max(target_utilization, min(total load / total capacity, equalize_up_to))``:
  below the target every cluster serves its own demand; when the whole set is busier, every
  cluster fills to the same level, but never beyond ``equalize_up_to`` (pushing healthy clusters
  into an overload only makes everyone miss);
- ``excess_j = max(0, load_j - L x capacity_j)`` and ``spare_j = max(0, L x capacity_j - load_j)``
  (a remote's spare is discounted by the trust of its report and is 0 while it sheds);
- here sends ``excess_here x spare_j / max(total spare, total excess)`` requests/s to remote ``j``,
  i.e. that share of its demand; it keeps the rest;
- **overflow**: when the whole set is beyond ``equalize_up_to`` and the backend with the fewest
  ready pods is small against the rest (they have ``overflow_ratio`` times its pods), it
  takes what the others' spare cannot hold (times the trust of its report, like a spare),
  instead of every cluster keeping its own excess. An importer with no pool of its own (``here``
  None) spreads its traffic by the spare alone and sends nothing to an overflow.

Why an overflow: beyond the set's capacity, a request served late is a miss that still took a
slot. Where every cluster keeps its excess, every cluster over its capacity misses almost all of
its traffic; where the excess goes to one small backend, every other cluster stays at the level
and serves within the SLO, and only the smallest part of the set is given up. Why only a small
one against the rest: giving up half of the set gains nothing, and an estimate's noise would pick
a different victim from report to report. The choice depends only on ready pods (counted exactly),
so the agents that see the same backends overflow to the same one. Two limits: with three or more
clusters of equal size, the rest always have twice the pods of one, so the first by name is
given up; and a ``local`` backend (a pool this cluster does not export) is in its own agent's plan
only, so that agent may pick a different overflow than its peers (at worst itself: it keeps its
excess, as without an overflow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

MIN_BUSY_PODS = 0.5  # pod-equivalents of work below which a throughput estimate is noise
MIN_DEMAND = 1e-6  # requests/s below which a demand is none (its reciprocal would overflow)


class PlanInput(msgspec.Struct, frozen=True, kw_only=True):  # (a Struct: see BackendLoad)
    """One backend as the plan sees it (rates in requests/s)."""

    ready_pods: int
    busy: float  # fraction of the pods' capacity in use (KV-cache utilization)
    demand: float | None  # offered at its own gateway; None: not reported (older agent)
    completions: float | None
    capacity: float | None  # requests/s when full, as its publisher estimates it
    backlog: float  # requests queued, all pods together
    trust: float  # 0..1, how much its report still counts
    full: bool  # shedding: takes nothing more


@dataclass(frozen=True, kw_only=True)
class PlanKnobs:
    target_utilization: float
    equalize_up_to: float  # in an overload of the whole set, fill every cluster up to this
    drain: float
    min_kept: float = 0.0  # the least share of its traffic here keeps
    overflow_ratio: float = 0.0  # the rest's ready pods / the fewest's for an overflow; 0: none


@dataclass(frozen=True)
class SpillPlan:
    shares: dict[str, float]  # of here's traffic, per backend (here included); sums to 1
    level: float
    capacity: dict[str, float]  # per backend, requests/s
    excess: dict[str, float]
    spare: dict[str, float]  # after the trust of its report
    overflow: str | None = None  # the backend that takes what the spare cannot hold


def throughput_per_pod(backends: Mapping[str, PlanInput]) -> float | None:
    """Requests/s one busy pod completes, pooled over the backends; None if nothing is busy.

    For a backend whose report has no capacity estimate of its own (an older agent)."""
    counted = [b for b in backends.values() if b.completions is not None and b.ready_pods > 0]
    done = math.fsum(b.completions or 0.0 for b in counted)  # (fsum: the same in any order)
    busy = math.fsum(b.ready_pods * b.busy for b in counted)
    return done / busy if busy >= MIN_BUSY_PODS and done > 0 else None


def spill_plan(
    backends: Mapping[str, PlanInput], here: str | None, knobs: PlanKnobs
) -> SpillPlan | None:
    """The plan's shares of here's traffic; None when the rates to build one are missing."""
    per_pod = throughput_per_pod(backends)
    capacity = {}
    for k, b in backends.items():
        if b.capacity is not None:
            capacity[k] = b.capacity
        elif per_pod is not None:
            capacity[k] = per_pod * b.ready_pods
        else:
            return None
    if (here is not None and backends[here].demand is None) or math.fsum(capacity.values()) <= 0:
        return None
    load = {k: _load(b, capacity[k], knobs) for k, b in backends.items()}
    whole = math.fsum(load.values()) / math.fsum(capacity.values())
    level = max(knobs.target_utilization, min(whole, knobs.equalize_up_to))
    excess = {k: max(0.0, load[k] - level * capacity[k]) for k in backends}
    spare = {
        k: 0.0 if b.full else max(0.0, level * capacity[k] - load[k]) * b.trust
        for k, b in backends.items()
    }
    if here is None:  # an importer with no pool of its own: by spare, else by capacity
        open_capacity = {k: 0.0 if backends[k].full else v for k, v in capacity.items()}
        basis = spare if math.fsum(spare.values()) > 0 else open_capacity
        if math.fsum(basis.values()) <= 0:
            basis = capacity  # everyone sheds: spread it
        total = math.fsum(basis.values())
        shares = {k: v / total for k, v in basis.items()}
        return SpillPlan(shares, level, capacity, excess, spare)
    overflow = _overflow(backends, whole, knobs)
    if overflow is not None:
        spare[overflow] = 0.0  # what it takes is not a spare: it is given up to the others
    mine = excess[here]
    remote_spare = math.fsum(v for k, v in spare.items() if k != here)
    demand = backends[here].demand or 0.0
    takers = remote_spare > 0 or overflow not in (None, here)
    if mine <= 0 or not takers or demand < MIN_DEMAND:
        shares = {k: float(k == here) for k in backends}
        return SpillPlan(shares, level, capacity, excess, spare, overflow)
    # Every cluster in excess shares the spare in proportion to its excess; a spare smaller than
    # the excess (stale remotes count less) is shared out whole and the rest stays here, or goes
    # to the overflow.
    divisor = max(math.fsum(spare.values()), math.fsum(excess.values()))
    flows = {k: mine * spare[k] / divisor for k in backends if k != here}
    if overflow is not None and overflow != here:
        # As much as its report's trust and its slow start allow, like any spare; the rest stays.
        left = max(0.0, mine - math.fsum(flows.values()))
        flows[overflow] = left * backends[overflow].trust
    sent = math.fsum(flows.values())
    scale = 1.0 / max(demand, sent)  # a backlog can ask for more than all of here's traffic
    # Here's demand estimated from its own arrivals (no gateway counter) is arrivals / kept: the
    # less it keeps, the noisier that is, so it keeps at least ``min_kept`` of its traffic.
    scale *= min(1.0, (1.0 - knobs.min_kept) / max(sent * scale, 1e-12))
    shares = {k: flow * scale for k, flow in flows.items()}
    shares[here] = max(0.0, 1.0 - math.fsum(shares.values()))
    return SpillPlan(shares, level, capacity, excess, spare, overflow)


def _overflow(backends: Mapping[str, PlanInput], whole: float, knobs: PlanKnobs) -> str | None:
    """The backend that takes what the others cannot hold, in an overload of the whole set."""
    if knobs.overflow_ratio <= 0 or whole <= knobs.equalize_up_to or len(backends) < 2:
        return None
    # By ready pods, not by the capacity estimates: pods are counted exactly, so every agent
    # picks the same one and no estimate's noise flips it (ties: the first by name).
    name = min(backends, key=lambda k: (backends[k].ready_pods, k))
    rest = sum(b.ready_pods for k, b in backends.items() if k != name)
    if rest < knobs.overflow_ratio * backends[name].ready_pods:
        return None  # a large one is not worth giving up
    # (A shedding overflow still takes it: it answers 429 at once, which is the point. What the
    # set cannot serve is refused quickly instead of queuing in front of every cluster's own.)
    return name


def _load(b: PlanInput, capacity: float, knobs: PlanKnobs) -> float:
    # An older agent's report has no demand: its served load (busy x capacity) stands in.
    demand = b.demand if b.demand is not None else b.busy * capacity
    return demand + b.backlog / knobs.drain
