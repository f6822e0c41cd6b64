"""Capacity weights: how an importing gateway should split one pool's traffic across backends.

A backend is an exporting cluster (by name) or ``local``. The policy, step by step:

1. **Which backends can serve**: a report within the lease, a healthy (or merely shedding) EPP,
   ready pods. A report is fully trusted for the first ``full_trust`` of the lease, then less
   and less until the lease. A remote that became able to serve less than ``slow_start`` seconds
   ago is ramped from ``slow_start_floor`` to full in ``slow_start_steps`` even steps. When
   only one backend can serve, healthy and with headroom, it takes all the traffic (steps 2
   and 3 weigh nothing: its load moving short of that moves neither its weight nor its reason).
2. **The rate plan** (``model.spill_plan``) when the reports carry rates: every cluster is filled
   to ``target_utilization`` of its capacity (to an equal level up to ``equalize_up_to`` when
   the whole set is busier); here's excess goes to the remotes' spare (discounted by trust and
   ramp) in proportion, shared with every other cluster in excess. Beyond ``equalize_up_to``,
   the backend with the fewest pods, if small against the rest (``overflow_ratio``), takes what
   that spare cannot hold.
3. **Without rates** (older agents; no traffic yet), the saturation policy: score each backend
   by its headroom ``ready_pods * (1 - saturation)``; here takes all traffic below
   ``spill_threshold`` saturation and spills ``(saturation - threshold) / (1 - threshold)`` above
   it to the remotes in proportion to their scores; with no healthy here, by score.
4. **Cap**: no single remote gets more than ``remote_cap`` of the traffic while another backend
   can take the excess.
5. **Hysteresis**: the new target replaces the goal the weights move towards only if it moves
   ``deadband`` or more of the traffic in all (``moved_traffic``: half the sum of the backends'
   moves), some backend starts or stops serving, or the target has held still for ``settle``
   seconds (so a steady input ends exactly at its target).
6. **Smooth**: each weight moves ``smoothing`` of the way from its current value to the goal per
   ``smoothing_period`` of time (so the pace does not depend on how often events arrive), and
   snaps to the goal once less than ``deadband`` of the traffic is left to move; a backend that
   cannot serve drops to 0 at once (a dead backend must not keep traffic).

Weights are integers that sum to ``WEIGHT_SCALE`` (Gateway API style, 0..1,000,000) whenever any
backend can take traffic, so ``weight / 10_000`` is the percent. Each carries a one-line reason.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import msgspec

from federation.messages import LoadReport
from federation.model.spill_plan import PlanInput, PlanKnobs, SpillPlan, spill_plan

WEIGHT_SCALE = 1_000_000
UNHEALTHY_STATUSES = frozenset({"unreachable", "no-endpoints", "shedding", "invalid"})
MIN_KEPT = 0.25  # what here keeps at least when its demand is estimated as arrivals / kept
LONE_REASON: Final = "the only backend that can serve: all the traffic"


@dataclass(frozen=True, kw_only=True)
class WeightPolicy:
    lease: float = 10.0  # seconds: a report this old carries no weight
    full_trust: float = 0.5  # fraction of the lease during which a report counts fully
    spill_threshold: float = 0.8  # here's saturation at which traffic starts to spill
    slow_start: float = 30.0  # seconds over which a newly healthy remote ramps up
    slow_start_floor: float = 0.1  # the ramp starts at this fraction of the score
    slow_start_steps: int = 6  # the ramp rises in this many even steps (so it holds still between)
    smoothing: float = 0.5  # fraction of the way to the goal per smoothing_period; 1 = none
    smoothing_period: float = 0.5  # seconds
    settle: float = 5.0  # seconds a target must hold still to be adopted despite the deadband
    deadband: int = 20_000  # target moves of less traffic than this in all (2 %) are not applied
    remote_cap: float = 1.0  # max share of traffic to any one remote; 1 = no cap
    target_utilization: float = 0.7  # the plan fills every cluster to this before spilling more
    equalize_up_to: float = 0.9  # beyond the target, clusters fill equally up to this level
    drain: float = 10.0  # seconds within which the plan means to clear a queue already built
    # Beyond ``equalize_up_to`` of the whole set, the backend with the fewest ready pods takes
    # what the others' spare cannot hold when the rest have this many times its pods (0: never;
    # see ``model.spill_plan``).
    overflow_ratio: float = 2.0
    # seconds the rates of a report span (the agent's rate window, ``model.rates.RATE_WINDOW``, or
    # its sampling interval where that is longer): here's kept share is averaged over as long
    rate_window: float = 3.0
    # "capacity": the rate plan below. "static": equal weights over the backends that can serve;
    # "local-only": everything here while here can serve (else equal over the others). A fallback
    # for a platform team that wants fixed routing, and the baselines the benchmarks compare.
    mode: str = "capacity"


# BackendLoad, BackendWeight (and ``spill_plan.PlanInput``) are msgspec Structs, not frozen
# dataclasses, though never on the wire: one of each is built per backend of every import at
# every step (33 backends an import at 100 x 50 ``shared``), and a frozen dataclass's __init__
# took 1.9 us where a Struct's takes 0.15 us (BENCHMARKS.md, session 21).
class BackendLoad(msgspec.Struct, frozen=True, kw_only=True):
    ready_pods: int
    saturation: float  # 0..1
    status: str = "ok"
    age: float = 0.0  # seconds since the report was published
    kv_cache: float = 0.0  # 0..1, the pods' KV-cache utilization: the busy share of capacity
    queue_size: float = 0.0  # requests waiting, average per pod
    demand_rate: float | None = None  # requests/s offered at that cluster's gateway
    arrival_rate: float | None = None  # requests/s that reached the pool
    completion_rate: float | None = None  # requests/s the pool completed
    capacity_rate: float | None = None  # requests/s the pool completes when full (estimated)
    # When what the report says was first known here, on this agent's clock: the end of its
    # rates' window (a renewal that repeats a report moves its age, never this). None: now - age.
    sampled_at: float | None = None


class BackendWeight(msgspec.Struct, frozen=True):
    weight: int
    reason: str

    @property
    def percent(self) -> float:
        return round(self.weight / (WEIGHT_SCALE / 100), 2)


@dataclass(frozen=True)
class WeightMemory:
    """What one import's previous step left: its weights, the goal they move towards, and since
    when each backend has been healthy."""

    weights: Mapping[str, int] = field(default_factory=dict)
    goal: Mapping[str, int] = field(default_factory=dict)
    target: Mapping[str, int] = field(default_factory=dict)  # the previous step's target
    target_since: float | None = None  # since when the target has held still
    healthy_since: Mapping[str, float] = field(default_factory=dict)
    at: float | None = None  # when this step was taken
    # Each backend's share at each change, (from when, share), oldest first: a report's arrivals
    # were counted over its rate window, so what here kept and what it sent a remote are taken
    # over that same window, not from the latest weights (which that report has not seen yet).
    shares: Mapping[str, tuple[tuple[float, float], ...]] = field(default_factory=dict)
    # The step found one backend able to serve, healthy and with headroom, and gave it all the
    # traffic without weighing loads: until a report changes, only a lease's end can move it.
    lone: bool = False

    @property
    def flowing(self) -> bool:
        """Traffic flowed at this step (weights all 0 are none: an import that had no backend
        able to serve yet, its exports heard before their loads, has nobody to protect)."""
        return any(self.weights.values())


NO_SHARES: Mapping[str, tuple[tuple[float, float], ...]] = MappingProxyType({})


def clamp01(value: float) -> float:
    """Into [0, 1]; NaN (an unreadable saturation) is 1, full, never free capacity. (Taken per
    backend at every step: comparisons, not min/max calls.)"""
    if 0.0 < value <= 1.0:
        return value
    return 0.0 if value <= 0.0 else 1.0  # (-0.0 lands on 0.0; NaN fails every test: on 1.0)


def _rate(value: float | None) -> float | None:
    return None if value is None or not 0.0 <= value < math.inf else value


def backend_load(
    *,
    ready_pods: int,
    saturation: float,
    kv_cache: float,
    status: str,
    age: float,
    queue_size: float = 0.0,
    demand_rate: float | None = None,
    arrival_rate: float | None = None,
    completion_rate: float | None = None,
    capacity_rate: float | None = None,
    sampled_at: float | None = None,
) -> BackendLoad:
    """The one conversion from what an EPP reports to what the policy weighs."""
    kv = clamp01(kv_cache)
    return BackendLoad(
        ready_pods=ready_pods if ready_pods > 0 else 0,
        saturation=kv if kv_cache > saturation else clamp01(saturation),  # max(), as compared
        status=status,
        age=age if age > 0.0 else 0.0,
        kv_cache=kv,
        queue_size=queue_size if 0.0 < queue_size < math.inf else 0.0,
        demand_rate=_rate(demand_rate),
        arrival_rate=_rate(arrival_rate),
        completion_rate=_rate(completion_rate),
        capacity_rate=_rate(capacity_rate),
        sampled_at=sampled_at if sampled_at is not None and math.isfinite(sampled_at) else None,
    )


def load_from_report(
    report: LoadReport, *, now: float, seen_at: float, rated_at: float | None = None
) -> BackendLoad:
    return backend_load(
        ready_pods=report.ready_pods, saturation=report.saturation,
        kv_cache=report.kv_cache_utilization, status=report.epp_status, age=now - seen_at,
        queue_size=report.queue_size, demand_rate=report.demand_rate,
        arrival_rate=report.arrival_rate, completion_rate=report.completion_rate,
        capacity_rate=report.capacity_rate, sampled_at=rated_at,
    )  # fmt: skip


def trust(age: float, policy: WeightPolicy) -> float:
    """1 while a report is young, falling linearly to 0 at the lease."""
    full = policy.lease * policy.full_trust
    if age <= full:
        return 1.0
    if age >= policy.lease:
        return 0.0
    return (policy.lease - age) / (policy.lease - full)


def ramp(healthy_for: float | None, policy: WeightPolicy) -> float:
    """The slow-start factor: from the floor to 1 over ``slow_start``, in even steps.

    Steps, not a continuous line: between two steps nothing but the clock moves, so an import
    whose inputs hold still need not be recomputed (see ``model.import_book``).
    """
    if healthy_for is None or policy.slow_start <= 0 or healthy_for >= policy.slow_start:
        return 1.0
    floor, steps = policy.slow_start_floor, max(1, policy.slow_start_steps)
    done = math.floor(max(0.0, healthy_for) / policy.slow_start * steps) / steps
    return floor + (1.0 - floor) * done


def next_ramp_step(healthy_for: float, policy: WeightPolicy) -> float | None:
    """Seconds (of healthy time) at which the ramp next rises; None once it is done."""
    if policy.slow_start <= 0 or healthy_for >= policy.slow_start:
        return None
    steps = max(1, policy.slow_start_steps)
    done = math.floor(max(0.0, healthy_for) / policy.slow_start * steps)
    return policy.slow_start * (done + 1) / steps


def score_value(load: BackendLoad | None, policy: WeightPolicy) -> float:
    """``score``'s number alone. The rate plan gives a reason of its own to every backend it
    weighs, so at every step most score reasons would be formatted only to be dropped."""
    if load is None or load.status in UNHEALTHY_STATUSES or load.age >= policy.lease:
        return 0.0
    headroom = load.ready_pods * (1.0 - load.saturation)
    return headroom * trust(load.age, policy) if headroom > 0 else 0.0


def score(load: BackendLoad | None, policy: WeightPolicy) -> tuple[float, str]:
    """Headroom discounted by the report's age; 0 with the reason when it cannot take traffic."""
    if load is None:
        return 0.0, "no load report yet"
    if load.status in UNHEALTHY_STATUSES:
        return 0.0, f"EPP {load.status}"
    if load.age >= policy.lease:
        # No age in the text: a reason must not change while nothing but the clock moves.
        return 0.0, f"stale: no report within the lease ({policy.lease:g}s)"
    if load.ready_pods == 0:
        return 0.0, "no ready pods"
    headroom = load.ready_pods * (1.0 - load.saturation)
    if headroom <= 0:
        return 0.0, f"saturated: {load.ready_pods} pods at {load.saturation:.2f}"
    factor = trust(load.age, policy)
    reason = f"headroom {headroom:.2f} = {load.ready_pods} pods x (1 - {load.saturation:.2f})"
    if factor < 1.0:
        reason += f", x{factor:.2f} for a {load.age:.1f}s old report"
    return headroom * factor, reason


