"""The HAProxy plan: from what HAProxy holds to what the imports want, drains included."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from federation.model.coalescing import annotation_due
from federation.model.haproxy_servers import Server, haproxy_weights, ip_literal, plan


def test_new_servers_are_added_then_enabled_and_moved_ones_follow() -> None:
    actual = {"eu-west": Server("10.0.0.1", 443, 10)}
    wanted = {"eu-west": Server("10.0.0.9", 8443, 20), "us-east": Server("::1", 80, 5)}
    step = plan("b", actual, wanted, {}, now=0, drain=30)
    assert step.commands == [
        "set server b/eu-west addr 10.0.0.9 port 8443",
        "set weight b/eu-west 20",
        "add server b/us-east [::1]:80 weight 5",
        "enable server b/us-east",
    ]
    assert step.draining == {}


def test_a_server_no_longer_wanted_drains_for_the_drain_time_then_goes() -> None:
    actual = {"eu-west": Server("10.0.0.1", 443, 10)}
    first = plan("b", actual, {}, {}, now=100, drain=30)
    assert first.commands == ["set weight b/eu-west 0"]
    assert first.draining == {"eu-west": 100}
    drained = {"eu-west": Server("10.0.0.1", 443, 0)}
    assert plan("b", drained, {}, first.draining, now=129, drain=30).commands == []
    last = plan("b", drained, {}, first.draining, now=130, drain=30)
    assert last.commands[-1] == "del server b/eu-west"
    assert last.draining == {"eu-west": 100}  # kept until HAProxy no longer lists it
    assert plan("b", {}, {}, last.draining, now=131, drain=30).draining == {}


def test_a_dead_backend_at_weight_zero_drains_and_a_revived_one_comes_back() -> None:
    actual = {"eu-west": Server("10.0.0.1", 443, 10)}
    dead = {"eu-west": Server("10.0.0.1", 443, 0)}
    assert plan("b", actual, dead, {}, now=0, drain=5).commands == ["set weight b/eu-west 0"]
    alive = {"eu-west": Server("10.0.0.1", 443, 7)}
    step = plan("b", dead, alive, {"eu-west": 0.0}, now=1, drain=5)
    assert step.commands == ["set weight b/eu-west 7"]
    assert step.draining == {}


@given(st.dictionaries(st.sampled_from(["a", "b", "c", "local"]), st.integers(0, 1_000_000)))
def test_haproxy_weights_keep_zeros_and_order(weights: dict[str, int]) -> None:
    scaled = haproxy_weights(weights)
    assert set(scaled) == set(weights)
    for k, w in weights.items():
        assert (scaled[k] == 0) == (w == 0)
        assert 0 <= scaled[k] <= 256
    for a in weights:
        for b in weights:
            if weights[a] > weights[b]:
                assert scaled[a] >= scaled[b]


def test_only_ip_literals_are_addresses() -> None:
    assert ip_literal("10.1.2.3") == "10.1.2.3"
    assert ip_literal("::1") == "::1"
    for hostile in ("gw.example.com", "1.2.3.4 check", "1.2.3.4;", "", "[::1]"):
        assert ip_literal(hostile) is None


def test_annotation_writes_are_coalesced() -> None:
    kw = {"interval": 10.0, "threshold": 50_000}
    w = {"a": 600_000, "b": 400_000}
    assert annotation_due(None, w, written_at=None, now=5, **kw) == 5
    assert annotation_due(w, w, written_at=0, now=5, **kw) is None
    small = {"a": 620_000, "b": 380_000}
    assert annotation_due(w, small, written_at=0, now=5, **kw) is None  # below the threshold
    big = {"a": 700_000, "b": 300_000}
    assert annotation_due(w, big, written_at=0, now=5, **kw) == 10  # at most once per interval
    assert annotation_due(w, big, written_at=0, now=12, **kw) == 12
    stopped = {"a": 1_000_000, "b": 0}
    assert annotation_due(w, stopped, written_at=4, now=5, **kw) == 14  # still once per interval
    assert annotation_due(w, stopped, written_at=None, now=5, **kw) == 5  # never written: now
    grown = {"a": 600_000, "b": 400_000, "c": 0}
    assert annotation_due(w, grown, written_at=0, now=12, **kw) == 12  # a new backend
