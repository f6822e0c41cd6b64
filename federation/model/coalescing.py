"""Coalesced weight writes: when an InferencePoolImport's weights annotation is worth an API write.

Gateways get every weight change through their fast feeds; the annotation is for people and
tools reading the API, and thousands of imports stepping their smoothing every half second would
be a write storm on the API server. So an import's annotation is written at most once per
``interval``, and only when its set of backends changed, a backend started or stopped serving
(weight 0 ↔ > 0), or some weight moved by ``threshold`` or more since the last write. Smaller
moves are not written: the annotation may lag the gateways by less than the threshold, and any
change by up to the interval (a backend that flaps between serving and not is written once per
interval, not once per flap).
"""

from __future__ import annotations

from collections.abc import Mapping


def serving_changed(written: Mapping[str, int], wanted: Mapping[str, int]) -> bool:
    if set(written) != set(wanted):
        return True
    return any((written[b] > 0) != (wanted[b] > 0) for b in wanted)


def annotation_due(
    written: Mapping[str, int] | None,
    wanted: Mapping[str, int],
    *,
    written_at: float | None,
    now: float,
    interval: float,
    threshold: int,
) -> float | None:
    """When the annotation should be written: ``now`` or a later time; None: it need not be."""
    if written is None:
        return now
    if not serving_changed(written, wanted):
        if written == wanted:
            return None
        if max(abs(written[b] - wanted[b]) for b in wanted) < max(1, threshold):
            return None
    if written_at is None:
        return now
    return max(now, written_at + interval)
