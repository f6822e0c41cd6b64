"""The kube adapter through kubernetes-asyncio: pools in, imports and export status out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from federation.adapters import kube_client
from federation.adapters.kube import GATEWAYS, HTTPROUTES, IMPORTS, POOLS, SERVICES
from federation.adapters.kube_cluster import KubeCluster
from federation.model.conditions import Condition
from federation.model.imports import Conflict, DesiredImport
from federation.model.pools import PoolKey
from federation.model.status_objects import DEFAULT_CONTROLLER
from federation.model.views import WEIGHTS_ANNOTATION, ImportView
from federation.model.weights import BackendWeight
from tests.conftest import wait_for
from tests.kube.conftest import ApiUnderTest, Emulated

OTHER = "example.com/other-controller"


def pool_obj(ns: str, name: str, **annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns, "name": name, "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "targetPorts": [{"number": 8000}],
            "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}},
        },
    }


def service_obj(
    ns: str, name: str, cluster_ip: str = "10.0.0.7", lb: str | None = None
) -> dict[str, Any]:
    status = {"loadBalancer": {"ingress": [{"ip": lb}]}} if lb else {}
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"clusterIP": cluster_ip, "ports": [{"port": 9002}]},
        "status": status,
    }


def view(
    key: PoolKey, clusters: tuple[str, ...], *, excluded: tuple[Conflict, ...] = ()
) -> ImportView:
    desired = DesiredImport(key=key, exporting_clusters=clusters, excluded=excluded)
    conditions = (
        Condition("Accepted", "True", "Accepted", "all exporting clusters are compatible"),
    )
    weights = {c: BackendWeight(100 // len(clusters), "test") for c in clusters}
    return ImportView(desired, weights, conditions)


@contextlib.asynccontextmanager
async def running(api: ApiUnderTest, **kw: Any) -> AsyncIterator[KubeCluster]:
    cluster = KubeCluster(await api.kube(), **kw)
    task = asyncio.create_task(cluster.run())
    try:
        async with asyncio.timeout(10):
            await cluster.wait_synced()
        yield cluster
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_pools(watch: AsyncIterator[Any], predicate: Any, within: float = 10) -> Any:
    async with asyncio.timeout(within):
        async for pools in watch:
            if predicate(pools):
                return pools
    raise AssertionError("watch ended")


# --- pools in -------------------------------------------------------------------------------


async def test_watch_resolves_epp_and_follows_annotation_changes(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "llama")
    await api.put(SERVICES, service_obj(ns, "llama-epp", cluster_ip="10.0.0.7"))
    await api.put(POOLS, pool_obj(ns, "llama"))
    async with running(api) as cluster:
        watch = cluster.watch()
        pools = await next_pools(watch, lambda p: key in p)
        pool = pools[key]
        assert pool.export is None
        assert pool.invalid is None
        assert (pool.epp.host, pool.epp.port) == ("10.0.0.7", 9002)
        assert pool.metrics_url == "http://10.0.0.7:9090/metrics"
        assert pool.target_ports == (8000,)

        # annotation added → exported; LoadBalancer ingress preferred over the ClusterIP
        await api.put(SERVICES, service_obj(ns, "llama-epp", lb="203.0.113.9"))
        await api.put(
            POOLS, pool_obj(ns, "llama", **{"inference.networking.x-k8s.io/export": "ClusterSet"})
        )
        pools = await next_pools(
            watch, lambda p: p[key].export == "ClusterSet" and p[key].epp.host == "203.0.113.9"
        )
        # annotation changed to an unsupported value, then removed
        await api.put(
            POOLS, pool_obj(ns, "llama", **{"inference.networking.x-k8s.io/export": "Everywhere"})
        )
        await next_pools(watch, lambda p: p[key].export == "Everywhere")
        obj = pool_obj(ns, "llama")
        obj["metadata"]["annotations"] = {}
        await api.put(POOLS, obj)
        await next_pools(watch, lambda p: p[key].export is None)
        # pool deleted
        await api.delete(POOLS, ns, "llama")
        await next_pools(watch, lambda p: key not in p)


async def test_parent_gateways_come_from_httproutes(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "llama")
    await api.put(SERVICES, service_obj(ns, "llama-epp"))
    await api.put(POOLS, pool_obj(ns, "llama"))
    await api.put(
        GATEWAYS,
        {
            "metadata": {"namespace": ns, "name": "inference-gw"},
            "spec": {
                "gatewayClassName": "x",
                "listeners": [{"name": "h", "port": 8443, "protocol": "HTTPS"}],
            },
            "status": {"addresses": [{"type": "IPAddress", "value": "198.51.100.4"}]},
        },
    )
    await api.put(
        HTTPROUTES,
        {
            "metadata": {"namespace": ns, "name": "llm-route"},
            "spec": {
                "parentRefs": [{"name": "inference-gw"}],
                "rules": [
                    {
                        "backendRefs": [
                            {
                                "group": "inference.networking.k8s.io",
                                "kind": "InferencePool",
                                "name": "llama",
                            }
                        ]
                    }
                ],
            },
        },
    )
    async with running(api) as cluster:
        pools = await next_pools(cluster.watch(), lambda p: key in p and p[key].parents)
        (parent,) = pools[key].parents
        assert (parent.namespace, parent.name) == (ns, "inference-gw")
        assert [(a.host, a.port) for a in parent.addresses] == [("198.51.100.4", 8443)]


async def test_watch_lists_again_after_410_gone(emulator: Emulated) -> None:
    key = PoolKey("llm", "late")
    async with running(emulator) as cluster:
        watch = cluster.watch()
        await next_pools(watch, lambda p: True)
        # The API server goes away; meanwhile a pool is added and the history compacted, so
        # resuming from the version the informer holds answers 410 Gone.
        await emulator.emulator.drop_watches(hold=True)
        await emulator.put(POOLS, pool_obj("llm", "late"))
        emulator.emulator.compact()
        emulator.emulator.resume_watches()
        await next_pools(watch, lambda p: key in p)
        assert cluster.pools.relists >= 1


async def test_watch_survives_bookmarks_and_dropped_connections(emulator: Emulated) -> None:
    async with running(emulator) as cluster:
        watch = cluster.watch()
        await next_pools(watch, lambda p: True)
        await emulator.emulator.drop_watches()  # no compaction: resume from the version held
        await emulator.put(POOLS, pool_obj("llm", "a"))
        await next_pools(watch, lambda p: PoolKey("llm", "a") in p)
        assert cluster.pools.relists == 0


# --- imports out ------------------------------------------------------------------------------


async def test_imports_created_updated_and_deleted(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "llama")
    async with running(api) as cluster:
        await cluster.apply({key: view(key, ("eu-west", "us-east"))})
        obj = await api.get(IMPORTS, ns, "llama")
        assert obj is not None
        (entry,) = obj["status"]["controllers"]
        assert entry["name"] == DEFAULT_CONTROLLER
        assert entry["exportingClusters"] == [{"name": "eu-west"}, {"name": "us-east"}]
        assert entry["conditions"][0]["type"] == "Accepted"
        assert WEIGHTS_ANNOTATION in obj["metadata"]["annotations"]
        writes = dict(cluster.counts)

        await cluster.apply({key: view(key, ("eu-west", "us-east"))})  # same views: no write
        assert dict(cluster.counts) == writes

        await cluster.apply({key: view(key, ("us-east",))})
        obj = await api.get(IMPORTS, ns, "llama")
        assert obj is not None
        assert obj["status"]["controllers"][0]["exportingClusters"] == [{"name": "us-east"}]

        await cluster.apply({})  # the last exporter went
        assert await api.get(IMPORTS, ns, "llama") is None


async def test_other_controllers_entries_are_kept(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "shared")
    other = {"name": OTHER, "exportingClusters": [{"name": "far"}], "conditions": []}
    await api.put(
        IMPORTS,
        {"metadata": {"namespace": ns, "name": "shared"}, "status": {"controllers": [other]}},
    )
    async with running(api) as cluster:
        await cluster.apply({key: view(key, ("eu-west",))})
        obj = await api.get(IMPORTS, ns, "shared")
        assert obj is not None
        names = [e["name"] for e in obj["status"]["controllers"]]
        assert names == [OTHER, DEFAULT_CONTROLLER]
        await cluster.apply({})
        obj = await api.get(IMPORTS, ns, "shared")
        assert obj is not None, "another controller holds an entry: the object stays"
        assert obj["status"]["controllers"] == [other]


async def test_status_write_retries_on_409(emulator: Emulated) -> None:
    key = PoolKey("llm", "raced")
    async with running(emulator) as cluster:
        await cluster.apply({key: view(key, ("a",))})
        emulator.emulator.interfere("inferencepoolimports", "llm", "raced", times=2)
        await cluster.apply({key: view(key, ("a", "b"))})
        obj = emulator.emulator.object_at("inferencepoolimports", "llm", "raced")
        assert obj is not None
        assert obj["status"]["controllers"][0]["exportingClusters"] == [
            {"name": "a"},
            {"name": "b"},
        ]
        assert cluster.counts["conflicts"] == 2
        assert obj["metadata"]["annotations"]["emulator.test/foreign-writes"] == "2"


async def test_restart_adopts_fixes_drift_and_deletes_orphans(api: ApiUnderTest) -> None:
    ns = api.namespace
    keep, drifted, orphan = (PoolKey(ns, n) for n in ("keep", "drifted", "orphan"))
    async with running(api) as first:
        await first.apply({k: view(k, ("a",)) for k in (keep, drifted, orphan)})
        created = first.counts["imports_created"]
        assert created == 3
    kept_before = await api.get(IMPORTS, ns, "keep")
    # While no agent runs, someone edits our entry on one import.
    obj = await api.get(IMPORTS, ns, "drifted")
    assert obj is not None
    obj["status"]["controllers"][0]["exportingClusters"] = [{"name": "intruder"}]
    await api.put(IMPORTS, obj)

    async with running(api) as second:  # the restarted agent: orphan no longer desired
        await second.apply({k: view(k, ("a",)) for k in (keep, drifted)})
        assert second.counts["imports_created"] == 0, "existing imports are adopted"
        assert await api.get(IMPORTS, ns, "orphan") is None
        fixed = await api.get(IMPORTS, ns, "drifted")
        assert fixed is not None
        assert fixed["status"]["controllers"][0]["exportingClusters"] == [{"name": "a"}]
        kept_after = await api.get(IMPORTS, ns, "keep")
        assert kept_before is not None
        assert kept_after is not None
        assert kept_after["metadata"]["uid"] == kept_before["metadata"]["uid"]
        assert (
            kept_after["metadata"]["resourceVersion"] == kept_before["metadata"]["resourceVersion"]
        )


async def test_drift_while_running_is_repaired(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "llama")
    async with running(api) as cluster:
        await cluster.apply({key: view(key, ("a",))})
        obj = await api.get(IMPORTS, ns, "llama")
        assert obj is not None
        obj["status"]["controllers"][0]["exportingClusters"] = []
        await api.put(IMPORTS, obj)

        async def repaired() -> bool:
            got = await api.get(IMPORTS, ns, "llama")
            return got is not None and got["status"]["controllers"][0]["exportingClusters"] == [
                {"name": "a"}
            ]

        await wait_for(repaired, within=10, what="the drifted entry to be repaired")


async def test_missing_namespace_creates_nothing_and_says_so(api: ApiUnderTest) -> None:
    ns = api.namespace
    good, ghost = PoolKey(ns, "llama"), PoolKey(f"{ns}-absent", "llama")
    async with running(api) as cluster:
        await cluster.apply({good: view(good, ("a",)), ghost: view(ghost, ("a",))})
        assert cluster.refused == {ghost: "NamespaceMissing"}
        assert cluster.counts["namespace_missing"] == 1
        assert await api.get(IMPORTS, ns, "llama") is not None
        await cluster.apply({good: view(good, ("a",)), ghost: view(ghost, ("a",))})
        assert cluster.counts["namespace_missing"] == 1, "said once, not on every cycle"


# --- export status out --------------------------------------------------------------------------


async def test_exported_condition_written_kept_apart_and_removed(api: ApiUnderTest) -> None:
    ns = api.namespace
    key = PoolKey(ns, "llama")
    gateway_entry = {
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
        "controllerName": "example.com/gateway",
        "conditions": [],
    }
    obj = pool_obj(ns, "llama", **{"inference.networking.x-k8s.io/export": "ClusterSet"})
    obj["status"] = {"parents": [gateway_entry]}
    await api.put(POOLS, obj)
    async with running(api) as cluster:
        pending = Condition("Exported", "False", "Pending", "waiting for b")
        await cluster.apply_export_status({key: pending})
        got = await api.get(POOLS, ns, "llama")
        assert got is not None
        gateway, ours = got["status"]["parents"]
        assert gateway == gateway_entry
        assert ours["parentRef"] == {
            "group": "inference.networking.x-k8s.io",
            "kind": "InferencePoolImport",
            "namespace": ns,
            "name": "llama",
        }
        assert ours["controllerName"] == DEFAULT_CONTROLLER
        (cond,) = ours["conditions"]
        assert (cond["type"], cond["status"], cond["reason"]) == ("Exported", "False", "Pending")

        done = Condition("Exported", "True", "Exported", "accepted by every live member")
        await cluster.apply_export_status({key: done})
        got = await api.get(POOLS, ns, "llama")
        assert got is not None
        assert got["status"]["parents"][1]["conditions"][0]["status"] == "True"

        await cluster.apply_export_status({key: None})  # the annotation went
        got = await api.get(POOLS, ns, "llama")
        assert got is not None
        assert got["status"]["parents"] == [gateway_entry]


def weighted(key: PoolKey, weights: dict[str, int]) -> ImportView:
    base = view(key, tuple(sorted(weights)))
    return ImportView(
        base.desired, {c: BackendWeight(w, "test") for c, w in weights.items()}, base.conditions
    )


async def test_weights_annotation_writes_are_coalesced(api: ApiUnderTest) -> None:
    key = PoolKey(api.namespace, "llama")
    async with running(api, annotation_interval=1.0, annotation_threshold=50_000) as cluster:
        await cluster.apply({key: weighted(key, {"a": 600_000, "b": 400_000})})
        assert cluster.counts["weights_writes"] == 0  # the annotation came with the object
        for step in range(1, 20):  # smoothing steps below the threshold: no write at all
            w = 600_000 + step * 1_000
            await cluster.apply({key: weighted(key, {"a": w, "b": 1_000_000 - w})})
        assert cluster.counts["weights_writes"] == 0
        await cluster.apply({key: weighted(key, {"a": 800_000, "b": 200_000})})
        assert cluster.counts["weights_writes"] == 0  # a big move, but within the interval
        assert cluster.counts["weights_writes_deferred"] >= 1

        async def annotated(expected: str, writes: int) -> bool:
            # The API holds the patch before the writer's task resumes to count it: both.
            obj = await api.get(IMPORTS, key.namespace, key.name)
            held = obj["metadata"]["annotations"].get(WEIGHTS_ANNOTATION)
            return held == expected and cluster.counts["weights_writes"] >= writes

        # Written when it comes due, though nothing else happened.
        await wait_for(lambda: annotated('{"a":800000,"b":200000}', 1), within=5, what="due write")
        assert cluster.counts["weights_writes"] == 1
        await cluster.apply({key: weighted(key, {"a": 1_000_000, "b": 0})})  # b stops serving
        assert cluster.counts["weights_writes"] == 1  # within the interval: deferred, then due
        await wait_for(lambda: annotated('{"a":1000000,"b":0}', 2), within=5, what="next write")
        assert cluster.counts["weights_writes"] == 2


def test_these_tests_run_the_agents_client_with_classes_imported_on_first_use() -> None:
    # The client the agent uses in production (``adapters.kube_client``), not the library's
    # eager one: a test module importing kubernetes_asyncio first would change that silently.
    assert kube_client.lazily_loaded(), (
        "kubernetes_asyncio was imported before federation.adapters.kube_client"
    )
