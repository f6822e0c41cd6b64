"""Import views: a desired import together with its weights, as gateways and Kubernetes see it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from federation.model.beliefs import Beliefs
from federation.model.imports import DesiredImport
from federation.model.pools import LOCAL_BACKEND, PoolKey
from federation.model.weights import (
    BackendLoad,
    BackendWeight,
    WeightMemory,
    WeightPolicy,
    compute_weights,
    load_from_report,
    remember,
)


@dataclass(frozen=True)
class ImportView:
    desired: DesiredImport
    weights: Mapping[str, BackendWeight]

    @property
    def key(self) -> PoolKey:
        return self.desired.key


def backend_loads(
    desired: DesiredImport,
    beliefs: Beliefs,
    local_loads: Mapping[PoolKey, BackendLoad],
    *,
    now: float,
) -> dict[str, BackendLoad | None]:
    """The load behind each backend: peers' reports from the bus, ``local`` from our own EPP."""
    ns, name = desired.key
    loads: dict[str, BackendLoad | None] = {}
    for cluster in desired.exporting_clusters:
        report = beliefs.loads.get((cluster, ns, name))
        seen = beliefs.report_seen_at(cluster, ns, name)
        loads[cluster] = (
            None
            if report is None or seen is None
            else load_from_report(report, now=now, seen_at=seen)
        )
    if desired.has_local:
        loads[LOCAL_BACKEND] = local_loads.get(desired.key)
    return loads


def import_views(
    desired: Mapping[PoolKey, DesiredImport],
    beliefs: Beliefs,
    local_loads: Mapping[PoolKey, BackendLoad],
    memories: Mapping[PoolKey, WeightMemory],
    *,
    own_cluster: str,
    now: float,
    policy: WeightPolicy,
) -> tuple[dict[PoolKey, ImportView], dict[PoolKey, WeightMemory]]:
    """Every import's view, and the weight memory to pass to the next step."""
    views, next_memories = {}, {}
    for key, d in desired.items():
        loads = backend_loads(d, beliefs, local_loads, now=now)
        memory = memories.get(key, WeightMemory())
        weights = compute_weights(loads, policy, here=d.here(own_cluster), memory=memory, now=now)
        views[key] = ImportView(d, weights)
        next_memories[key] = remember(weights, loads, memory, policy, now)
    return views, next_memories
