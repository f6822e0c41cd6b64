"""deploy/: the manifests parse, and the RBAC grants exactly what the agent uses, nothing more.

What the agent uses is measured, not listed by hand: every request the agents make against
their emulated API servers during a demo run with churn (a withdrawn export, a lost race) is
recorded as (API group, resource, verb) and compared with the ClusterRole's rules.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.kit.kube_kinds import SERVICE_KIND, SLICE_KIND
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.loads import EppFault
from federation.model.pools import PoolKey
from tests.conftest import wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "manifests").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def granted() -> set[tuple[str, str, str]]:
    (role,) = [d for d in manifests() if d["kind"] == "ClusterRole"]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_manifests_parse_and_run_hardened() -> None:
    docs = manifests()
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
    } <= kinds
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert not any("*" in v for g in granted() for v in g), "no wildcards in the RBAC"
    crd = yaml.safe_load((DEPLOY / "crds" / "inferencepoolimports.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == "InferencePoolImport"


async def exercise_the_gateway_api_feed(east: Any, west: Any) -> None:
    """A user edits what the feed owns (repaired: patches), a route write loses a race (a get),
    and a shared pool loses one exporter (its Service and slice deleted, the import kept)."""
    shared = PoolKey("llm", "llama-3-70b")  # exported by both clusters
    name = f"{shared.name}-fed-us-east"
    emulator = west.apiserver.emulator

    def owned(plural: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = emulator.object_at(plural, "llm", name)
        return obj

    await wait_for(lambda: owned("endpointslices") is not None, within=20, what="a Service")
    service = owned("services")
    assert service is not None
    service["spec"]["selector"] = {"app": "someone-else"}
    await emulator.put_object(SERVICE_KIND, service)
    endpoints = owned("endpointslices")
    assert endpoints is not None
    endpoints["endpoints"] = [{"addresses": ["192.0.2.99"], "conditions": {"ready": True}}]
    await emulator.put_object(SLICE_KIND, endpoints)
    await wait_for(
        lambda: (
            not (owned("services") or {}).get("spec", {}).get("selector")
            and (owned("endpointslices") or {}).get("endpoints", [{}])[0].get("addresses")
            != ["192.0.2.99"]
        ),
        within=20,
        what="the edited Service and EndpointSlice to be repaired",
    )
    emulator.interfere("httproutes", *shared, times=1)
    await east.pools.put(dataclasses.replace(east.pools.snapshot()[shared], export=None))
    await wait_for(
        lambda: owned("services") is None and owned("endpointslices") is None,
        within=20,
        what="the withdrawn backend's Service and slice to be deleted",
    )
    assert emulator.object_at("inferencepoolimports", *shared) is not None
    assert west.built.feeds["gateway-api"].counts["route_conflicts"] >= 1


@pytest.mark.e2e
async def test_rbac_grants_exactly_what_the_agent_uses(
    supercluster: Supercluster, clusterset: str
) -> None:
    demo = await Demo.start(DemoOptions(clusters=2, pools=4, clusterset=clusterset), supercluster)
    # us-east's first status write on each of its pools loses a race to a foreign writer (409,
    # then a fresh get), before any agent runs: every path that re-reads is taken.
    for key in demo.clusters["us-east"].pools.snapshot():
        demo.clusters["us-east"].apiserver.emulator.interfere("inferencepools", *key, times=1)
    await demo.start_agents()
    try:
        await demo.wait_converged(within=30)
        east, west = demo.clusters["us-east"], demo.clusters["eu-west"]
        # A pool only us-east exports: withdrawing it deletes the import in both clusters, and
        # in eu-west the delete first loses a race to a foreign writer (409, then a fresh get).
        truth = demo.truth()["eu-west"]
        key = next(k for k, (clusters, _) in truth.items() if clusters == ("us-east",))
        # Its EPP fails: the backend stops serving, which the coalesced annotation writes at once.
        east.load.fail(key, EppFault(status=503))
        await wait_for(
            lambda: west.kube is not None and west.kube.counts["weights_writes"] >= 1,
            within=20,
            what="a weights annotation patch",
        )
        west.apiserver.emulator.interfere("inferencepoolimports", *key, times=1)
        await east.pools.put(dataclasses.replace(east.pools.snapshot()[key], export=None))
        await wait_for(
            lambda: west.apiserver.emulator.object_at("inferencepoolimports", *key) is None,
            within=20,
            what="the withdrawn import to be deleted",
        )
        await exercise_the_gateway_api_feed(east, west)
        assert west.kube is not None
        assert west.kube.counts["conflicts"] >= 1
        assert east.kube is not None
        assert east.kube.counts["conflicts"] >= 1
        used = set().union(*(c.apiserver.emulator.verbs_used for c in demo.clusters.values()))
    finally:
        await demo.stop()
    assert used <= granted(), f"the agent used what RBAC does not grant: {used - granted()}"
    assert granted() <= used, f"RBAC grants what the agent never uses: {granted() - used}"
    assert isinstance(key, PoolKey)
