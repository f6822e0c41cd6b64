"""The Gateway API feed through kubernetes-asyncio: Services, EndpointSlices and route weights.

Remote backends become selector-less Services with EndpointSlices owned by the import; marked
HTTPRoutes get the import's weights in the rules that send to it; what the agent does not own
is never touched; its own fields are repaired after a user's edit; API races are retried.
Addresses are from TEST-NET-1 (192.0.2.0/24): documentation addresses, never dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from federation.adapters.kube import ENDPOINT_SLICES, HTTPROUTES, IMPORTS, SERVICES
from federation.adapters.kube_cluster import KubeCluster
from federation.adapters.kube_gateway_api import GatewayApiFeed
from federation.messages import EndpointAddress, ParentGateway
from federation.model.conditions import Condition
from federation.model.imports import DesiredImport
from federation.model.pool_objects import POOL_GROUP
from federation.model.pools import PoolKey
from federation.model.route_weights import ROUTE_CONTROLLER_ANNOTATION, ROUTE_LABEL
from federation.model.status_objects import DEFAULT_CONTROLLER
from federation.model.views import ImportView
from federation.model.weights import BackendWeight
from tests.conftest import wait_for
from tests.kube.conftest import ApiUnderTest, Emulated
from tests.model.factories import export

HERE = "here"
POOL = "llama"


def import_view(
    ns: str, weights: Mapping[str, int], hosts: Mapping[str, list[str]], *, port: int = 8080
) -> ImportView:
    """An import of ``POOL`` exported by ``weights``' clusters (``HERE`` among them: local)."""
    clusters = tuple(sorted(weights))
    exports = tuple(
        export(
            c,
            POOL,
            namespace=ns,
            parents=(
                ParentGateway(
                    namespace=ns,
                    name="gw",
                    addresses=tuple(EndpointAddress(host=h, port=port) for h in hosts.get(c, [])),
                ),
            ),
        )
        for c in clusters
    )
    desired = DesiredImport(PoolKey(ns, POOL), clusters, exports=exports)
    accepted = Condition("Accepted", "True", "Accepted", "ok")
    return ImportView(
        desired, {c: BackendWeight(w, "test") for c, w in weights.items()}, (accepted,)
    )


def route(ns: str, name: str = "chat", **extra_meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": HTTPROUTES.api_version,
        "kind": "HTTPRoute",
        "metadata": {"namespace": ns, "name": name, "labels": {ROUTE_LABEL: "true"}, **extra_meta},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                    "timeouts": {"request": "30s"},
                    "backendRefs": [
                        {"group": POOL_GROUP, "kind": "InferencePool", "name": POOL, "port": 8000}
                    ],
                },
                {"backendRefs": [{"name": "docs", "port": 80}]},  # not an import: never touched
            ],
        },
    }


class Rig:
    def __init__(self, api: ApiUnderTest, cluster: KubeCluster, feed: GatewayApiFeed) -> None:
        self.api, self.cluster, self.feed = api, cluster, feed
        self.ns = api.namespace

    async def apply(self, *views: ImportView) -> None:
        by_key = {v.key: v for v in views}
        await self.cluster.apply(by_key)
        await self.feed.apply(by_key)

    async def get(self, r: Any, name: str) -> dict[str, Any] | None:
        return await self.api.get(r, self.ns, name)

    async def refs(self, name: str = "chat") -> list[dict[str, Any]]:
        obj = await self.get(HTTPROUTES, name)
        assert obj is not None
        refs: list[dict[str, Any]] = obj["spec"]["rules"][0]["backendRefs"]
        return refs


@contextlib.asynccontextmanager
async def rig(api: ApiUnderTest, **kube: Any) -> AsyncIterator[Rig]:
    """The import writer and the feed over ``api``; the weights annotation (which the routes
    follow) is written on every change unless told otherwise."""
    kube = {"annotation_interval": 0, "annotation_threshold": 1} | kube
    cluster = KubeCluster(await api.kube(), **kube)
    feed = GatewayApiFeed(cluster, own_cluster=HERE, controller=DEFAULT_CONTROLLER)
    tasks = [asyncio.create_task(cluster.run()), asyncio.create_task(feed.run())]
    try:
        async with asyncio.timeout(10):
            await cluster.wait_synced()
            await feed.slices.synced.wait()
        yield Rig(api, cluster, feed)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t


