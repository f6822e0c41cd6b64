"""Kubernetes objects → LocalPool: resolution rules, and hostile input never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from federation.model.beliefs import Beliefs
from federation.model.exported import Acks, exported_condition
from federation.model.pool_objects import (
    EPP_ADDRESS_ANNOTATION,
    METRICS_URL_ANNOTATION,
    MODEL_ANNOTATION,
    parse_address,
    pool_from_object,
)
from federation.model.pools import EXPORT_ANNOTATION, ExportState, PoolKey, export_decision

SERVICES = {PoolKey("llm", "llama-epp"): {"spec": {"clusterIP": "10.0.0.7"}}}


def obj(
    name: str = "llama", ns: str = "llm", spec: Any = None, **annotations: str
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "annotations": annotations},
        "spec": spec
        if spec is not None
        else {
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": "llama-epp", "port": {"number": 9002}},
        },
    }


def reason(o: dict[str, Any], services: Any = SERVICES) -> str:
    pool = pool_from_object(o, services)
    condition = exported_condition(
        pool, generation=1, beliefs=Beliefs(), own_cluster="a", live_peers=(),
        own_acks=Acks({"a": 1}, {}),
    )  # fmt: skip
    assert condition is not None
    return condition.reason


def test_an_export_is_not_true_before_the_exporters_own_import_is_written() -> None:
    pool = pool_from_object(obj(**{EXPORT_ANNOTATION: "ClusterSet"}), SERVICES)
    for acks in (None, Acks({"a": 0}, {})):  # nothing applied yet, or an older generation
        condition = exported_condition(
            pool, generation=1, beliefs=Beliefs(), own_cluster="a", live_peers=("a",),
            own_acks=acks,
        )  # fmt: skip
        assert condition is not None
        assert (condition.status, condition.reason) == ("False", "Pending")
        assert "own import" in condition.message


def test_a_valid_exported_pool_resolves() -> None:
    pool = pool_from_object(obj(**{EXPORT_ANNOTATION: "ClusterSet"}), SERVICES)
    assert pool.invalid is None
    assert export_decision(pool).state is ExportState.EXPORTED
    assert pool.epp is not None
    assert (pool.epp.host, pool.epp.port) == ("10.0.0.7", 9002)
    assert reason(obj(**{EXPORT_ANNOTATION: "ClusterSet"})) == "Exported"


def test_missing_endpoint_picker_ref_is_invalid_with_a_reason() -> None:
    o = obj(spec={"targetPorts": [{"number": 8000}]}, **{EXPORT_ANNOTATION: "ClusterSet"})
    assert reason(o) == "InvalidPool"
    assert export_decision(pool_from_object(o, SERVICES)).state is ExportState.INVALID


def test_unresolvable_epp_service_is_reported() -> None:
    assert reason(obj(**{EXPORT_ANNOTATION: "ClusterSet"}), services={}) == (
        "EndpointPickerUnresolved"
    )
    headless = {PoolKey("llm", "llama-epp"): {"spec": {"clusterIP": "None"}}}
    assert reason(obj(**{EXPORT_ANNOTATION: "ClusterSet"}), services=headless) == (
        "EndpointPickerUnresolved"
    )


def test_address_override_and_bad_overrides() -> None:
    good = pool_from_object(
        obj(**{EXPORT_ANNOTATION: "ClusterSet", EPP_ADDRESS_ANNOTATION: "[2001:db8::1]:9002"}), {}
    )
    assert good.epp is not None
    assert (good.epp.host, good.epp.port) == ("2001:db8::1", 9002)
    for bad in ("nope", "host:0", "host:99999", "a b:80", "x" * 300 + ":80", ":80"):
        o = obj(**{EXPORT_ANNOTATION: "ClusterSet", EPP_ADDRESS_ANNOTATION: bad})
        assert reason(o) == "InvalidAnnotation", bad
    o = obj(**{EXPORT_ANNOTATION: "ClusterSet", METRICS_URL_ANNOTATION: "file:///etc/passwd"})
    assert reason(o) == "InvalidAnnotation"
    o = obj(**{EXPORT_ANNOTATION: "ClusterSet", MODEL_ANNOTATION: "bad model\n" * 40})
    assert reason(o) == "InvalidAnnotation"


def test_absurd_export_values_are_not_supported_and_shortened() -> None:
    for value in ("clusterset", "ClusterSet ", "", "ClusterSet\x00", "☃" * 10_000):
        o = obj(**{EXPORT_ANNOTATION: value})
        assert reason(o) == "NotSupported", value
        decision = export_decision(pool_from_object(o, SERVICES))
        assert len(decision.message) < 300


def test_names_at_the_length_limits() -> None:
    name = "p" * 253  # a DNS subdomain's maximum
    ns = "n" * 63  # a DNS label's maximum
    services = {PoolKey(ns, "epp"): {"spec": {"clusterIP": "10.0.0.1"}}}
    o = obj(name=name, ns=ns, spec={
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {"name": "epp", "port": {"number": 9002}},
    }, **{EXPORT_ANNOTATION: "ClusterSet"})  # fmt: skip
    pool = pool_from_object(o, services)
    assert pool.key == PoolKey(ns, name)
    assert export_decision(pool).state is ExportState.EXPORTED


def test_parse_address() -> None:
    assert parse_address("epp.llm.svc:9002") is not None
    assert parse_address("9002") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    spec=json_values,
    annotations=st.dictionaries(
        st.sampled_from(
            [
                EXPORT_ANNOTATION,
                EPP_ADDRESS_ANNOTATION,
                METRICS_URL_ANNOTATION,
                MODEL_ANNOTATION,
                "other",
            ]
        ),
        json_values,
    ),
    services=st.dictionaries(st.just(PoolKey("llm", "llama-epp")), json_values, max_size=1),
)
def test_hostile_objects_never_raise(spec: Any, annotations: Any, services: Any) -> None:
    o = {
        "metadata": {"namespace": "llm", "name": "llama", "annotations": annotations},
        "spec": spec,
    }
    pool = pool_from_object(o, services)
    decision = export_decision(pool)
    if decision.state is ExportState.EXPORTED:
        assert pool.invalid is None
        assert pool.target_ports


def test_a_route_marked_for_weights_is_not_where_peers_forward_to() -> None:
    """Parents come from unmarked routes only: a marked route spills to other clusters, so a
    request a peer forwarded there could be forwarded again."""
    from federation.kit.sim.kube_pools import gateway, route_to

    key = PoolKey("llm", "llama")
    gateways = {
        PoolKey("llm", "eastwest"): gateway("llm", "eastwest", 8443),
        PoolKey("llm", "gateway"): gateway("llm", "gateway", 443),
    }
    marked = route_to(key, "llama", "gateway", marked=True)
    plain = route_to(key, "llama-eastwest", "eastwest", marked=False)
    both = pool_from_object(obj(), SERVICES, [marked, plain], gateways)
    assert [(p.name, [a.port for a in p.addresses]) for p in both.parents] == [("eastwest", [8443])]
    assert pool_from_object(obj(), SERVICES, [marked], gateways).parents == ()


def test_a_parent_is_the_listener_the_route_attaches_to() -> None:
    """One Gateway, two listeners: the unmarked route's ``sectionName`` says which port peers
    forward to; a listener the Gateway lacks gives no address at all."""
    from federation.kit.sim.kube_pools import route_to

    key = PoolKey("llm", "llama")
    two = {
        "metadata": {"namespace": "llm", "name": "gw"},
        "spec": {"listeners": [{"name": "clients", "port": 443}, {"name": "peers", "port": 8443}]},
        "status": {"addresses": [{"value": "192.0.2.7"}]},
    }
    gateways = {PoolKey("llm", "gw"): two}
    plain = route_to(key, "llama-peers", "gw", marked=False)
    plain["spec"]["parentRefs"][0]["sectionName"] = "peers"
    (parent,) = pool_from_object(obj(), SERVICES, [plain], gateways).parents
    assert [a.port for a in parent.addresses] == [8443]
    plain["spec"]["parentRefs"][0]["sectionName"] = "nope"
    (parent,) = pool_from_object(obj(), SERVICES, [plain], gateways).parents
    assert parent.addresses == ()
