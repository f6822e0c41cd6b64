"""Desired imports: which InferencePoolImports a cluster should hold, with which exporters.

Upstream rule: every member cluster, exporters included, holds one InferencePoolImport per
``(namespace, name)`` exported by at least one member, listing every exporting cluster.

Conflicts follow the Multi-Cluster Services rule: when members export the same ``namespace/name``
with incompatible pools (target ports, appProtocol or model), the oldest export wins (export time,
then cluster name, so every cluster decides alike) and the others are excluded, by name and field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from federation.messages import ExportEvent
from federation.model.beliefs import Beliefs
from federation.model.pools import LOCAL_BACKEND, LocalPool, PoolKey, is_exported

COMPATIBILITY_FIELDS = ("target_ports", "app_protocol", "model")


@dataclass(frozen=True)
class Conflict:
    cluster: str
    fields: tuple[str, ...]
    winner: str


@dataclass(frozen=True)
class DesiredImport:
    key: PoolKey
    exporting_clusters: tuple[str, ...]  # the accepted exporters, sorted
    excluded: tuple[Conflict, ...] = ()
    has_local: bool = False  # this cluster has a same-named pool that it does not export
    exports: tuple[ExportEvent, ...] = ()  # the accepted exports, by cluster name
    local: LocalPool | None = None  # the same-named local pool behind ``local``, if any

    def here(self, own_cluster: str) -> str | None:
        """The backend inside this cluster, which the weight policy prefers."""
        if self.has_local:
            return LOCAL_BACKEND
        return own_cluster if own_cluster in self.exporting_clusters else None

    @property
    def backends(self) -> tuple[str, ...]:
        return self.exporting_clusters + ((LOCAL_BACKEND,) if self.has_local else ())


def incompatible_fields(a: ExportEvent, b: ExportEvent) -> tuple[str, ...]:
    if (a.target_ports, a.app_protocol, a.model) == (b.target_ports, b.app_protocol, b.model):
        return ()  # the common case, asked per export at every recomputation: no getattr walk
    return tuple(f for f in COMPATIBILITY_FIELDS if getattr(a, f) != getattr(b, f))


def resolve_conflicts(exports: list[ExportEvent]) -> tuple[list[ExportEvent], list[Conflict]]:
    """Split one pool's exports into the accepted ones and the excluded ones."""
    ordered = sorted(exports, key=lambda e: (e.exported_at, e.cluster))
    winner = ordered[0]
    accepted, conflicts = [winner], []
    for export in ordered[1:]:
        fields = incompatible_fields(winner, export)
        if fields:
            conflicts.append(Conflict(export.cluster, fields, winner.cluster))
        else:
            accepted.append(export)
    return accepted, conflicts


def is_alive(beliefs: Beliefs, export: ExportEvent, *, now: float, grace: float) -> bool:
    """False once the exporter has been silent longer than the grace period."""
    heard = beliefs.last_heard(export.cluster)
    if heard is not None and now - heard <= grace:
        return True
    exported = beliefs.seen_at.get(("export", export.cluster, export.namespace, export.name))
    return exported is not None and now - exported <= grace


def desired_import(
    key: PoolKey,
    exports: list[ExportEvent],
    local: LocalPool | None,
    beliefs: Beliefs,
    *,
    own_cluster: str,
    now: float,
    grace: float,
) -> DesiredImport | None:
    """One pool's import from its live exports; None when no exporter is left."""
    alive = [
        e for e in exports if e.cluster == own_cluster or is_alive(beliefs, e, now=now, grace=grace)
    ]
    if not alive:
        return None
    accepted, conflicts = resolve_conflicts(alive)
    accepted.sort(key=lambda e: e.cluster)
    held_locally = local if local is not None and not is_exported(local) else None
    return DesiredImport(
        key=key,
        exporting_clusters=tuple(e.cluster for e in accepted),
        excluded=tuple(sorted(conflicts, key=lambda c: c.cluster)),
        has_local=held_locally is not None,
        exports=tuple(accepted),
        local=held_locally,
    )


def desired_imports(
    beliefs: Beliefs,
    local_pools: Mapping[PoolKey, LocalPool],
    *,
    own_cluster: str,
    now: float,
    grace: float,
) -> dict[PoolKey, DesiredImport]:
    keys = {PoolKey(e.namespace, e.name) for e in beliefs.live_exports()}
    desired = {}
    for key in sorted(keys):
        d = desired_import(
            key,
            beliefs.live_exports_of(*key),
            local_pools.get(key),
            beliefs,
            own_cluster=own_cluster,
            now=now,
            grace=grace,
        )
        if d is not None:
            desired[key] = d
    return desired