def apportion(scores: Mapping[str, float], total: int = WEIGHT_SCALE) -> dict[str, int]:
    """Integers proportional to ``scores`` that sum to ``total`` (largest remainder, by name)."""
    positive = math.fsum(s for s in scores.values() if s > 0)  # in any order, the same
    if positive <= 0:
        return dict.fromkeys(scores, 0)
    exact = {k: (s * total / positive if s > 0 else 0.0) for k, s in scores.items()}
    result = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(result.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - result[k]), k))[:left]:
        result[k] += 1
    return result


def _proportional(scores: Mapping[str, float]) -> dict[str, float]:
    total = math.fsum(scores.values())
    return {k: (s / total if total > 0 else 0.0) for k, s in scores.items()}


def _target_shares(
    scores: Mapping[str, float],
    loads: Mapping[str, BackendLoad | None],
    here: str | None,
    policy: WeightPolicy,
) -> tuple[dict[str, float], str | None]:
    """Traffic shares before smoothing, and a note on here's preference."""
    if here is None or scores.get(here, 0.0) <= 0:
        return _proportional(scores), None
    here_load = loads[here]
    assert here_load is not None  # a positive score implies a report
    remotes = {k: s for k, s in scores.items() if k != here}
    remote_total = math.fsum(remotes.values())
    threshold = policy.spill_threshold
    spill = clamp01((here_load.saturation - threshold) / (1 - threshold)) if threshold < 1 else 0.0
    if spill <= 0 or remote_total <= 0:
        why = "no remote headroom" if spill > 0 else f"saturation below {threshold:.2f}"
        return {k: float(k == here) for k in scores}, f"here preferred ({why})"
    shares = {k: spill * s / remote_total for k, s in remotes.items()}
    shares[here] = 1.0 - spill
    return (
        shares,
        f"here spills {spill:.0%} (saturation {here_load.saturation:.2f} >= {threshold:.2f})",
    )


