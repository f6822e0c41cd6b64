"""Sequence gaps per peer: counted only after catch-up, never for redeliveries."""

from __future__ import annotations

from federation.model.gaps import SourceGaps


def test_skipped_sequences_are_counted_once_caught_up() -> None:
    gaps = SourceGaps()
    assert gaps.observe("b", 5, counting=False) == 0  # the first one sets the baseline
    assert gaps.observe("b", 9, counting=False) == 0  # catch-up skips history on purpose
    assert gaps.observe("b", 10, counting=True) == 0
    assert gaps.observe("b", 14, counting=True) == 3  # 11, 12, 13 never arrived
    assert gaps.observe("b", 12, counting=True) == 0  # a redelivery is not a gap
    assert gaps.observe("c", 100, counting=True) == 0  # a new peer starts a baseline
    assert gaps.missed == {"b": 3}
    assert gaps.last == {"b": 14, "c": 100}