async def test_remote_backends_become_services_and_slices_owned_by_the_import(
    api: ApiUnderTest,
) -> None:
    ns = api.namespace
    async with rig(api) as r:
        await r.apply(import_view(ns, {"east": 600_000, "west": 400_000}, {
            "east": ["192.0.2.10", "192.0.2.11"], "west": ["192.0.2.20"],
        }))  # fmt: skip
        imported = await r.get(IMPORTS, POOL)
        assert imported is not None
        for cluster, hosts in (("east", ["192.0.2.10", "192.0.2.11"]), ("west", ["192.0.2.20"])):
            name = f"{POOL}-fed-{cluster}"
            service = await r.get(SERVICES, name)
            assert service is not None
            assert "selector" not in service["spec"]
            assert [p["port"] for p in service["spec"]["ports"]] == [8080]
            (owner,) = service["metadata"]["ownerReferences"]
            assert owner["uid"] == imported["metadata"]["uid"]
            assert owner["kind"] == "InferencePoolImport"
            assert owner["controller"] is True
            endpoints = await r.get(ENDPOINT_SLICES, name)
            assert endpoints is not None
            assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == name
            assert endpoints["addressType"] == "IPv4"
            assert [e["addresses"][0] for e in endpoints["endpoints"]] == hosts
        # west stops exporting: its Service and slice go; east's stay.
        await r.apply(import_view(ns, {"east": 1_000_000}, {"east": ["192.0.2.10"]}))
        assert await r.get(SERVICES, f"{POOL}-fed-west") is None
        assert await r.get(ENDPOINT_SLICES, f"{POOL}-fed-west") is None
        slice_east = await r.get(ENDPOINT_SLICES, f"{POOL}-fed-east")
        assert slice_east is not None
        assert [e["addresses"] for e in slice_east["endpoints"]] == [["192.0.2.10"]]


async def test_a_marked_route_gets_the_import_weights_and_keeps_the_rest(
    api: ApiUnderTest,
) -> None:
    ns = api.namespace
    await api.put(HTTPROUTES, route(ns))
    async with rig(api) as r:
        view = import_view(ns, {HERE: 700_000, "east": 300_000, "west": 0}, {
            "east": ["192.0.2.10"], "west": ["192.0.2.20"],
        })  # fmt: skip
        await r.apply(view)
        obj = await r.get(HTTPROUTES, "chat")
        assert obj is not None
        rule, other = obj["spec"]["rules"]
        assert rule["backendRefs"] == [
            {"group": POOL_GROUP, "kind": "InferencePool", "name": POOL, "port": 8000,
             "weight": 700_000},
            {"group": "", "kind": "Service", "name": f"{POOL}-fed-east", "port": 8080,
             "weight": 300_000},
            {"group": "", "kind": "Service", "name": f"{POOL}-fed-west", "port": 8080,
             "weight": 0},  # a drain, not a removal
        ]  # fmt: skip
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v1"}}]
        assert rule["timeouts"] == {"request": "30s"}
        assert other == {"backendRefs": [{"name": "docs", "port": 80}]}
        assert r.feed.routes[f"{ns}/chat"].startswith("managed")
        # The weights equal the import's: same backends, same integers.
        by_backend = {"here" if b["kind"] == "InferencePool" else b["name"]: b["weight"]
                      for b in rule["backendRefs"]}  # fmt: skip
        assert by_backend == {HERE: 700_000, f"{POOL}-fed-east": 300_000, f"{POOL}-fed-west": 0}


