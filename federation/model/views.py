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
    WeightPolicy,
    compute_weights,
    load_from_report,
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
    *,
    now: float,
    policy: WeightPolicy,
) -> dict[PoolKey, ImportView]:
    return {
        key: ImportView(d, compute_weights(backend_loads(d, beliefs, local_loads, now=now), policy))
        for key, d in desired.items()
    }
