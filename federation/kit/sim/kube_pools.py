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


GATEWAY_NAME = "gateway"


def gateway_objects(key: PoolKey, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Gateway (on 127.0.0.1:``port``) and the HTTPRoute that send to the pool ``key``.

    The route is marked for the Gateway API feed: where ``key`` is imported, the agent keeps its
    backendRefs equal to the import's weights.
    """
    gateway = {
        "metadata": {"namespace": key.namespace, "name": GATEWAY_NAME},
        "spec": {
            "gatewayClassName": "haproxy",
            "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
        },
        "status": {"addresses": [{"type": "IPAddress", "value": "127.0.0.1"}]},
    }
    route = {
        "metadata": {
            "namespace": key.namespace,
            "name": key.name,
            "labels": {ROUTE_LABEL: "true"},
        },
        "spec": {
            "parentRefs": [{"name": GATEWAY_NAME}],
            "rules": [
                {"backendRefs": [{"group": POOL_GROUP, "kind": "InferencePool", "name": key.name}]}
            ],
        },
    }
    return gateway, route


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
        """The pool, its EPP Service, and with ``gateway_port`` the Gateway and HTTPRoute."""
        self.emulator.add_namespace(pool.namespace)
        inference_pool, service = pool_objects(pool, self._ip(pool.key))
        await self.emulator.put_object(SERVICE_KIND, service)
        if gateway_port is not None:
            await self.put_route(pool.key, gateway_port)
        await self.emulator.put_object(POOL_KIND, inference_pool)

    async def put_route(self, key: PoolKey, gateway_port: int) -> None:
        """The namespace's Gateway and a marked HTTPRoute to ``key`` (unless one exists)."""
        self.emulator.add_namespace(key.namespace)
        gateway, route = gateway_objects(key, gateway_port)
        await self.emulator.put_object(GATEWAY_KIND, gateway)
        if self.emulator.object_at(ROUTE_KIND.plural, *key) is None:
            await self.emulator.put_object(ROUTE_KIND, route)

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