def demand_of(load: BackendLoad, kept: float | None, sent: float = 0.0) -> float | None:
    """What a backend's gateway offers: counted there, or estimated from the pool's arrivals.

    Arrivals are the demand a cluster kept plus the spill it receives. For here, whose kept share
    ``kept`` we know, arrivals / kept is the demand (a cluster that spills is sent nothing by the
    plan). For a remote, its arrivals less what we ``sent`` it ourselves; other importers' spill
    still counts, so it looks busier than it is and is sent less, the safe side.
    """
    if load.demand_rate is not None:
        return load.demand_rate
    if load.arrival_rate is None:
        return None
    if kept is not None:
        return load.arrival_rate / max(MIN_KEPT, kept)
    return max(0.0, load.arrival_rate - sent)


def can_serve(load: BackendLoad | None, policy: WeightPolicy) -> bool:
    """Whether a backend can take any traffic (momentarily full, shedding, still counts): the
    plan weighs it, and it is ramped, or said to be. (Asked per backend at every step: a
    predicate, not ``plan_input(...) is not None``, which builds what it then drops.)"""
    if load is None or load.ready_pods == 0 or load.age >= policy.lease:
        return False
    return load.status not in UNHEALTHY_STATUSES or load.status == "shedding"


def plan_input(
    load: BackendLoad | None,
    ramp_factor: float,
    policy: WeightPolicy,
    kept: float | None = None,
    sent: float = 0.0,
) -> PlanInput | None:
    """A backend as the rate plan sees it; None when it can take no traffic at all."""
    if load is None or not can_serve(load, policy):
        return None
    return PlanInput(
        ready_pods=load.ready_pods,
        busy=load.kv_cache,
        demand=demand_of(load, kept, sent),
        completions=load.completion_rate,
        capacity=load.capacity_rate,
        backlog=load.queue_size * load.ready_pods,
        trust=trust(load.age, policy) * ramp_factor,
        full=load.status == "shedding",
    )


