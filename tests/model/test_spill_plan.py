"""The rate plan: shares that sum to one, never sent to a backend without spare, and shared."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model.spill_plan import PlanInput, PlanKnobs, spill_plan
from federation.model.weights import BackendLoad, WeightPolicy, compute_weights

KNOBS = PlanKnobs(target_utilization=0.7, equalize_up_to=0.9, drain=10.0)


def backend(demand: float, capacity: float, *, backlog: float = 0.0, trust: float = 1.0,
            full: bool = False, pods: int = 4) -> PlanInput:  # fmt: skip
    return PlanInput(ready_pods=pods, busy=min(1.0, demand / capacity), demand=demand,
                     completions=min(demand, capacity), capacity=capacity, backlog=backlog,
                     trust=trust, full=full)  # fmt: skip


inputs = st.builds(
    backend,
    st.floats(0.0, 60.0),
    st.floats(1.0, 40.0),
    backlog=st.floats(0.0, 100.0),
    trust=st.floats(0.0, 1.0),
    full=st.booleans(),
    pods=st.integers(1, 12),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), inputs, min_size=1))
def test_shares_sum_to_one_and_go_only_where_there_is_spare(backends: dict) -> None:  # type: ignore[type-arg]
    here = min(backends)
    plan = spill_plan(backends, here, KNOBS)
    assert plan is not None
    assert sum(plan.shares.values()) == pytest.approx(1.0)
    assert all(v >= 0 for v in plan.shares.values())
    for name, share in plan.shares.items():
        if name != here and share > 0:
            assert plan.spare[name] > 0
            assert not backends[name].full
    if plan.excess[here] <= 0:
        assert plan.shares[here] == 1.0  # no excess: nothing leaves


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), inputs, min_size=2))
def test_what_all_importers_send_fits_each_remote_spare(backends: dict) -> None:  # type: ignore[type-arg]
    """Every agent computes the same plan: the clusters in excess share a spare, not herd on it."""
    sent: dict[str, float] = {}
    for here, b in backends.items():
        plan = spill_plan(backends, here, KNOBS)
        assert plan is not None
        for name, share in plan.shares.items():
            if name != here:
                sent[name] = sent.get(name, 0.0) + share * (b.demand or 0.0)
    plan = spill_plan(backends, None, KNOBS)
    assert plan is not None
    for name, rate in sent.items():
        assert rate <= plan.spare[name] + 1e-6


def test_a_burst_spills_its_excess_over_the_target() -> None:
    plan = spill_plan({"here": backend(20.0, 20.0), "b": backend(5.0, 20.0)}, "here", KNOBS)
    assert plan is not None
    # level 0.7 (25 / 40 < 0.7): here may serve 14 of its 20, so it spills 6 / 20 = 30 %.
    assert plan.level == pytest.approx(0.7)
    assert plan.shares["b"] == pytest.approx(0.3)


def test_an_overload_of_the_whole_set_fills_everyone_to_the_same_level_but_no_further() -> None:
    even = spill_plan({"a": backend(30.0, 20.0), "b": backend(4.0, 20.0)}, "a", KNOBS)
    assert even is not None
    assert even.level == pytest.approx(34 / 40)
    capped = spill_plan({"a": backend(60.0, 20.0), "b": backend(10.0, 20.0)}, "a", KNOBS)
    assert capped is not None
    assert capped.level == pytest.approx(0.9)
    assert capped.shares["b"] * 60.0 == pytest.approx(0.9 * 20 - 10.0)  # b fills to 0.9 only


def test_reports_without_rates_fall_back_to_the_saturation_policy() -> None:
    loads = {
        "local": BackendLoad(ready_pods=4, saturation=0.9),
        "b": BackendLoad(ready_pods=4, saturation=0.0),
    }
    weights = compute_weights(loads, WeightPolicy(), here="local")
    assert weights["local"].weight == 500_000
    assert "saturation 0.90 >= 0.80" in weights["local"].reason


def test_an_older_remote_without_rates_still_takes_spill() -> None:
    """Mixed versions: a remote whose report has no rates stands in with its served load."""
    loads = {
        "local": BackendLoad(ready_pods=4, saturation=1.0, kv_cache=1.0, arrival_rate=20.0,
                             completion_rate=12.0, capacity_rate=12.0),
        "old": BackendLoad(ready_pods=4, saturation=0.2, kv_cache=0.2),
    }  # fmt: skip
    weights = compute_weights(loads, WeightPolicy(), here="local")
    assert 0 < weights["old"].weight < 1_000_000
    assert "capacity 12.0" in weights["old"].reason  # pooled per-pod throughput x its pods


OVERFLOW = PlanKnobs(target_utilization=0.7, equalize_up_to=0.9, drain=10.0, overflow_ratio=2.0)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdef"), inputs, min_size=2))
def test_with_an_overflow_only_it_takes_more_than_its_spare_and_all_agree(backends: dict) -> None:  # type: ignore[type-arg]
    plans = {here: spill_plan(backends, here, OVERFLOW) for here in backends}
    overflows = {p.overflow for p in plans.values() if p is not None}
    assert len(overflows) == 1  # every agent gives up the same backend, or none
    for here, plan in plans.items():
        assert plan is not None
        assert sum(plan.shares.values()) == pytest.approx(1.0)
        assert all(v >= 0 for v in plan.shares.values())
        for name, share in plan.shares.items():
            if name != here and share > 0 and name != plan.overflow:
                assert plan.spare[name] > 0
                assert not backends[name].full
        if plan.overflow is not None:
            pods = {k: b.ready_pods for k, b in backends.items()}
            assert sum(pods.values()) - pods[plan.overflow] >= 2 * pods[plan.overflow]
            assert pods[plan.overflow] == min(pods.values())
            assert plan.level == pytest.approx(0.9)  # only beyond equalize_up_to


def test_beyond_the_sets_capacity_the_smallest_takes_what_the_others_cannot_hold() -> None:
    # 250 req/s on 220 of capacity: without an overflow, big and mid keep their excess and
    # miss nearly all of it; with one, they stay at 0.9 and small (47 of 220) takes the rest.
    backends = {"big": backend(116.0, 95.0, pods=12), "mid": backend(91.0, 78.0, pods=10),
                "small": backend(43.0, 47.0, pods=6)}  # fmt: skip
    plan = spill_plan(backends, "big", OVERFLOW)
    assert plan is not None
    assert plan.overflow == "small"
    assert plan.shares["big"] * 116.0 == pytest.approx(0.9 * 95.0)
    assert plan.shares["mid"] == 0.0  # it has no spare: it is over the level itself
    kept_by_small = spill_plan(backends, "small", OVERFLOW)
    assert kept_by_small is not None
    assert kept_by_small.shares["small"] == 1.0
    off = spill_plan(backends, "big", KNOBS)
    assert off is not None
    assert off.shares["small"] == 0.0  # without an overflow: no spare, no spill


def test_no_overflow_among_clusters_of_similar_size_or_below_the_level() -> None:
    # Two of a size: giving one up would save no more than it loses (by pods: 5 is not 2 x 4,
    # whatever the capacity estimates say).
    two = {"a": backend(60.0, 20.0, pods=4), "b": backend(19.0, 8.0, pods=5)}
    similar = spill_plan(two, "a", OVERFLOW)
    assert similar is not None
    assert similar.overflow is None
    busy = {"a": backend(80.0, 95.0, pods=12), "b": backend(60.0, 78.0, pods=10),
            "c": backend(40.0, 47.0, pods=6)}  # fmt: skip
    below = spill_plan(busy, "a", OVERFLOW)  # 180 / 220 < 0.9: no overload of the whole set
    assert below is not None
    assert below.overflow is None


def test_the_weights_say_which_backend_is_the_overflow() -> None:
    def load(pods: int, demand: float, capacity: float) -> BackendLoad:
        busy = min(1.0, demand / capacity)
        return BackendLoad(ready_pods=pods, saturation=busy, kv_cache=busy, demand_rate=demand,
                           arrival_rate=demand, completion_rate=min(demand, capacity),
                           capacity_rate=capacity)  # fmt: skip

    loads = {"big": load(12, 116.0, 95.0), "mid": load(10, 91.0, 78.0),
             "small": load(6, 43.0, 47.0)}  # fmt: skip
    weights = compute_weights(loads, WeightPolicy(), here="big")
    assert "overflow: takes what the others cannot hold at level 0.90" in weights["small"].reason
    assert "to the overflow small" in weights["big"].reason
    assert weights["small"].weight > 0
    assert compute_weights(loads, WeightPolicy(overflow_ratio=0), here="big")["small"].weight == 0
