"""A simulated cluster's InferencePools, kept as Kubernetes objects in its emulated API server.

The demo and the tests edit pools here the way a platform owner would with kubectl: an
InferencePool plus the Service of its Endpoint Picker. The agent sees them only through its
production kube adapter. ``snapshot()`` reads back what the API holds, so the demo's truth is
computed from the same objects the agent watches.
"""

from __future__ import annotations

from typing import Any

from federation.adapters.kube_emulator import ApiEmulator
from federation.adapters.kube_kinds import POOL_KIND, SERVICE_KIND
from federation.model.pool_objects import METRICS_URL_ANNOTATION, MODEL_ANNOTATION, pool_from_object
from federation.model.pools import EXPORT_ANNOTATION, LocalPool, PoolKey

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

    async def put(self, pool: LocalPool) -> None:
        self.emulator.add_namespace(pool.namespace)
        inference_pool, service = pool_objects(pool, self._ip(pool.key))
        await self.emulator.put_object(SERVICE_KIND, service)
        await self.emulator.put_object(POOL_KIND, inference_pool)

    async def remove(self, key: PoolKey) -> None:
        await self.emulator.delete_object(POOL_KIND, key.namespace, key.name)

    def snapshot(self) -> dict[PoolKey, LocalPool]:
        services = {
            PoolKey(o["metadata"]["namespace"], o["metadata"]["name"]): o
            for o in self.emulator.objects(SERVICE_KIND.plural)
        }
        pools = (pool_from_object(o, services) for o in self.emulator.objects(POOL_KIND.plural))
        return {p.key: p for p in pools}
