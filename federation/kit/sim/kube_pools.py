"""A simulated cluster's InferencePools, kept as Kubernetes objects in its emulated API server.

The demo and the tests edit pools here the way a platform owner would with kubectl: an
InferencePool plus the Service of its Endpoint Picker. The agent sees them only through its
production kube adapter. ``snapshot()`` reads back what the API holds, so the demo's truth is
computed from the same objects the agent watches.
"""

from __future__ import annotations

from typing import Any

from federation.kit.kube_emulator import ApiEmulator
from federation.kit.kube_kinds import GATEWAY_KIND, POOL_KIND, ROUTE_KIND, SERVICE_KIND
from federation.model.pool_objects import (
    METRICS_URL_ANNOTATION,
    MODEL_ANNOTATION,
    POOL_GROUP,
    pool_from_object,
)
from federation.model.pools import EXPORT_ANNOTATION, LocalPool, PoolKey
from federation.model.route_weights import ROUTE_LABEL

EPP_PORT = 9002


def pool_objects(pool: LocalPool, cluster_ip: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The InferencePool and its EPP Service that describe ``pool``."""
    annotations = {}
    if pool.export is not None:
        annotations[EXPORT_ANNOTATION] = pool.export
    if pool.metrics_url:
        annotations[METRICS_URL_ANNOTATION] = pool.metrics_url
    if pool.model:
        annotations[MODEL_ANNOTATION] = pool.model
    epp = f"{pool.name}-epp"[:63].rstrip("-")
    inference_pool = {
        "metadata": {"namespace": pool.namespace, "name": pool.name, "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": pool.name[:63]}},
            "targetPorts": [{"number": p} for p in pool.target_ports],
            "appProtocol": pool.app_protocol,
            "endpointPickerRef": {"name": epp, "port": {"number": EPP_PORT}},
        },
    }
    service = {
        "metadata": {"namespace": pool.namespace, "name": epp},
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{"name": "grpc", "port": EPP_PORT}, {"name": "metrics", "port": 9090}],
        },
    }
    return inference_pool, service


GATEWAY_NAME = "gateway"  # client-facing: its routes are marked for weights (they spill)
EASTWEST_NAME = "eastwest"  # where peers forward to: its routes serve the pool here, only


def gateway(namespace: str, name: str, port: int) -> dict[str, Any]:
    """A Gateway listening on 127.0.0.1:``port`` (its status says so, as a controller would)."""
    return {
        "metadata": {"namespace": namespace, "name": name},
        "spec": {
            "gatewayClassName": "haproxy",
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
        },
        "status": {"addresses": [{"type": "IPAddress", "value": "127.0.0.1"}]},
    }


def route_to(key: PoolKey, name: str, parent: str, *, marked: bool) -> dict[str, Any]:
    """An HTTPRoute on Gateway ``parent`` sending to the pool ``key``; ``marked``: for weights."""
    labels = {ROUTE_LABEL: "true"} if marked else {}
    return {
        "metadata": {"namespace": key.namespace, "name": name, "labels": labels},
        "spec": {
            "parentRefs": [{"name": parent}],
            "rules": [
                {"backendRefs": [{"group": POOL_GROUP, "kind": "InferencePool", "name": key.name}]}
            ],
        },
    }


class EmulatedPools:
    def __init__(self, emulator: ApiEmulator, index: int) -> None:
        self.emulator = emulator
        self._index = index  # the cluster's number: ClusterIPs differ between clusters
        self._ips: dict[PoolKey, str] = {}

    def _ip(self, key: PoolKey) -> str:
        if key not in self._ips:
            n = len(self._ips) + 1
            self._ips[key] = f"10.{96 + self._index}.{n // 250}.{n % 250 + 1}"
        return self._ips[key]

    async def put(self, pool: LocalPool, gateway_port: int | None = None) -> None:
        """The pool, its EPP Service, and with ``gateway_port`` the east-west Gateway on that
        port and an (unmarked) HTTPRoute from it to the pool: the pool's parent, which peers
        forward to."""
        self.emulator.add_namespace(pool.namespace)
        inference_pool, service = pool_objects(pool, self._ip(pool.key))
        await self.emulator.put_object(SERVICE_KIND, service)
        if gateway_port is not None:
            ns = pool.namespace
            await self.emulator.put_object(GATEWAY_KIND, gateway(ns, EASTWEST_NAME, gateway_port))
            route = route_to(pool.key, f"{pool.name}-eastwest", EASTWEST_NAME, marked=False)
            await self.emulator.put_object(ROUTE_KIND, route)
        await self.emulator.put_object(POOL_KIND, inference_pool)

    async def put_route(self, key: PoolKey, client_port: int) -> None:
        """The client-facing Gateway (on ``client_port``) and a route to ``key`` marked for
        weights: the Gateway API feed keeps its backendRefs equal to the import's weights."""
        self.emulator.add_namespace(key.namespace)
        await self.emulator.put_object(
            GATEWAY_KIND, gateway(key.namespace, GATEWAY_NAME, client_port)
        )
        if self.emulator.object_at(ROUTE_KIND.plural, *key) is None:
            await self.emulator.put_object(
                ROUTE_KIND, route_to(key, key.name, GATEWAY_NAME, marked=True)
            )

    async def remove(self, key: PoolKey) -> None:
        await self.emulator.delete_object(POOL_KIND, key.namespace, key.name)

    def snapshot(self) -> dict[PoolKey, LocalPool]:
        def index(kind: str) -> dict[PoolKey, dict[str, Any]]:
            return {
                PoolKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
                for o in self.emulator.objects(kind)
            }

        services, gateways = index(SERVICE_KIND.plural), index(GATEWAY_KIND.plural)
        routes = list(self.emulator.objects(ROUTE_KIND.plural))
        pools = (
            pool_from_object(o, services, routes, gateways)
            for o in self.emulator.objects(POOL_KIND.plural)
        )
        return {p.key: p for p in pools}
