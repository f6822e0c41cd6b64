import math

from hypothesis import example, given
from hypothesis import strategies as st

from federation.model.spill_plan import PlanKnobs, spill_plan
from federation.model.weights import (
    LONE_REASON,
    WEIGHT_SCALE,
    BackendLoad,
    BackendWeight,
    WeightPolicy,
    apportion,
    backend_load,
    can_serve,
    compute_weights,
    load_from_report,
    lone_weights,
    mean_share,
    plan_input,
    score,
    score_value,
    step_weights,
    trust,
)
from tests.model.factories import backend_loads, load

POLICY = WeightPolicy(lease=10.0)

backends = st.dictionaries(
    st.sampled_from(["local", "a", "b", "c", "d"]),
    backend_loads(max_pods=64, max_age=20),
    max_size=5,
)


@given(backends)
def test_weights_are_never_negative_and_sum_to_the_scale_or_zero(bs: dict) -> None:
    weights = compute_weights(bs, POLICY)
    values = [w.weight for w in weights.values()]
    assert all(0 <= v <= WEIGHT_SCALE for v in values)
    assert sum(values) in (0, WEIGHT_SCALE)


@given(backends)
def test_some_backend_is_positive_whenever_one_is_healthy_with_headroom(bs: dict) -> None:
    healthy = any(
        b is not None
        and b.status == "ok"
        and b.age < POLICY.lease
        and b.ready_pods > 0
        and b.saturation < 1
        for b in bs.values()
    )
    weights = compute_weights(bs, POLICY)
    assert (sum(w.weight for w in weights.values()) > 0) == healthy


@given(backends, st.sampled_from(["local", "a", "b"]), st.integers(1, 32))
def test_weight_is_monotone_in_headroom(bs: dict, name: str, extra: int) -> None:
    base = bs.get(name) or BackendLoad(ready_pods=1, saturation=0.5, age=0.0)
    bs = {**bs, name: base}
    more = {
        **bs,
        name: BackendLoad(
            ready_pods=base.ready_pods + extra,
            saturation=base.saturation,
            status=base.status,
            age=base.age,
        ),
    }
    assert compute_weights(more, POLICY)[name].weight >= compute_weights(bs, POLICY)[name].weight


@given(backends)
def test_stale_backends_weigh_zero(bs: dict) -> None:
    weights = compute_weights(bs, POLICY)
    for name, b in bs.items():
        if b is not None and b.age >= POLICY.lease:
            assert weights[name].weight == 0
            assert "stale" in weights[name].reason or b.status != "ok" or b.ready_pods == 0


# Found in a fresh clone: a three-way tie in the largest remainder whose float sums differed by
# the dict's order (every float sum is now math.fsum).
@example(
    {
        "local": BackendLoad(ready_pods=28, saturation=0.0, status="ok", age=0.0),
        "a": BackendLoad(ready_pods=7, saturation=0.0, status="ok", age=0.0),
        "b": BackendLoad(ready_pods=7, saturation=0.0, status="ok", age=0.0),
    }
)
@given(backends)
def test_weights_are_deterministic_and_every_weight_has_a_reason(bs: dict) -> None:
    first, second = compute_weights(bs, POLICY), compute_weights(dict(reversed(bs.items())), POLICY)
    assert first == second
    assert all(w.reason for w in first.values())


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.floats(0, 1e6), max_size=8))
def test_apportion_sums_exactly(scores: dict) -> None:
    result = apportion(scores)
    assert sum(result.values()) in (0, WEIGHT_SCALE)
    positive = sum(s for s in scores.values() if s > 0)
    for k, s in scores.items():
        if positive > 0:
            assert abs(result[k] - s * WEIGHT_SCALE / positive) <= 1


def test_headroom_proportional_example() -> None:
    weights = compute_weights(
        {
            "a": BackendLoad(ready_pods=4, saturation=0.5),  # headroom 2
            "b": BackendLoad(ready_pods=6, saturation=0.0),  # headroom 6
        },
        POLICY,
    )
    assert weights["a"].weight == 250_000
    assert weights["b"].weight == 750_000
    assert weights["a"].percent == 25.0
    assert "4 pods" in weights["a"].reason


def test_unhealthy_epp_and_missing_report_weigh_zero_with_reasons() -> None:
    weights = compute_weights(
        {
            "a": BackendLoad(ready_pods=4, saturation=0.1, status="no-endpoints"),
            "b": None,
            "c": BackendLoad(ready_pods=0, saturation=0.0),
        },
        POLICY,
    )
    assert {k: w.weight for k, w in weights.items()} == {"a": 0, "b": 0, "c": 0}
    assert weights["a"].reason == "EPP no-endpoints"
    assert weights["b"].reason == "no load report yet"
    assert weights["c"].reason == "no ready pods"


