"""Leases, stale conditions, and telling a dead peer from a cut link."""

from federation.model.beliefs import Beliefs
from federation.model.conditions import FRESH, accepted, fresh
from federation.model.freshness import LinkState, link_state, next_lease_end, staleness
from federation.model.imports import desired_imports
from federation.model.pools import PoolKey
from federation.model.views import import_views
from federation.model.weights import WeightPolicy
from tests.model.factories import beat, export, load

KEY = PoolKey("llm", "pool")
POLICY = WeightPolicy(lease=10)


def _beliefs(at: dict[str, float]) -> Beliefs:
    b = Beliefs()
    for cluster, t in at.items():
        b.apply(export(cluster), t)
        b.apply(beat(cluster, published_at=t), t)
        b.apply(load(cluster, published_at=t), t)
    return b


def _link(b: Beliefs, now: float, connected: bool = True) -> LinkState:
    return link_state(
        b, own_cluster="me", members=["me", "a", "b"], connected=connected, now=now, lease=10
    )


def test_one_silent_peer_is_stale_not_a_cut_link() -> None:
    b = _beliefs({"a": 100.0, "b": 115.0})
    assert not _link(b, now=120).suspect
    assert staleness(b, "a", now=120, lease=10).stale
    assert not staleness(b, "b", now=120, lease=10).stale


def test_the_next_lease_end_is_the_earliest_still_running() -> None:
    b = _beliefs({"a": 100.0, "b": 104.0})
    assert next_lease_end(b, ["a", "b", "never"], now=105, lease=10) == 110
    assert next_lease_end(b, ["a", "b"], now=111, lease=10) == 114  # a's ended: not again
    assert next_lease_end(b, ["a", "b"], now=115, lease=10) is None
    # Leases ending close together are folded into one instant: the last of them.
    assert next_lease_end(b, ["a", "b"], now=105, lease=10, fold=5) == 114
    assert next_lease_end(b, ["a", "b"], now=105, lease=10, fold=3.9) == 110
    # Just past it, not yet stale by ``age > lease``: the step there is the one that sees it.
    assert not staleness(b, "a", now=110, lease=10).stale
    assert staleness(b, "a", now=110.005, lease=10).stale


def test_every_peer_silent_at_once_means_my_link_is_suspect() -> None:
    b = _beliefs({"a": 100.0, "b": 101.0})
    link = _link(b, now=120)
    assert link.suspect
    assert link.since == 101.0


def test_a_disconnected_bus_is_suspect_at_once() -> None:
    assert _link(_beliefs({"a": 100.0, "b": 100.0}), now=100.5, connected=False).suspect


def test_a_single_peer_going_silent_is_treated_as_stale() -> None:
    b = _beliefs({"a": 100.0})
    link = link_state(b, own_cluster="me", members=["me", "a"], connected=True, now=200, lease=10)
    assert not link.suspect


def test_stale_condition_names_the_cluster_and_since_when() -> None:
    b = _beliefs({"a": 100.0, "b": 115.0})
    d = desired_imports(b, {}, own_cluster="me", now=120, grace=300)[KEY]
    f = {c: staleness(b, c, now=120, lease=10) for c in d.exporting_clusters}
    cond = fresh(d, f, LinkState(False), now=120, lease=10)
    assert (cond.type, cond.status, cond.reason) == (FRESH, "False", "Stale")
    assert "a since 1970-01-01T00:01:50Z" in cond.message
    assert "b" not in cond.message.split(":", 1)[1]


def test_conflicts_make_accepted_false_naming_clusters_and_fields() -> None:
    b = Beliefs()
    b.apply(export("a", exported_at=1.0), 100)
    b.apply(export("b", exported_at=2.0, target_ports=(9000,)), 100)
    d = desired_imports(b, {}, own_cluster="a", now=100, grace=300)[KEY]
    cond = accepted(d)
    assert (cond.status, cond.reason) == ("False", "Conflict")
    assert "b differs from a in target_ports" in cond.message


def test_a_suspect_link_freezes_weights_and_a_healthy_one_drains_the_stale_peer() -> None:
    b = _beliefs({"a": 100.0, "b": 100.0})
    desired = desired_imports(b, {}, own_cluster="me", now=101, grace=300)
    before, memories = import_views(desired, b, {}, {}, own_cluster="me", now=101, policy=POLICY)
    assert before[KEY].weights["a"].weight == 500_000
    later = desired_imports(b, {}, own_cluster="me", now=130, grace=300)
    frozen, _ = import_views(
        later,
        b,
        {},
        memories,
        own_cluster="me",
        now=130,
        policy=POLICY,
        link=LinkState(True, "test"),
        previous=before,
    )
    assert frozen[KEY].weights == before[KEY].weights
    assert frozen[KEY].conditions[1].status == "Unknown"
    drained, _ = import_views(
        later,
        b,
        {},
        memories,
        own_cluster="me",
        now=130,
        policy=POLICY,
        link=LinkState(False),
        previous=before,
    )
    assert {w.weight for w in drained[KEY].weights.values()} == {0}
    assert drained[KEY].conditions[1].reason == "Stale"
