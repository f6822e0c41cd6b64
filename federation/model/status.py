"""The status document: per peer, its lease and lag; per import, its weights and why."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

from federation.model.beliefs import Beliefs
from federation.model.freshness import LinkState, staleness
from federation.model.pools import PoolKey
from federation.model.views import ImportView, weights_document


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def status_document(
    *,
    cluster: str,
    members: Collection[str],
    beliefs: Beliefs,
    views: Mapping[PoolKey, ImportView],
    link: LinkState,
    now: float,
    lease: float,
    missed: Mapping[str, int] | None = None,
    offsets: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    exports = Counter(c for (c, _, _), e in beliefs.exports.items() if not e.withdrawn)
    peers = {}
    for member in sorted(members):
        s = staleness(beliefs, member, now=now, lease=lease)
        beat = beliefs.beats.get(member)
        beat_at = beliefs.seen_at.get(("beat", member))
        peers[member] = {
            "lease_age_s": None if s.age is None else round(s.age, 3),
            "stale": s.stale,
            "last_beat_sequence": None if beat is None else beat.sequence,
            "last_beat_age_s": None if beat_at is None else round(max(0.0, now - beat_at), 3),
            "exports": exports[member],
            "missed_events": (missed or {}).get(member, 0),  # sequence gaps (model.gaps)
            # The peer's clock against ours (model.clock_offsets): shown, never used.
            "clock_offset_s": _round((offsets or {}).get(member)),
        }
    return {
        "cluster": cluster,
        "link": {"suspect": link.suspect, "reason": link.reason},
        "lease_s": lease,
        "peers": peers,
        "imports": weights_document(views),
    }