async def test_a_user_edit_of_a_weight_is_repaired_and_a_field_we_do_not_own_is_kept(
    api: ApiUnderTest,
) -> None:
    ns = api.namespace
    await api.put(HTTPROUTES, route(ns))
    # The production coalescing: a user's edit is drift, repaired at once however small.
    async with rig(api, annotation_interval=10, annotation_threshold=50_000) as r:
        await r.apply(import_view(ns, {HERE: 500_000, "east": 500_000}, {"east": ["192.0.2.10"]}))
        edited = await r.get(HTTPROUTES, "chat")
        assert edited is not None
        edited = copy.deepcopy(edited)
        edited["spec"]["rules"][0]["backendRefs"][1]["weight"] = 499_999  # ours: repaired
        edited["spec"]["rules"][0]["timeouts"] = {"request": "90s"}  # the user's: kept
        edited["metadata"].pop("resourceVersion", None)
        await api.put(HTTPROUTES, edited)

        async def repaired() -> bool:
            refs = await r.refs()
            return refs[1]["weight"] == 500_000

        await wait_for(repaired, within=10, what="the edited weight to be repaired")
        obj = await r.get(HTTPROUTES, "chat")
        assert obj is not None
        assert obj["spec"]["rules"][0]["timeouts"] == {"request": "90s"}
        # A user who removes the label takes the route back: edits stay.
        released = copy.deepcopy(obj)
        released["metadata"]["labels"] = {}
        released["spec"]["rules"][0]["backendRefs"][0]["weight"] = 3
        released["metadata"].pop("resourceVersion", None)
        writes = r.feed.counts["route_writes"]
        await api.put(HTTPROUTES, released)
        await wait_for(lambda: f"{ns}/chat" not in r.feed.routes, within=10, what="release")
        await r.apply(import_view(ns, {HERE: 0, "east": 1_000_000}, {"east": ["192.0.2.10"]}))
        assert (await r.refs())[0]["weight"] == 3
        assert r.feed.counts["route_writes"] == writes


async def test_a_route_with_a_foreign_backend_or_another_controller_is_left_alone(
    api: ApiUnderTest,
) -> None:
    ns = api.namespace
    foreign = route(ns, "foreign")
    foreign["spec"]["rules"][0]["backendRefs"].append({"name": "my-own-svc", "port": 80})
    other = route(ns, "other", annotations={ROUTE_CONTROLLER_ANNOTATION: "example.com/else"})
    await api.put(HTTPROUTES, foreign)
    await api.put(HTTPROUTES, other)
    async with rig(api) as r:
        await r.apply(import_view(ns, {HERE: 500_000, "east": 500_000}, {"east": ["192.0.2.10"]}))
        for name, reason in (("foreign", "ForeignBackendRef"), ("other", "OtherController")):
            obj = await r.get(HTTPROUTES, name)
            assert obj is not None
            sent = foreign if name == "foreign" else other
            assert obj["spec"]["rules"] == sent["spec"]["rules"], f"{name} was touched"
            assert r.feed.routes[f"{ns}/{name}"].startswith(f"refused: {reason}")
        notes = r.feed.notes()
        assert notes["routes_refused"] == 2


async def test_objects_it_does_not_own_are_never_touched(api: ApiUnderTest) -> None:
    ns = api.namespace
    theirs = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": ns, "name": f"{POOL}-fed-east"},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 1234}]},
    }
    await api.put(SERVICES, theirs)
    await api.put(HTTPROUTES, route(ns))
    async with rig(api) as r:
        await r.apply(import_view(ns, {HERE: 500_000, "east": 500_000}, {"east": ["192.0.2.10"]}))
        kept = await r.get(SERVICES, f"{POOL}-fed-east")
        assert kept is not None
        assert kept["spec"]["selector"] == {"app": "theirs"}
        assert "ownerReferences" not in kept["metadata"]
        assert await r.get(ENDPOINT_SLICES, f"{POOL}-fed-east") is None
        assert "not ours" in r.feed.left_out[f"{ns}/{POOL} east"]
        # The route names only what is ours: the pool (east has no Service of ours).
        assert [b["name"] for b in await r.refs()] == [POOL]
        # And the import going away deletes nothing of theirs.
        await r.apply()
        assert await r.get(SERVICES, f"{POOL}-fed-east") is not None


async def test_hostile_addresses_are_refused_and_reported(api: ApiUnderTest) -> None:
    ns = api.namespace
    async with rig(api) as r:
        await r.apply(import_view(ns, {"east": 500_000, "west": 500_000, "north": 1}, {
            "east": ["169.254.169.254", "0.0.0.0", "192.0.2.10"],
            "west": ["224.0.0.1", "fe80::1"],
            "north": [],
        }))  # fmt: skip
        east = await r.get(ENDPOINT_SLICES, f"{POOL}-fed-east")
        assert east is not None
        assert [e["addresses"] for e in east["endpoints"]] == [["192.0.2.10"]]
        assert "169.254.169.254" in r.feed.left_out[f"{ns}/{POOL} east"]
        assert await r.get(SERVICES, f"{POOL}-fed-west") is None
        assert "refused" in r.feed.left_out[f"{ns}/{POOL} west"]
        assert r.feed.left_out[f"{ns}/{POOL} north"] == "no parent Gateway address"