def _planned_shares(
    loads: Mapping[str, BackendLoad | None],
    ramps: Mapping[str, float],
    here: str | None,
    policy: WeightPolicy,
    history: Mapping[str, tuple[tuple[float, float], ...]],
    now: float = 0.0,
) -> tuple[dict[str, float], str | None, dict[str, str]] | None:
    """The rate plan's shares with each usable backend's reason; None without rates."""
    if not any(
        load is not None and (load.capacity_rate is not None or load.completion_rate is not None)
        for load in loads.values()
    ):
        return None  # no capacity to plan with (``spill_plan`` would say so after all the work)

    def over_its_window(name: str, load: BackendLoad, before: float) -> float:
        end = now - load.age if load.sampled_at is None else min(load.sampled_at, now)
        return mean_share(history.get(name, ()), end - policy.rate_window, end, before)

    here_load = loads.get(here) if here is not None else None
    # What here kept while its report's arrivals were counted (before it had a weight, nothing
    # was sent away).
    kept = None
    if here is not None and here_load is not None:
        kept = over_its_window(here, here_load, 1.0)
    here_demand = demand_of(here_load, kept) if here_load is not None else None
    inputs = {}
    for name, load in loads.items():
        # What we sent a remote ourselves while its arrivals were counted: our share of it then
        # times our demand.
        share = 0.0 if load is None or name == here else over_its_window(name, load, 0.0)
        sent = (here_demand or 0.0) * share
        usable = plan_input(
            load, ramps.get(name, 1.0), policy, kept if name == here else None, sent
        )
        if usable is not None:
            inputs[name] = usable
    if not inputs:
        return None
    estimated = here_load is not None and here_load.demand_rate is None
    knobs = PlanKnobs(
        target_utilization=policy.target_utilization,
        equalize_up_to=policy.equalize_up_to,
        drain=policy.drain,
        min_kept=MIN_KEPT if estimated else 0.0,
        overflow_ratio=policy.overflow_ratio,
    )
    plan = spill_plan(inputs, here if here in inputs else None, knobs)
    if plan is None:
        return None
    shares = {name: plan.shares.get(name, 0.0) for name in loads}
    reasons = {name: _plan_reason(name, b, plan, name == here) for name, b in inputs.items()}
    note = _plan_note(plan, here) if here is not None and here in inputs else None
    return shares, note, reasons


