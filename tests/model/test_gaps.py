"""Sequence gaps per peer: counted only after catch-up, never for redeliveries."""

from __future__ import annotations

from federation.messages import export_seq_header, parse_export_seq
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


def test_a_restarted_peer_counts_afresh_in_its_new_epoch() -> None:
    gaps = SourceGaps()
    assert gaps.observe("b", 40, counting=True, epoch=1) == 0
    assert gaps.observe("b", 1, counting=True, epoch=2) == 0  # restarted: not a redelivery
    assert gaps.observe("b", 3, counting=True, epoch=2) == 1  # 2 never arrived
    assert gaps.missed == {"b": 1}


def test_the_export_count_header_is_parsed_strictly() -> None:
    assert parse_export_seq(export_seq_header(1764000000000, 7)) == (1764000000000, 7)
    for bad in (None, "", "7", "a.b", "1.-2", "1.2.3", "9" * 50 + ".1", "1.\u00b2", " 1.2"):
        assert parse_export_seq(bad) is None, bad
