"""Pure rules of the Gateway API feed: backend names, hostile addresses, and route plans."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from federation.model.backend_services import (
    address_type,
    backend_service_name,
    endpoint_address,
    remote_backends,
)
from federation.model.pool_objects import POOL_GROUP
from federation.model.pools import PoolKey
from federation.model.route_weights import (
    MAX_BACKEND_REFS,
    POOL_REF,
    ROUTE_CONTROLLER_ANNOTATION,
    ROUTE_LABEL,
    route_plan,
    services_named,
)
from federation.model.views import ImportView
from tests.model.factories import gateway_view

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
KEY = PoolKey("llm", "pool")
ME = "here"


def view(weights: dict[str, int], *, port: int = 80) -> ImportView:
    return gateway_view(KEY, weights, port=port)


def route(*refs: dict[str, Any], **annotations: str) -> dict[str, Any]:
    pool_ref = {"group": POOL_GROUP, "kind": "InferencePool", "name": KEY.name}
    return {
        "metadata": {
            "namespace": "llm",
            "name": "r",
            "labels": {ROUTE_LABEL: "true"},
            "annotations": annotations,
        },
        "spec": {"rules": [{"backendRefs": [pool_ref, *refs]}]},
    }


def plan_for(r: dict[str, Any], v: ImportView, owned: tuple[str, ...] = ()) -> Any:
    backends = {KEY: remote_backends(v, v.desired.here(ME)).remote}
    names = {KEY: {b.name for b in backends[KEY]} | set(owned)}
    weights = {KEY: {b: w.weight for b, w in v.weights.items()}}
    return route_plan(
        r, {KEY: v}, weights, backends, names, own_cluster=ME, controller="x.io/agent"
    )


@given(st.text(min_size=1, max_size=300), st.text(min_size=1, max_size=80))
def test_a_backend_name_is_always_a_valid_service_name(pool: str, cluster: str) -> None:
    name = backend_service_name(pool, cluster)
    assert DNS1035.match(name), name
    assert backend_service_name(pool, cluster) == name


def test_readable_names_stay_readable_and_long_ones_stay_distinct() -> None:
    assert backend_service_name("llama-3-70b", "us-east") == "llama-3-70b-fed-us-east"
    long_a, long_b = "x" * 60 + "a", "x" * 60 + "b"
    assert backend_service_name(long_a, "c") != backend_service_name(long_b, "c")
    assert backend_service_name("a.b", "c") != backend_service_name("a-b", "c")


def test_hostile_addresses_are_not_endpoints() -> None:
    hostile = ("169.254.169.254", "::ffff:169.254.169.254", "0.0.0.0", "::", "fe80::1",
               "224.0.0.1", "a b", "-x", "", "localhost")  # fmt: skip
    for host in hostile:
        assert address_type(host) is None, host
    assert endpoint_address("::ffff:192.0.2.1") == ("IPv4", "192.0.2.1")
    assert endpoint_address("2001:DB8:0::1") == ("IPv6", "2001:db8::1")
    assert address_type("192.0.2.1") == "IPv4"
    assert address_type("2001:db8::1") == "IPv6"
    assert address_type("gw.example.com") == "FQDN"


@given(st.dictionaries(st.sampled_from(["a", "b", "c", ME]), st.integers(0, 1_000_000),
                       min_size=1))  # fmt: skip
def test_a_planned_rule_carries_the_import_weights(weights: dict[str, int]) -> None:
    v = view(weights)
    plan = plan_for(route(), v)
    if not any(weights.values()):
        assert plan.rules == ()
        assert plan.refused is None
        return
    (rule,) = plan.rules
    assert rule.wanted == {POOL_REF: weights.get(ME, 0)} | {
        c: w for c, w in weights.items() if c != ME
    }
    assert [r["weight"] for r in rule.refs] == [rule.wanted[POOL_REF]] + [
        weights[c] for c in sorted(c for c in weights if c != ME)
    ]
    assert rule.refs[0]["kind"] == "InferencePool"
    assert all(r["kind"] == "Service" and r["port"] == 80 for r in rule.refs[1:])


def test_a_rule_already_right_is_in_place_and_weights_only_are_told_apart() -> None:
    v = view({ME: 600_000, "a": 400_000})
    first = plan_for(route(), v).rules[0]
    assert first.written is None  # the Service ref is missing: structure, written at once
    held = route(*first.refs[1:])
    held["spec"]["rules"][0]["backendRefs"][0]["weight"] = 600_000
    again = plan_for(held, v).rules[0]
    assert again.in_place
    moved = plan_for(held, view({ME: 500_000, "a": 500_000})).rules[0]
    assert moved.written == {POOL_REF: 600_000, "a": 400_000}
    assert not moved.in_place


def test_routes_left_alone_say_why() -> None:
    v = view({ME: 1, "a": 1})
    foreign = plan_for(route({"name": "mine", "port": 80}), v)
    assert foreign.refused is not None
    assert foreign.refused[0] == "ForeignBackendRef"
    other = plan_for(route(**{ROUTE_CONTROLLER_ANNOTATION: "else.io/x"}), v)
    assert other.refused is not None
    assert other.refused[0] == "OtherController"
    # A Service of ours for a backend that went away is not foreign: it is dropped.
    gone = plan_for(route({"name": "pool-fed-old", "port": 80}), v, owned=("pool-fed-old",))
    assert gone.refused is None
    assert [r["name"] for r in gone.rules[0].refs] == ["pool", "pool-fed-a"]


def test_a_rule_never_exceeds_the_crd_limit_of_refs() -> None:
    weights = {f"c{i:02}": i + 1 for i in range(20)}
    plan = plan_for(route(), view(weights))
    (rule,) = plan.rules
    assert len(rule.refs) == MAX_BACKEND_REFS
    kept = {r["name"].removeprefix("pool-fed-") for r in rule.refs[1:]}
    assert kept == {f"c{i:02}" for i in range(5, 20)}  # the highest weights
    assert any("left out" in n for n in plan.notes)


def test_services_named_reads_every_rule_and_namespace() -> None:
    r = route({"name": "pool-fed-a", "port": 80}, {"name": "x", "namespace": "other", "port": 1})
    r["spec"]["rules"].append({"backendRefs": [{"group": "", "kind": "Service", "name": "docs"}]})
    assert services_named(r) == {
        PoolKey("llm", "pool-fed-a"),
        PoolKey("other", "x"),
        PoolKey("llm", "docs"),
    }  # fmt: skip (the InferencePool ref is not a Service)