def _plan_reason(name: str, b: PlanInput, plan: SpillPlan, is_here: bool) -> str:
    demand = "?" if b.demand is None else f"{b.demand:.1f}"
    load = f"{demand} req/s" + (f" + queue {b.backlog:.0f}" if b.backlog >= 0.5 else "")
    text = f"load {load} of capacity {plan.capacity[name]:.1f}"
    if name == plan.overflow:
        shedding = " (shedding: refuses it at once)" if b.full else ""
        return (
            f"{text}; overflow: takes what the others cannot hold at level {plan.level:.2f}"
            f"{shedding}"
        )
    if b.full:
        return f"{text}; shedding: no spare"
    if is_here:
        return text
    if plan.spare[name] <= 0:
        return f"{text}; no spare at level {plan.level:.2f}"
    trusted = f" (x{b.trust:.2f}: report age or slow start)" if b.trust < 1.0 else ""
    return f"{text}; spare {plan.spare[name]:.1f} req/s{trusted}"


def _plan_note(plan: SpillPlan, here: str) -> str:
    over = plan.excess[here]
    if over <= 0:
        return f"here serves its own load (level {plan.level:.2f})"
    kept = plan.shares[here]
    text = f"here is {over:.1f} req/s over level {plan.level:.2f}: spills {1.0 - kept:.0%}"
    if plan.overflow is not None and plan.overflow != here and plan.shares[plan.overflow] > 0:
        text += f": {plan.shares[plan.overflow]:.0%} to the overflow {plan.overflow}"
    return text


