"""The full weight policy: local preference, spill, slow start, smoothing, hysteresis, cap."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from msgspec.structs import replace

from federation.model.weights import (
    WEIGHT_SCALE,
    BackendLoad,
    WeightMemory,
    WeightPolicy,
    compute_weights,
    mean_share,
    step_weights,
)
from tests.model.factories import backend_loads

P = WeightPolicy(lease=10, spill_threshold=0.8, smoothing=0.5, deadband=20_000, slow_start=30)


def L(pods: int = 4, sat: float = 0.5, status: str = "ok", age: float = 0.0) -> BackendLoad:
    return BackendLoad(ready_pods=pods, saturation=sat, status=status, age=age)


def w(result: dict) -> dict[str, int]:
    return {k: v.weight for k, v in result.items()}


def test_here_takes_everything_while_below_the_spill_threshold() -> None:
    got = compute_weights({"local": L(sat=0.5), "a": L(pods=50, sat=0.0)}, P, here="local")
    assert w(got) == {"local": WEIGHT_SCALE, "a": 0}
    assert "here preferred" in got["local"].reason


def test_here_spills_in_proportion_to_remote_headroom_above_the_threshold() -> None:
    loads = {"local": L(sat=0.9), "a": L(pods=2, sat=0.0), "b": L(pods=6, sat=0.0)}
    got = w(compute_weights(loads, P, here="local"))
    # spill = (0.9 - 0.8) / 0.2 = 50 %, split 1:3 between a and b
    assert got == {"local": 500_000, "a": 125_000, "b": 375_000}


def test_a_saturated_or_unhealthy_here_gets_nothing() -> None:
    for here in (L(sat=1.0), L(status="shedding"), L(status="no-endpoints"), L(pods=0)):
        got = w(compute_weights({"local": here, "a": L()}, P, here="local"))
        assert got == {"local": 0, "a": WEIGHT_SCALE}


def test_here_keeps_traffic_when_no_remote_has_headroom() -> None:
    got = w(compute_weights({"local": L(sat=0.95), "a": L(status="unreachable")}, P, here="local"))
    assert got == {"local": WEIGHT_SCALE, "a": 0}


def test_own_cluster_name_can_be_here() -> None:
    got = w(compute_weights({"us-east": L(sat=0.1), "eu-west": L()}, P, here="us-east"))
    assert got == {"us-east": WEIGHT_SCALE, "eu-west": 0}


def test_a_drop_to_zero_is_immediate_but_recovery_is_gradual_and_complete() -> None:
    healthy = {"a": L(pods=4, sat=0.0), "b": L(pods=4, sat=0.0)}
    first, memory = step_weights(healthy, P, now=0)
    assert w(first) == {"a": 500_000, "b": 500_000}
    dead = {"a": L(pods=4, sat=0.0), "b": L(status="unreachable")}
    second, memory = step_weights(dead, P, memory=memory, now=1)
    assert w(second) == {"a": WEIGHT_SCALE, "b": 0}
    seen = []
    for t in range(2, 60):
        step, memory = step_weights(healthy, P, memory=memory, now=t)
        seen.append(step["b"].weight)
    assert seen[0] > 0
    assert seen == sorted(seen), "recovery must not oscillate"
    assert len(set(seen)) > 2, "recovery must take several steps"
    assert seen[-1] == 500_000, "recovery must reach the target, not stop short of it"


def test_a_newly_healthy_remote_ramps_up_through_slow_start() -> None:
    loads = {"a": L(pods=4, sat=0.0)}
    _, memory = step_weights(loads, P, now=0)
    joined = {"a": L(pods=4, sat=0.0), "b": L(pods=4, sat=0.0)}
    _, memory = step_weights(joined, P, memory=memory, now=1)
    early, memory = step_weights(joined, P, memory=memory, now=2)
    assert "slow start" in early["b"].reason
    for t in range(3, 60):
        late, memory = step_weights(joined, P, memory=memory, now=t)
    assert early["b"].weight < late["b"].weight == 500_000


def test_an_import_that_served_nothing_yet_does_not_slow_start_its_first_backends() -> None:
    # Exports are often heard before their loads: the first step weighs every backend 0. The
    # first that can serve has nobody to protect (no traffic flowed): it is not ramped; one
    # joining after traffic flows is.
    _, memory = step_weights({"a": None, "b": None}, P, now=0)
    assert not any(memory.weights.values())
    loaded = {"a": L(pods=4, sat=0.0), "b": None}
    got, memory = step_weights(loaded, P, memory=memory, now=1)
    assert "slow start" not in got["a"].reason
    assert memory.healthy_since["a"] == 1 - P.slow_start
    both = {"a": L(pods=4, sat=0.0), "b": L(pods=4, sat=0.0)}
    got, memory = step_weights(both, P, memory=memory, now=2)
    assert "slow start" in got["b"].reason


def test_noise_below_the_deadband_does_not_move_weights() -> None:
    loads = {"a": L(pods=4, sat=0.50), "b": L(pods=4, sat=0.50)}
    _, memory = step_weights(loads, P, now=0)
    for t in range(1, 12):
        jitter = 0.52 if t % 2 else 0.49  # a noisy EPP: +-2 % around the same load
        noisy = {"a": L(pods=4, sat=jitter), "b": L(pods=4, sat=0.50)}
        got, memory = step_weights(noisy, P, memory=memory, now=t)
        assert w(got) == {"a": 500_000, "b": 500_000}, t


def test_small_moves_of_many_backends_that_add_up_move_the_goal_at_once() -> None:
    # Ten equal backends; half become busier, half freer: each share moves by 1.5 points (under
    # the 2-point deadband), 7.5 points of the traffic in all. Judged per backend the goal would
    # hold them at 10 % each until the target had stood still for ``settle`` seconds.
    names = [f"c{i}" for i in range(10)]
    _, memory = step_weights({n: L(pods=4, sat=0.5) for n in names}, P, now=0)
    drifted = {n: L(pods=4, sat=0.425 if i % 2 else 0.575) for i, n in enumerate(names)}
    got, memory = step_weights(drifted, P, memory=memory, now=0.5)
    assert memory.goal == w(compute_weights(drifted, P))
    assert got["c1"].weight > 100_000 > got["c0"].weight
    # One backend's half-point move alone, a tenth of the deadband, still holds the goal.
    nudged = dict(drifted, c3=L(pods=4, sat=0.44))
    _, after = step_weights(nudged, P, memory=memory, now=1.0)
    assert after.goal == memory.goal


def test_a_steady_small_change_is_adopted_exactly() -> None:
    loads = {"a": L(pods=4, sat=0.50), "b": L(pods=4, sat=0.50)}
    _, memory = step_weights(loads, P, now=0)
    nudged = {"a": L(pods=4, sat=0.52), "b": L(pods=4, sat=0.50)}
    for t in range(1, 10):
        got, memory = step_weights(nudged, P, memory=memory, now=t)
    assert w(got) == w(compute_weights(nudged, P))


def test_the_remote_cap_moves_the_excess_to_other_backends() -> None:
    capped = WeightPolicy(remote_cap=0.5)
    got = w(compute_weights({"a": L(pods=9, sat=0.0), "b": L(pods=1, sat=0.0)}, capped))
    assert got == {"a": 500_000, "b": 500_000}


backend = backend_loads(max_pods=32, max_age=15)
steps = st.lists(
    st.dictionaries(st.sampled_from(["local", "a", "b", "c"]), backend, min_size=1, max_size=4),
    min_size=1,
    max_size=6,
)


@given(steps, st.sampled_from([None, "local", "a"]))
def test_invariants_hold_over_any_sequence_of_steps(seq: list, here: str | None) -> None:
    memory = WeightMemory()
    for t, loads in enumerate(seq):
        flowed = memory.flowing
        got, memory = step_weights(
            loads, P, here=here if here in loads else None, memory=memory, now=t
        )
        values = {k: v.weight for k, v in got.items()}
        assert all(v >= 0 for v in values.values())
        assert sum(values.values()) in (0, WEIGHT_SCALE)
        for name, load in loads.items():
            if load is None or load.age >= P.lease or load.status != "ok":
                assert values[name] == 0, (name, load)
        headroom = any(
            b is not None
            and b.status == "ok"
            and b.age < P.lease
            and b.ready_pods > 0
            and b.saturation < 1
            for b in loads.values()
        )
        if headroom:
            assert sum(values.values()) > 0
        else:
            # Every backend full: traffic that flowed eases out like any move, and with nowhere
            # to go it stays on backends that can still take it (healthy, full); none starts.
            assert sum(values.values()) == 0 or flowed


def test_smoothing_pace_follows_time_not_the_number_of_recomputations() -> None:
    healthy = {"a": L(pods=4, sat=0.0), "b": L(pods=4, sat=0.0)}
    _, memory = step_weights(healthy, P, now=0)
    dead = {"a": L(pods=4, sat=0.0), "b": L(status="unreachable")}
    _, memory = step_weights(dead, P, memory=memory, now=1)
    once, _ = step_weights(healthy, P, memory=memory, now=1.5)
    many, m = step_weights(healthy, P, memory=memory, now=1.5)
    for _ in range(20):  # a burst of events: recomputed twenty times at the same instant
        many, m = step_weights(healthy, P, memory=m, now=1.5)
    assert w(many) == w(once)


def test_noise_is_held_even_when_recomputed_many_times_between_samples() -> None:
    loads = {"a": L(pods=4, sat=0.50), "b": L(pods=4, sat=0.50)}
    _, memory = step_weights(loads, P, now=0)
    t = 0.0
    for sample in range(8):  # a noisy EPP sampled every second, recomputed every 0.1 s
        jitter = 0.52 if sample % 2 else 0.49
        noisy = {"a": L(pods=4, sat=jitter), "b": L(pods=4, sat=0.50)}
        for _ in range(10):
            t += 0.1
            got, memory = step_weights(noisy, P, memory=memory, now=t)
            assert w(got) == {"a": 500_000, "b": 500_000}, t


def test_the_share_kept_is_averaged_over_the_window_its_arrivals_were_counted_in() -> None:
    # Here kept everything until t=9 and half since: arrivals rated over [7, 10] came two thirds
    # of the time at 1.0 and one third at 0.5, so they are divided by 0.83, not by 0.5.
    history = ((0.0, 1.0), (9.0, 0.5))
    assert mean_share(history, 7.0, 10.0, 1.0) == pytest.approx((2 * 1.0 + 0.5) / 3)
    assert mean_share(history, 9.5, 9.5, 1.0) == 0.5
    # Before its history began a backend had no weight: here kept all, a remote was sent none.
    assert mean_share(((9.0, 0.5),), 7.0, 10.0, 1.0) == pytest.approx((2 * 1.0 + 0.5) / 3)
    assert mean_share(((9.0, 0.5),), 7.0, 10.0, 0.0) == pytest.approx(0.5 / 3)
    assert mean_share((), 7.0, 10.0, 0.0) == 0.0
    assert mean_share(((9.0, 0.5),), 7.0, 8.0, 1.0) == 1.0


def test_a_report_is_weighed_against_the_shares_it_saw_not_the_newest() -> None:
    """A report's arrivals were counted before this agent's latest weights: weighing them
    against those weights fed the plan its own output (here's demand grew and a remote's fell
    at every step with no new report, found by review)."""
    rates = {"completion_rate": 8.0, "capacity_rate": 8.0}
    loads = {
        "local": BackendLoad(ready_pods=2, saturation=0.9, kv_cache=0.9, arrival_rate=14.0,
                             sampled_at=100.0, **rates),
        "b": BackendLoad(ready_pods=2, saturation=0.2, kv_cache=0.2, arrival_rate=2.0,
                         sampled_at=100.0, **rates),
    }  # fmt: skip
    first, memory = step_weights(loads, P, here="local", memory=WeightMemory(), now=100.0)
    for t in (100.5, 101.0, 103.0, 104.9):  # the same reports (fully trusted), nothing new
        aged = {n: replace(b, age=t - 100.0) for n, b in loads.items()}
        got, memory = step_weights(aged, P, here="local", memory=memory, now=t)
        assert w(got) == w(first), t
        assert got["local"].reason == first["local"].reason


def test_the_share_history_follows_every_backend_and_stays_bounded() -> None:
    rates = {"completion_rate": 10.0, "capacity_rate": 12.0}
    memory = WeightMemory()
    for t in range(200):  # here's demand swings over and under its capacity
        demand = 20.0 if t % 20 < 10 else 4.0
        loads = {
            "local": BackendLoad(ready_pods=4, saturation=0.5, kv_cache=0.5, arrival_rate=demand,
                                 **rates),
            "b": BackendLoad(ready_pods=4, saturation=0.1, kv_cache=0.1, arrival_rate=2.0, **rates),
        }  # fmt: skip
        weights, memory = step_weights(loads, P, here="local", memory=memory, now=float(t))
        for name in loads:
            history = memory.shares[name]
            assert history[-1] == (history[-1][0], weights[name].weight / 1_000_000)
            assert all(at >= t - P.lease - 3.0 - 20.0 for at, _ in history[1:])  # bounded
    history = memory.shares["local"]
    assert len({share for _, share in history}) > 1  # it moved, and was recorded
    # What came before the oldest change kept stands for all time before (a report renewed for
    # minutes has its window there), not "no weight yet".
    assert history[0][0] == -math.inf
    assert mean_share(history, 10.0, 13.0, 1.0) == history[0][1]


def test_a_clock_that_goes_back_restarts_the_history() -> None:
    rates = {"completion_rate": 8.0, "capacity_rate": 8.0}
    loads = {
        "local": BackendLoad(ready_pods=2, saturation=0.9, kv_cache=0.9, arrival_rate=14.0,
                             **rates),
        "b": BackendLoad(ready_pods=2, saturation=0.2, kv_cache=0.2, arrival_rate=2.0, **rates),
    }  # fmt: skip
    _, memory = step_weights(loads, P, here="local", memory=WeightMemory(), now=100.0)
    _, memory = step_weights(loads, P, here="local", memory=memory, now=50.0)
    assert all(h[0][0] == 50.0 and len(h) == 1 for h in memory.shares.values())
