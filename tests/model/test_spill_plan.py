"""The rate plan: shares that sum to one, never sent to a backend without spare, and shared."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model.spill_plan import PlanInput, PlanKnobs, spill_plan
from federation.model.weights import BackendLoad, WeightPolicy, compute_weights

KNOBS = PlanKnobs(target_utilization=0.7, equalize_up_to=0.9, drain=10.0)


def backend(demand: float, capacity: float, *, backlog: float = 0.0, trust: float = 1.0,
            full: bool = False) -> PlanInput:  # fmt: skip
    return PlanInput(ready_pods=4, busy=min(1.0, demand / capacity), demand=demand,
                     completions=min(demand, capacity), capacity=capacity, backlog=backlog,
                     trust=trust, full=full)  # fmt: skip


inputs = st.builds(
    backend,
    st.floats(0.0, 60.0),
    st.floats(1.0, 40.0),
    backlog=st.floats(0.0, 100.0),
    trust=st.floats(0.0, 1.0),
    full=st.booleans(),
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