def _cap(shares: dict[str, float], here: str | None, cap: float) -> dict[str, float]:
    if cap >= 1.0:
        return shares
    capped = dict(shares)
    for _ in range(len(capped)):
        over = {k for k, v in capped.items() if k != here and v > cap}
        if not over:
            break
        excess = math.fsum(capped[k] - cap for k in over)
        takers = {
            k: v for k, v in capped.items() if v > 0 and k not in over and (k == here or v < cap)
        }
        if not takers:
            break  # nobody can take the excess: the cap cannot hold
        for k in over:
            capped[k] = cap
        total = math.fsum(takers.values())
        for k, v in takers.items():
            capped[k] = v + excess * v / total
    return capped


def moved_traffic(a: Mapping[str, int], b: Mapping[str, int]) -> int:
    """The traffic that moves between two splits over the same backends: half the sum of the
    backends' moves (what one gains another loses). Measured per backend instead, a deadband
    lets each of many backends drift by almost all of it: at 33 backends, a third of the
    traffic in the wrong place while no backend moved by two points."""
    return sum(abs(a[k] - b[k]) for k in a) // 2


def _holds(target: Mapping[str, int], goal: Mapping[str, int], deadband: int) -> bool:
    """True when the new target moves less than the deadband of traffic from the goal and no
    backend starts or stops."""
    if not goal or set(goal) != set(target):
        return False
    if any((target[k] > 0) != (goal[k] > 0) for k in target):
        return False
    return moved_traffic(target, goal) < deadband


def _approach(
    goal: Mapping[str, int],
    current: Mapping[str, int],
    policy: WeightPolicy,
    elapsed: float,
    unable: Collection[str] = (),
) -> dict[str, int]:
    """Move the current weights towards the goal for ``elapsed`` seconds (``unable``: backends
    that cannot serve at all, which drop to 0 at once)."""
    if not current or sum(current.values()) <= 0 or set(current) != set(goal):
        return dict(goal)
    if moved_traffic(goal, current) < policy.deadband:
        return dict(goal)  # close enough: snap, so the goal is reached exactly
    periods = max(0.0, elapsed) / policy.smoothing_period if policy.smoothing_period > 0 else 1.0
    pace = 1.0 - (1.0 - policy.smoothing) ** periods
    return apportion(
        {
            # A backend that cannot serve drops at once: it must not keep traffic while smoothing.
            # One that merely has no spare left eases out like any other move (a spare that comes
            # and goes with each report would otherwise flap between 0 and a slow climb).
            k: 0.0 if g == 0 and k in unable else current[k] + pace * (g - current[k])
            for k, g in goal.items()
        }
    )


def step_weights(
    loads: Mapping[str, BackendLoad | None],
    policy: WeightPolicy,
    *,
    here: str | None = None,
    memory: WeightMemory | None = None,
    now: float = 0.0,
) -> tuple[dict[str, BackendWeight], WeightMemory]:
    """One step of one import's weights, and the memory to pass to the next step."""
    memory = memory or WeightMemory()
    scores, ramps = {}, {}
    unable: set[str] = set()  # no report, an unhealthy or shedding EPP, stale, no pods
    serving: list[str] = []  # can take traffic (momentarily full, shedding, still counts)
    flowing = memory.flowing
    for name, load in loads.items():
        value = score_value(load, policy)
        # Not healthy at the previous step but healthy now: it joins at this instant.
        since = memory.healthy_since.get(name, now if flowing else None)
        # (Only a backend that can serve is ramped, or said to be; momentarily full counts.)
        serves = can_serve(load, policy)
        if serves:
            serving.append(name)
        if not serves or (load is not None and load.status in UNHEALTHY_STATUSES):
            unable.add(name)  # (a shedding EPP answers 429: it takes nothing more at once)
        factor = 1.0 if name == here or since is None or not serves else ramp(now - since, policy)
        scores[name] = value * factor
        ramps[name] = factor
    if policy.mode != "capacity":
        return _fixed_weights(loads, unable, serving, here, policy.mode, memory, policy, now)
    plan_reasons: dict[str, str] = {}
    lone = len(serving) == 1 and scores[serving[0]] > 0
    if lone:
        # One backend can serve, with headroom: there is nothing to weigh. It takes all the
        # traffic however loaded or trusted, so no load is read and no reason quotes one: its
        # load moving (short of full, unhealthy or stale) leaves the view as it was.
        shares, note = {name: float(name in serving) for name in loads}, None
        plan_reasons = {serving[0]: LONE_REASON}
    else:
        planned = _planned_shares(loads, ramps, here, policy, memory.shares, now)
        if planned is None:
            shares, note = _target_shares(scores, loads, here, policy)
        else:
            shares, note, plan_reasons = planned
    reasons = {
        name: plan_reasons[name] if name in plan_reasons else _scored(load, ramps[name], policy)
        for name, load in loads.items()
    }
    target = apportion(_cap(shares, here, policy.remote_cap))
    # Hold the goal against small moves of the target, unless the target has held still for
    # ``settle`` seconds: a steady input must end at its own target, not at whatever the goal
    # was on the way there. (By time: the agent recomputes far more often than loads change.)
    since = memory.target_since if target == memory.target else None
    steady = since is not None and now - since >= policy.settle
    goal = memory.goal if not steady and _holds(target, memory.goal, policy.deadband) else target
    elapsed = policy.smoothing_period if memory.at is None else now - memory.at
    weights = _approach(goal, memory.weights, policy, elapsed, unable)
    if note is not None and here is not None:
        reasons[here] = f"{reasons[here]}; {note}"
    result = {name: BackendWeight(weights[name], reasons[name]) for name in sorted(loads)}
    target_since = now if since is None else since
    remembered = _remember(
        weights, goal, target, target_since, serving, memory, policy, now, lone=lone,
        shares=_shares_then(weights, memory, now, policy),
    )  # fmt: skip
    return result, remembered