def test_trust_decays_linearly_from_half_lease_to_zero() -> None:
    assert trust(0, POLICY) == 1.0
    assert trust(5, POLICY) == 1.0
    assert math.isclose(trust(7.5, POLICY), 0.5)
    assert trust(10, POLICY) == 0.0


def test_report_saturation_takes_the_strongest_signal_and_clamps() -> None:
    got = load_from_report(load(saturation=0.2, kv_cache_utilization=0.9), now=105, seen_at=100)
    assert got.saturation == 0.9
    assert got.age == 5
    got = load_from_report(load(saturation=7.0, ready_pods=-3), now=100, seen_at=100)
    assert (got.saturation, got.ready_pods) == (1.0, 0)


def test_fixed_modes_split_evenly_or_stay_here_and_skip_who_cannot_serve() -> None:
    loads = {
        "a": BackendLoad(ready_pods=4, saturation=0.9),
        "b": BackendLoad(ready_pods=1, saturation=0.0),
        "c": BackendLoad(ready_pods=4, saturation=0.1, status="no-endpoints"),
        "d": None,  # never reported
    }
    static, _ = step_weights(loads, WeightPolicy(mode="static"), here="a")
    assert {n: w.weight for n, w in static.items()} == {"a": 500_000, "b": 500_000, "c": 0, "d": 0}
    assert "equal share of 2" in static["a"].reason
    local, _ = step_weights(loads, WeightPolicy(mode="local-only"), here="a")
    assert {n: w.weight for n, w in local.items()} == {"a": 1_000_000, "b": 0, "c": 0, "d": 0}
    # Here cannot serve: local-only fails over, evenly, rather than send everything nowhere.
    down = {**loads, "a": BackendLoad(ready_pods=0, saturation=0.0)}
    failover, _ = step_weights(down, WeightPolicy(mode="local-only"), here="a")
    assert {n: w.weight for n, w in failover.items()} == {"a": 0, "b": 1_000_000, "c": 0, "d": 0}
    assert "cannot serve" in failover["b"].reason


# The per-step fast paths (session 15) against the plain definitions they replaced.


@given(backend_loads(max_pods=64, max_age=20))
def test_score_value_is_the_number_score_gives(b: BackendLoad | None) -> None:
    assert score_value(b, POLICY) == score(b, POLICY)[0]


@given(backend_loads(max_pods=64, max_age=20))
def test_can_serve_is_whether_the_plan_takes_the_backend(b: BackendLoad | None) -> None:
    assert can_serve(b, POLICY) == (plan_input(b, 1.0, POLICY) is not None)


def _mean_share_by_definition(history, start, end, before) -> float:  # type: ignore[no-untyped-def]
    if not history:
        return before
    if end <= start:
        return [s for t, s in ((-math.inf, before), *history) if t <= end][-1]
    total = 0.0
    for i, (since, share) in enumerate(history):
        until = history[i + 1][0] if i + 1 < len(history) else math.inf
        lo, hi = max(since, start), min(until, end)
        if hi > lo:
            total += share * (hi - lo)
    first = history[0][0]
    if start < first:
        total += before * (min(first, end) - start)
    return total / (end - start)


@given(
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.0, 0.25, 0.5, 1.0])), max_size=12),
    st.integers(-5, 45),
    st.integers(0, 6),
    st.sampled_from([0.0, 1.0]),
    st.booleans(),
)
def test_mean_share_walks_only_the_window_to_the_same_float(
    changes: list, start: int, span: int, before: float, since_ever: bool
) -> None:
    points = sorted((t / 2, s) for t, s in changes)  # (equal change times allowed)
    if since_ever and points:
        points[0] = (-math.inf, points[0][1])
    history = tuple(points)
    args = (history, start / 2, start / 2 + span / 2, before)
    assert mean_share(*args) == _mean_share_by_definition(*args)


@given(
    st.sampled_from([0.0, -0.0, 0.3, 1.0, 1.5, -0.2, math.nan, math.inf, -math.inf]),
    st.sampled_from([0.0, -0.0, 0.3, 1.0, 1.5, -0.2, math.nan, math.inf]),
)
def test_backend_load_clamps_as_min_max_did(saturation: float, kv: float) -> None:
    def clamp(v: float) -> float:
        return 1.0 if math.isnan(v) else min(1.0, max(0.0, v))

    b = backend_load(ready_pods=4, saturation=saturation, kv_cache=kv, status="ok", age=0.0)
    assert b.saturation == clamp(max(saturation, kv))
    assert b.kv_cache == clamp(kv)
    # The sign too: min/max turned -0.0 into 0.0, and a reason must not say "1 - -0.00".
    assert math.copysign(1.0, b.saturation) == math.copysign(1.0, clamp(max(saturation, kv)))
    assert math.copysign(1.0, b.kv_cache) == math.copysign(1.0, clamp(kv))


