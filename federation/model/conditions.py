"""Conditions: what an import says about itself, in Kubernetes condition terms.

``Accepted`` (the upstream type): False with reason ``Conflict`` when some exporters were
excluded, naming them and the fields that differ. ``inference-federation.io/ExportersFresh``:
False with reason ``Stale`` naming every exporting cluster whose lease ran out and since when;
Unknown with reason ``LinkSuspect`` while this cluster's own link to the bus is suspect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from federation.model.freshness import LinkState, Staleness
from federation.model.imports import DesiredImport

FRESH: Final = "inference-federation.io/ExportersFresh"


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def accepted(desired: DesiredImport) -> Condition:
    if not desired.excluded:
        return Condition("Accepted", "True", "Accepted", "all exporting clusters are compatible")
    parts = [
        f"{c.cluster} differs from {c.winner} in {', '.join(c.fields)}" for c in desired.excluded
    ]
    return Condition(
        "Accepted", "False", "Conflict", "excluded (the oldest export wins): " + "; ".join(parts)
    )


def fresh(
    desired: DesiredImport,
    freshness: Mapping[str, Staleness],
    link: LinkState,
    *,
    now: float,
    lease: float,
) -> Condition:
    if link.suspect:
        return Condition(
            FRESH, "Unknown", "LinkSuspect", f"keeping the last known weights: {link.reason}"
        )
    stale = [freshness[c] for c in desired.exporting_clusters if freshness[c].stale]
    if not stale:
        return Condition(FRESH, "True", "Fresh", "every exporting cluster is within its lease")
    parts = []
    for s in stale:
        since = s.since(lease, now)
        parts.append(
            f"{s.cluster} never heard" if since is None else f"{s.cluster} since {_iso(since)}"
        )
    return Condition(FRESH, "False", "Stale", "lease expired: " + ", ".join(parts))