def _shares_then(
    weights: Mapping[str, int], memory: WeightMemory, now: float, policy: WeightPolicy
) -> Mapping[str, tuple[tuple[float, float], ...]]:
    """Each backend's share history with this step's weights."""
    if (
        weights == memory.weights
        and memory.shares.keys() == weights.keys()
        and memory.at is not None
        and now >= memory.at
    ):
        # No share moved: every history already ends at its share, as of no later than now.
        return memory.shares
    return {n: _share_history(memory.shares.get(n, ()), w, now, policy) for n, w in weights.items()}


def lone_weights(
    loads: Mapping[str, BackendLoad | None], policy: WeightPolicy
) -> dict[str, BackendWeight] | None:
    """The weights a step gives a lone import settled at its goal (``WeightMemory.lone``): all
    the traffic to the one backend that can serve, with headroom, and each other backend 0 with
    its reason; None when these loads do not make it lone. (A lone backend is never ramped to
    0: its ramp only rises while it stays lone, so its score here is that of the step.)"""
    serving = [name for name, load in loads.items() if can_serve(load, policy)]
    if len(serving) != 1 or score_value(loads[serving[0]], policy) <= 0:
        return None
    return {
        name: BackendWeight(WEIGHT_SCALE, LONE_REASON)
        if name == serving[0]
        else BackendWeight(0, _scored(load, 1.0, policy))
        for name, load in sorted(loads.items())
    }


def _scored(load: BackendLoad | None, factor: float, policy: WeightPolicy) -> str:
    """The reason of a backend the rate plan did not weigh: its score's, and its slow start."""
    reason = score(load, policy)[1]
    return reason + (f", slow start x{factor:.2f}" if factor < 1.0 else "")


def mean_share(
    history: tuple[tuple[float, float], ...], start: float, end: float, before: float
) -> float:
    """The time-average of a backend's share over [start, end], from its change points;
    ``before`` is its share before its history began (it had no weight)."""
    if not history:
        return before
    if end <= start:
        return _share_at(history, end, before)
    # Only the changes within the window (a history spans a lease or so, the window a few
    # seconds, ending when its report was first received), found by bisection and walked back
    # to the window's start, then summed oldest first as ever (the same float result).
    last = bisect.bisect_left(history, (end, -math.inf))  # the first change at or after the end
    parts = []
    until = history[last][0] if last < len(history) else math.inf
    for i in range(last - 1, -1, -1):
        if until <= start:
            break
        since, share = history[i]
        lo = since if since > start else start
        hi = until if until < end else end
        if hi > lo:
            parts.append(share * (hi - lo))
        until = since
    total = 0.0
    for part in reversed(parts):
        total += part
    first = history[0][0]
    if start < first:
        total += before * (min(first, end) - start)
    return total / (end - start)


