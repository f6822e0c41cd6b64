"""Bad pools in a live cluster: each gets a clear status reason, the agent keeps running, and
nothing else is disturbed (every other import stays as it should be)."""

from __future__ import annotations

from typing import Any

import pytest

from federation.kit.kube_kinds import POOL_KIND, SERVICE_KIND
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import DemoOptions
from federation.model.pools import EXPORT_ANNOTATION, PoolKey
from federation.model.status_objects import DEFAULT_CONTROLLER
from tests.conftest import running_demo, wait_for

pytestmark = pytest.mark.e2e

LONG = "p" * 253  # the longest legal InferencePool name


def raw_pool(name: str, spec: dict[str, Any], export: str = "ClusterSet") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "llm", "name": name, "annotations": {EXPORT_ANNOTATION: export}},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, **spec},
    }


EPP = {"endpointPickerRef": {"name": "shared-epp", "port": {"number": 9002}}}
PORTS = {"targetPorts": [{"number": 8000}]}
BAD = {
    "no-epp-ref": (raw_pool("no-epp-ref", PORTS), "InvalidPool"),
    "ghost-epp": (
        raw_pool(
            "ghost-epp", {**PORTS, "endpointPickerRef": {"name": "gone", "port": {"number": 1}}}
        ),
        "EndpointPickerUnresolved",
    ),
    "absurd": (raw_pool("absurd", {**PORTS, **EPP}, export="☃" * 5000), "NotSupported"),
    "no-ports": (raw_pool("no-ports", {"targetPorts": [{"number": 0}], **EPP}), "InvalidPool"),
}


def exported_reason(obj: dict[str, Any] | None) -> str | None:
    for entry in ((obj or {}).get("status") or {}).get("parents") or []:
        if entry.get("controllerName") == DEFAULT_CONTROLLER:
            return str(entry["conditions"][0]["reason"])
    return None


async def test_bad_pools_get_reasons_and_disturb_nothing(
    supercluster: Supercluster, clusterset: str
) -> None:
    options = DemoOptions(clusters=2, pools=3, clusterset=clusterset)
    async with running_demo(options, supercluster) as demo:
        await demo.wait_converged(within=30)
        east, west = demo.clusters["us-east"], demo.clusters["eu-west"]
        emulator = east.apiserver.emulator
        await emulator.put_object(
            SERVICE_KIND,
            {
                "metadata": {"namespace": "llm", "name": "shared-epp"},
                "spec": {"clusterIP": "10.1.1.1"},
            },
        )
        for obj, _ in BAD.values():
            await emulator.put_object(POOL_KIND, obj)
        await emulator.put_object(POOL_KIND, raw_pool(LONG, {**PORTS, **EPP}))

        for name, (_, reason) in BAD.items():
            await wait_for(
                lambda name=name, reason=reason: (
                    exported_reason(  # type: ignore[misc]
                        emulator.object_at("inferencepools", "llm", name)
                    )
                    == reason
                ),
                within=20,
                what=f"{name}: Exported=False/{reason}",
            )
        # The pool with the longest legal name is exported and imported at the peer.
        await wait_for(
            lambda: (
                west.apiserver.emulator.object_at("inferencepoolimports", "llm", LONG) is not None
            ),
            within=20,
            what="the 253-character pool to be imported",
        )
        # Nothing else was disturbed: every import in both clusters is what the truth says,
        # none of the bad pools became an import anywhere, and both agents still run.
        await demo.wait_converged(within=20)
        assert demo.converged()
        for sim in (east, west):
            assert not set(BAD) & {k.name for k in sim.kube_imports()}
        demo.check_agents()
        assert all(s.task is not None and not s.task.done() for s in demo.clusters.values())
        assert PoolKey("llm", LONG) in west.kube_imports()