async def test_deleting_the_import_collects_its_services(emulator: Emulated) -> None:
    """ownerReferences at work: the (emulated) garbage collector removes them with the import."""
    ns = "llm"
    async with rig(emulator) as r:
        await r.apply(import_view(ns, {"east": 1_000_000}, {"east": ["192.0.2.10"]}))
        assert emulator.emulator.object_at("services", ns, f"{POOL}-fed-east") is not None
        await emulator.delete(IMPORTS, ns, POOL)
        assert emulator.emulator.object_at("services", ns, f"{POOL}-fed-east") is None
        assert emulator.emulator.object_at("endpointslices", ns, f"{POOL}-fed-east") is None


async def test_a_route_write_that_loses_a_race_is_recomputed_and_retried(
    emulator: Emulated,
) -> None:
    ns = "llm"
    await emulator.put(HTTPROUTES, route(ns))
    emulator.emulator.interfere("httproutes", ns, "chat", times=2)
    async with rig(emulator) as r:
        await r.apply(import_view(ns, {HERE: 250_000, "east": 750_000}, {"east": ["192.0.2.10"]}))
        assert [b["weight"] for b in await r.refs()] == [250_000, 750_000]
        assert r.feed.counts["route_conflicts"] == 2
        obj = await r.get(HTTPROUTES, "chat")
        assert obj is not None
        assert obj["metadata"]["annotations"]["emulator.test/foreign-writes"] == "2"


async def test_a_failed_delete_is_retried_by_the_next_apply(emulator: Emulated) -> None:
    ns = "llm"
    async with rig(emulator) as r:
        await r.apply(import_view(ns, {HERE: 1, "east": 1}, {"east": ["192.0.2.10"]}))
        emulator.emulator.interfere("services", ns, f"{POOL}-fed-east", times=1)
        with pytest.raises(RuntimeError, match="failed"):  # and the feed retries
            await r.feed.apply({})

        async def gone() -> bool:
            return await r.get(SERVICES, f"{POOL}-fed-east") is None

        await wait_for(gone, within=10, what="the Service deleted on a later round")


async def test_a_restarted_agent_adopts_what_it_wrote_without_rewriting(api: ApiUnderTest) -> None:
    """Adoption: a new feed over objects and routes a previous one wrote writes nothing."""
    ns = api.namespace
    await api.put(HTTPROUTES, route(ns))
    view = import_view(ns, {HERE: 400_000, "east": 600_000}, {"east": ["192.0.2.10"]})
    async with rig(api) as first:
        await first.apply(view)
        assert first.feed.counts["route_writes"] == 1
        written = await first.refs()
    async with rig(api) as second:
        await second.apply(view)
        assert await second.refs() == written
        writes = {k: v for k, v in second.feed.counts.items() if k != "backends_left_out"}
        assert writes == {}, writes
        assert second.feed.routes[f"{ns}/chat"].startswith("managed")


async def test_a_route_is_put_back_to_its_pool_when_the_import_goes(emulator: Emulated) -> None:
    """The import's Services go with it (garbage collector): the rule must not keep sending a
    share to them, so it is back to the pool ref alone, without our weight."""
    ns = "llm"
    await emulator.put(HTTPROUTES, route(ns))
    async with rig(emulator) as r:
        await r.apply(import_view(ns, {HERE: 300_000, "east": 700_000}, {"east": ["192.0.2.10"]}))
        assert [b["name"] for b in await r.refs()] == [POOL, f"{POOL}-fed-east"]
        await r.apply()  # the last exporter withdrew: the import is deleted, and its Services
        assert await r.refs() == [
            {"group": POOL_GROUP, "kind": "InferencePool", "name": POOL, "port": 8000}
        ]
        assert emulator.emulator.object_at("services", ns, f"{POOL}-fed-east") is None