rated_loads = st.builds(
    BackendLoad,
    ready_pods=st.integers(0, 64),
    saturation=st.floats(0, 1),
    status=st.sampled_from(["ok", "ok", "unreachable", "shedding"]),
    age=st.floats(0, 20),
    kv_cache=st.floats(0, 1),
    queue_size=st.floats(0, 10),
    demand_rate=st.none() | st.floats(0, 100),
    arrival_rate=st.none() | st.floats(0, 100),
    completion_rate=st.none() | st.floats(0, 100),
    capacity_rate=st.none() | st.floats(0, 100),
)


@given(
    st.dictionaries(st.sampled_from(["local", "a", "b", "c"]), st.none() | rated_loads,
                    max_size=4),
    st.sampled_from([None, "a", "local"]),
)  # fmt: skip
def test_without_capacity_or_completions_the_plan_has_nothing_to_plan(
    bs: dict, here: str | None
) -> None:
    """What lets a step skip building the plan's inputs when no report carries capacity or
    completions (whatever other rates they carry); with either, the skip must not be taken."""
    inputs = {n: p for n, b in bs.items() if (p := plan_input(b, 1.0, POLICY)) is not None}
    knobs = PlanKnobs(
        target_utilization=POLICY.target_utilization, equalize_up_to=POLICY.equalize_up_to,
        drain=POLICY.drain, min_kept=0.0, overflow_ratio=POLICY.overflow_ratio,
    )  # fmt: skip
    plan = spill_plan(inputs, here if here in inputs else None, knobs)
    rated = any(
        b is not None and (b.capacity_rate is not None or b.completion_rate is not None)
        for b in bs.values()
    )
    if not rated:
        assert plan is None
    # And the step plans (its reasons say "of capacity") exactly when spill_plan gives a plan,
    # unless one backend alone can serve (with headroom): it takes everything unweighed.
    weights, memory = step_weights(bs, POLICY, here=here if here in bs else None)
    planned = any("of capacity" in w.reason for w in weights.values())
    assert planned == (plan is not None and not memory.lone)
    if memory.lone:
        assert [w.reason for w in weights.values()].count(LONE_REASON) == 1


@given(
    st.lists(st.tuples(st.floats(0, 0.99), st.floats(0, 9.9), st.booleans()), min_size=2,
             max_size=6),
    st.sampled_from([None, "a"]),
)  # fmt: skip
def test_one_backend_able_to_serve_takes_everything_and_its_load_moves_nothing(
    moves: list[tuple[float, float, bool]], here: str | None
) -> None:
    """However loaded (short of full) and however old its report (within the lease), the one
    backend that can serve takes all the traffic with the same reason, beside one that cannot
    (no ready pods): a step of such an import reads no load, so the book need not take one."""
    memory, views = None, []
    for t, (saturation, age, rated) in enumerate(moves):
        rate = 10.0 * saturation if rated else None
        loads = {
            "a": backend_load(ready_pods=4, saturation=saturation, kv_cache=saturation,
                              status="ok", age=age, arrival_rate=rate, completion_rate=rate,
                              capacity_rate=10.0 if rated else None),
            "b": backend_load(ready_pods=0, saturation=0.0, kv_cache=0.0, status="ok", age=0.0),
        }  # fmt: skip
        weights, memory = step_weights(loads, POLICY, here=here, memory=memory, now=float(t))
        assert memory.lone
        assert lone_weights(loads, POLICY) == weights  # what the import book checks against
        views.append(weights)
    assert views[0]["a"] == BackendWeight(WEIGHT_SCALE, LONE_REASON)
    assert all(v == views[0] for v in views)


def test_a_settled_memory_holds_one_map_for_its_weights_goal_and_target() -> None:
    """A memory is never changed in place, so a settled one keeps one copy of the three equal
    maps (at 10,000 imports, megabytes of an agent)."""
    loads = {
        "a": backend_load(ready_pods=4, saturation=0.3, kv_cache=0.3, status="ok", age=0.0),
        "b": backend_load(ready_pods=4, saturation=0.3, kv_cache=0.3, status="ok", age=0.0),
    }
    _, memory = step_weights(loads, POLICY, here="a", now=1.0)
    assert memory.weights == memory.goal == memory.target
    assert memory.weights is memory.goal is memory.target
    _, moving = step_weights(loads | {"b": None}, POLICY, here="a", memory=memory, now=2.0)
    assert moving.weights is not memory.weights  # (a new step: new maps)
