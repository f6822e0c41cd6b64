"""Acknowledgements on the bus, and the ``Exported`` condition an exporter derives from them.

Upstream: an exported InferencePool's condition is ``Exported=True`` only when the pool is exported
to *all* members of the ClusterSet. An exporter cannot see its peers' API servers, so each agent
says in its heartbeat what it has accepted: per exporting cluster, the newest export generation
its applied imports reflect (``accepted``), and that exporter's pools it did not accept
(``refused``: excluded by a conflict, or no such namespace here). A pool whose export carries
generation *g* is accepted by a peer when the peer's watermark for us is ≥ *g* and the pool is not
refused. Export generations are stamped from the publisher's wall clock and the inbound stream
keeps one cluster's events in order, so a watermark covers every earlier export of that cluster.

Only *live* members count (lease not run out): a dead peer cannot acknowledge anything, and
holding every pool at ``False`` until it returns would misreport the export to the living.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from federation.model.beliefs import Beliefs
from federation.model.conditions import Condition
from federation.model.pools import (
    ExportState,
    LocalPool,
    PoolKey,
    export_decision,
)
from federation.model.views import ImportView

EXPORTED: str = "Exported"


@dataclass(frozen=True)
class Acks:
    """What this cluster tells exporters in its heartbeat."""

    accepted: dict[str, int]
    refused: dict[str, list[str]]


def acks_for(
    accepted: Mapping[str, int],
    views: Mapping[PoolKey, ImportView],
    refused_here: Mapping[PoolKey, str],
    conflicted: Iterable[PoolKey] | None = None,
) -> Acks:
    """The acknowledgements for imports that were just applied successfully.

    ``accepted`` are the watermarks (``Beliefs.watermarks``) of the beliefs the views were
    computed from (not of newer ones: an export applied meanwhile is not in these views);
    ``refused_here`` are the imports a feed could not materialize (e.g. a missing namespace);
    ``conflicted``, when given, the only views with excluded exporters (else all are looked at).
    """
    refused: dict[str, set[str]] = {}
    keys = set(views) if conflicted is None else {*conflicted, *refused_here}
    for key in keys:
        view = views.get(key)
        if view is None:
            continue
        for conflict in view.desired.excluded:
            refused.setdefault(conflict.cluster, set()).add(str(key))
        if key in refused_here:
            for cluster in view.desired.exporting_clusters:
                refused.setdefault(cluster, set()).add(str(key))
    return Acks(dict(accepted), {c: sorted(keys) for c, keys in sorted(refused.items())})


def _short(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def exported_condition(
    pool: LocalPool,
    *,
    generation: int | None,
    beliefs: Beliefs,
    own_cluster: str,
    live_peers: Iterable[str],
    own_acks: Acks | None = None,
) -> Condition | None:
    """The pool's ``Exported`` condition, or None when the annotation is absent (no entry).

    ``generation`` is the generation of this cluster's newest export event for the pool (None
    while it has not been published yet). ``own_acks`` are what this cluster's own feeds hold
    (its own InferencePoolImport included: upstream wants the import in every member, exporters
    too), so an export is not ``True`` before this cluster has written its own import.
    """
    decision = export_decision(pool)
    if decision.state is ExportState.NOT_REQUESTED:
        return None
    if decision.state is ExportState.NOT_SUPPORTED:
        return Condition(EXPORTED, "False", "NotSupported", decision.message)
    if decision.state is ExportState.INVALID:
        return Condition(EXPORTED, "False", decision.reason, decision.message)
    if generation is None:
        return Condition(EXPORTED, "False", "Pending", "not yet published to the ClusterSet")
    peers = sorted(set(live_peers) - {own_cluster})
    refusing, waiting = [], []
    if own_acks is None or own_acks.accepted.get(own_cluster, 0) < generation:
        waiting.append(f"{own_cluster} (this cluster's own import)")
    elif str(pool.key) in own_acks.refused.get(own_cluster, ()):
        refusing.append(f"{own_cluster} (this cluster)")
    for peer in peers:
        beat = beliefs.beats.get(peer)
        if beat is not None and str(pool.key) in beat.refused.get(own_cluster, ()):
            refusing.append(peer)
        elif beat is None or beat.accepted.get(own_cluster, 0) < generation:
            waiting.append(peer)
    if refusing:
        return Condition(
            EXPORTED,
            "False",
            "NotAccepted",
            f"not accepted by {_short(refusing)} (a conflicting older export, or no such "
            "namespace there); see their InferencePoolImport conditions",
        )
    if waiting:
        return Condition(
            EXPORTED, "False", "Pending", f"waiting for {_short(waiting)} to accept the import"
        )
    return Condition(
        EXPORTED,
        "True",
        "Exported",
        f"accepted by every live member ({len(peers)} peer(s))"
        if peers
        else "exported; no other live member in the ClusterSet",
    )
