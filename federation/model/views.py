"""Import views: a desired import together with its weights, as gateways and Kubernetes see it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from federation.messages import EndpointAddress
from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition, accepted, fresh
from federation.model.freshness import LinkState, Staleness, staleness
from federation.model.imports import DesiredImport
from federation.model.pools import LOCAL_BACKEND, PoolKey
from federation.model.weights import (
    BackendLoad,
    BackendWeight,
    WeightMemory,
    WeightPolicy,
    load_from_report,
    step_weights,
)

WEIGHTS_ANNOTATION: Final = "inference-federation.io/weights"


@dataclass(frozen=True)
class ImportView:
    desired: DesiredImport
    weights: Mapping[str, BackendWeight]
    conditions: tuple[Condition, ...] = ()

    @property
    def key(self) -> PoolKey:
        return self.desired.key

    @property
    def weight_by_backend(self) -> dict[str, int]:
        """Each backend's weight, without its reason."""
        return {backend: w.weight for backend, w in self.weights.items()}

    def epp(self, backend: str) -> EndpointAddress | None:
        """Where Endpoint mode sends this backend's traffic: its EPP."""
        if backend == LOCAL_BACKEND:
            return self.desired.local.epp if self.desired.local else None
        return next((e.epp for e in self.desired.exports if e.cluster == backend), None)

    def parent_addresses(self, backend: str) -> tuple[EndpointAddress, ...]:
        """Where Parent mode sends this backend's traffic: its parent Gateways."""
        if backend == LOCAL_BACKEND:
            parents = self.desired.local.parents if self.desired.local else ()
        else:
            export = next((e for e in self.desired.exports if e.cluster == backend), None)
            parents = export.parents if export else ()
        return tuple(a for p in parents for a in p.addresses)


def _address(a: EndpointAddress | None) -> str | None:
    return None if a is None else f"{a.host}:{a.port}"


def weights_document(views: Mapping[PoolKey, ImportView]) -> dict[str, Any]:
    """Every import's weights with reasons and addresses: the body of ``GET /v1/weights``."""
    return {
        str(key): {
            "exportingClusters": list(view.desired.exporting_clusters),
            "excluded": [
                {"cluster": c.cluster, "fields": list(c.fields), "winner": c.winner}
                for c in view.desired.excluded
            ],
            "backends": {
                name: {
                    "weight": w.weight,
                    "percent": w.percent,
                    "reason": w.reason,
                    "epp": _address(view.epp(name)),
                    "parents": [_address(a) for a in view.parent_addresses(name)],
                }
                for name, w in view.weights.items()
            },
        }
        for key, view in sorted(views.items())
    }


def weights_annotation(view: ImportView) -> dict[str, str]:
    """The InferencePoolImport annotation carrying weights (upstream status has no field)."""
    weights = {name: w.weight for name, w in sorted(view.weights.items())}
    return {WEIGHTS_ANNOTATION: json.dumps(weights, separators=(",", ":"))}


def written_weights(annotations: Mapping[str, object]) -> dict[str, int] | None:
    """The weights an object's annotation holds; None if absent or not ours to read."""
    raw = annotations.get(WEIGHTS_ANNOTATION)
    if not isinstance(raw, str) or len(raw) > 64 * 1024:
        return None
    try:
        value: object = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    out = {k: v for k, v in value.items() if isinstance(k, str) and type(v) is int}
    return out if len(out) == len(value) else None


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
            else load_from_report(
                report, now=now, seen_at=seen, rated_at=beliefs.rated_at.get((cluster, ns, name))
            )
        )
    if desired.has_local:
        loads[LOCAL_BACKEND] = local_loads.get(desired.key)
    return loads


def import_view(
    d: DesiredImport,
    beliefs: Beliefs,
    local_loads: Mapping[PoolKey, BackendLoad],
    memory: WeightMemory | None,
    freshness: Mapping[str, Staleness],
    *,
    own_cluster: str,
    now: float,
    policy: WeightPolicy,
    link: LinkState,
    held: ImportView | None = None,
) -> tuple[ImportView, WeightMemory | None]:
    """One import's view and the weight memory for its next step.

    While the link is suspect the previous weights stand (and their memory with them): silence
    from every peer at once says nothing about their capacity.
    """
    if link.suspect and held is not None and set(held.weights) == set(d.backends):
        weights, next_memory = held.weights, memory
    else:
        loads = backend_loads(d, beliefs, local_loads, now=now)
        weights, next_memory = step_weights(
            loads, policy, here=d.here(own_cluster), memory=memory, now=now
        )
    conditions = (accepted(d), fresh(d, freshness, link, now=now, lease=policy.lease))
    return ImportView(d, weights, conditions), next_memory


def import_views(
    desired: Mapping[PoolKey, DesiredImport],
    beliefs: Beliefs,
    local_loads: Mapping[PoolKey, BackendLoad],
    memories: Mapping[PoolKey, WeightMemory],
    *,
    own_cluster: str,
    now: float,
    policy: WeightPolicy,
    link: LinkState | None = None,
    previous: Mapping[PoolKey, ImportView] | None = None,
) -> tuple[dict[PoolKey, ImportView], dict[PoolKey, WeightMemory]]:
    """Every import's view, and the weight memory to pass to the next step."""
    link = link or LinkState(False)
    previous = previous or {}
    clusters = {c for d in desired.values() for c in d.exporting_clusters}
    freshness = {c: staleness(beliefs, c, now=now, lease=policy.lease) for c in clusters}
    views, next_memories = {}, {}
    for key, d in desired.items():
        views[key], memory = import_view(
            d, beliefs, local_loads, memories.get(key), freshness,
            own_cluster=own_cluster, now=now, policy=policy, link=link, held=previous.get(key),
        )  # fmt: skip
        if memory is not None:
            next_memories[key] = memory
    return views, next_memories


def imports_document(views: Mapping[PoolKey, ImportView]) -> dict[str, Any]:
    """Every import as the demo's snapshot and ``replay --state-at`` print it."""
    return {
        str(key): {
            "exportingClusters": list(view.desired.exporting_clusters),
            "weights": view.weight_by_backend,
            "conditions": [
                {"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                for c in view.conditions
            ],
        }
        for key, view in sorted(views.items())
    }