def _share_at(history: tuple[tuple[float, float], ...], at: float, before: float) -> float:
    share = before
    for since, value in history:
        if since <= at:
            share = value
    return share


def _share_history(
    history: tuple[tuple[float, float], ...], weight: int, now: float, policy: WeightPolicy
) -> tuple[tuple[float, float], ...]:
    share = weight / WEIGHT_SCALE
    if history and now < history[-1][0]:
        return ((now, share),)  # a clock that went back: what came before is not before
    if history and history[-1][1] == share:
        return history
    kept = (*history, (now, share))
    # A report is renewed within a lease and spans a window before it: older changes are of
    # little use. The oldest kept share then stands for all time before (a report renewed for
    # minutes has its window there: the share then is closer than "no weight yet").
    horizon = now - policy.lease - policy.rate_window
    if len(kept) > 1 and kept[1][0] <= horizon:
        while len(kept) > 1 and kept[1][0] <= horizon:
            kept = kept[1:]
        kept = ((-math.inf, kept[0][1]), *kept[1:])
    return kept


FIXED_MODES: Final = ("static", "local-only")


def _fixed_weights(
    loads: Mapping[str, BackendLoad | None],
    unable: set[str],
    serving: list[str],
    here: str | None,
    mode: str,
    memory: WeightMemory,
    policy: WeightPolicy,
    now: float,
) -> tuple[dict[str, BackendWeight], WeightMemory]:
    """The fixed modes: no plan, no smoothing (nothing moves but who can serve). A shedding
    backend (429) still serves here, as in the plan's "can serve": a fixed rule must not flip
    a whole cluster's traffic on every report that says it is momentarily full (``serving``:
    those ``can_serve`` admits, shedding ones included, in ``loads``' order)."""
    candidates = sorted(serving)
    if mode == "local-only" and here in candidates:
        chosen, why = [here], "local-only: here serves everything"
    elif mode == "local-only":
        chosen, why = candidates, "local-only, but here cannot serve: equal over the others"
    else:
        chosen, why = candidates, f"static: an equal share of {len(candidates)} serving backend(s)"
    weights = apportion({n: 1.0 for n in chosen}) if chosen else {}
    weights = {n: weights.get(n, 0) for n in loads}
    result = {
        n: BackendWeight(weights[n], why if n in chosen else f"{mode}: not chosen" +
                         ("; cannot serve" if n in unable else ""))
        for n in sorted(loads)
    }  # fmt: skip
    return result, _remember(weights, weights, weights, now, serving, memory, policy, now)


def compute_weights(
    loads: Mapping[str, BackendLoad | None], policy: WeightPolicy, *, here: str | None = None
) -> dict[str, BackendWeight]:
    """The stateless target: no slow start, smoothing or hysteresis (offline what-if)."""
    return step_weights(loads, policy, here=here)[0]


def _remember(
    weights: Mapping[str, int],
    goal: Mapping[str, int],
    target: Mapping[str, int],
    target_since: float,
    serving: Collection[str],
    previous: WeightMemory,
    policy: WeightPolicy,
    now: float,
    *,
    lone: bool = False,
    shares: Mapping[str, tuple[tuple[float, float], ...]] | None = None,
) -> WeightMemory:
    # On the first step every healthy backend counts as established: a restart or a new import
    # has nobody to protect from a burst, and ramping all of them alike would change nothing.
    # So does a step after weights all 0 (nothing served: nobody to protect either).
    joined = now if previous.flowing else now - policy.slow_start
    since = {name: previous.healthy_since.get(name, joined) for name in serving}
    # Settled, the three are equal: one copy held for all (a memory is never changed in place;
    # at 10,000 imports, two dicts fewer each are megabytes of an agent's RSS).
    held = dict(weights)
    held_goal = held if goal == held else dict(goal)
    held_target = held_goal if target == held_goal else dict(target)
    return WeightMemory(
        held, held_goal, held_target, target_since, since, now,
        shares=shares if shares else NO_SHARES, lone=lone,
    )  # fmt: skip
