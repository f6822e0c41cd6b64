from federation.model.beliefs import Beliefs, Outcome
from tests.model.factories import beat, digest, entry, export, load


def test_newer_event_replaces_older() -> None:
    b = Beliefs()
    assert b.apply(export(generation=1, model="old"), 100) is Outcome.APPLIED
    assert b.apply(export(generation=2, model="new"), 101) is Outcome.APPLIED
    assert b.exports[("a", "llm", "pool")].model == "new"


def test_same_sequence_is_a_duplicate_and_changes_nothing() -> None:
    b = Beliefs()
    b.apply(export(generation=5, model="x"), 100)
    assert b.apply(export(generation=5, model="y"), 101) is Outcome.DUPLICATE
    assert b.exports[("a", "llm", "pool")].model == "x"


def test_older_sequence_is_stale_and_dropped() -> None:
    b = Beliefs()
    b.apply(load(sequence=9, ready_pods=3), 100)
    assert b.apply(load(sequence=4, ready_pods=99), 101) is Outcome.STALE
    assert b.loads[("a", "llm", "pool")].ready_pods == 3


def test_sequences_are_per_subject() -> None:
    b = Beliefs()
    assert b.apply(load(name="p1", sequence=9), 100) is Outcome.APPLIED
    assert b.apply(load(name="p2", sequence=1), 100) is Outcome.APPLIED
    assert b.apply(export(name="p1", generation=1), 100) is Outcome.APPLIED


def test_any_order_of_the_same_events_gives_the_same_beliefs() -> None:
    events = [load(sequence=s, ready_pods=s) for s in (3, 1, 2, 5, 4)]
    a, b = Beliefs(), Beliefs()
    for e in events:
        a.apply(e, 200)
    for e in sorted(events, key=lambda e: e.sequence):
        b.apply(e, 200)
    assert a.loads == b.loads
    assert a.loads[("a", "llm", "pool")].ready_pods == 5


def test_last_heard_is_the_newest_beat_or_report_not_export() -> None:
    b = Beliefs()
    b.apply(export(published_at=500.0), 500)
    assert b.last_heard("a") is None
    b.apply(beat(published_at=100.0), 100)
    b.apply(load(published_at=150.0), 150)
    assert b.last_heard("a") == 150.0


def test_a_clock_running_ahead_cannot_make_reports_look_younger() -> None:
    b = Beliefs()
    b.apply(load(published_at=10_000.0), received_at=100.0)
    assert b.report_seen_at("a", "llm", "pool") == 100.0


def test_withdrawn_exports_are_not_live() -> None:
    b = Beliefs()
    b.apply(export(cluster="a"), 100)
    b.apply(export(cluster="b", withdrawn=True), 100)
    assert [e.cluster for e in b.live_exports()] == ["a"]


def test_a_clock_running_behind_cannot_make_reports_look_older() -> None:
    b = Beliefs()
    b.apply(load(published_at=40.0), received_at=100.0)  # the peer's clock is 60 s behind
    assert b.report_seen_at("a", "llm", "pool") == 100.0
    assert b.last_heard("a") == 100.0


def test_a_digest_gives_every_listed_pool_its_report_and_says_which_moved() -> None:
    b = Beliefs()
    first = digest(sequence=10, pools=(entry("p1"), entry("p2")))
    assert b.apply(first, 100) is Outcome.APPLIED
    assert b.loads[("a", "llm", "p1")].sequence == 10
    assert b.report_seen_at("a", "llm", "p2") == 100
    assert set(b.moved) == {("llm", "p1"), ("llm", "p2")}
    assert b.last_heard("a") == 100
    # Only p2's load changed (a new observation time is no change): p1 is renewed, not moved.
    second = digest(sequence=11, pools=(entry("p1", observed_at=105), entry("p2", saturation=0.9)))
    assert b.apply(second, 106) is Outcome.APPLIED
    assert b.moved == (("llm", "p2"),)
    assert b.report_seen_at("a", "llm", "p1") == 106
    assert b.digest_sequence("a") == 11


def test_a_pool_a_digest_no_longer_lists_loses_its_load() -> None:
    b = Beliefs()
    b.apply(digest(sequence=10, pools=(entry("p1"), entry("p2"))), 100)
    b.apply(digest(sequence=11, pools=(entry("p1"),)), 101)
    assert ("a", "llm", "p2") not in b.loads
    assert b.report_seen_at("a", "llm", "p2") is None
    assert b.moved == (("llm", "p2"),)
    assert b.apply(digest(sequence=9, pools=(entry("p2"),)), 102) is Outcome.STALE


def test_reports_and_digests_share_one_order_per_pool() -> None:
    """Mixed fleets and oversized clusters send both: the newer sequence wins, whichever kind."""
    b = Beliefs()
    b.apply(load(name="p1", sequence=20, saturation=0.1), 100)
    b.apply(digest(sequence=15, pools=(entry("p1", saturation=0.7), entry("p2"))), 101)
    assert b.loads[("a", "llm", "p1")].saturation == 0.1  # the report is newer
    assert b.moved == (("llm", "p2"),)
    # A pool whose load came from a report is not the digest's to remove.
    b.apply(digest(sequence=16, pools=()), 102)
    assert ("a", "llm", "p1") in b.loads
    assert ("a", "llm", "p2") not in b.loads
    b.apply(digest(sequence=30, pools=(entry("p1", saturation=0.7),)), 103)
    assert b.loads[("a", "llm", "p1")].saturation == 0.7
    assert b.apply(load(name="p1", sequence=25), 104) is Outcome.STALE  # older than the entry
    assert b.loads[("a", "llm", "p1")].saturation == 0.7
