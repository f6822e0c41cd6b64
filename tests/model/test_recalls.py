"""The recall schedule: cut-off peers every interval, repeating ones less and less often."""

from __future__ import annotations

from federation.model.recalls import RecallSchedule


def test_a_peer_that_repeats_itself_is_asked_after_twice_as_long_up_to_the_cap() -> None:
    r = RecallSchedule(interval=2.0, cap=10.0)
    at, asked_at = 0.0, []
    while at <= 40.0:  # the agent's recall runs every interval
        if r.due(["b"], at) == ["b"]:
            asked_at.append(at)
            r.asked(["b"], answered=["b"], new=[] if asked_at[1:] else ["b"], at=at)
        at += 2.0
    assert asked_at == [0.0, 2.0, 4.0, 8.0, 16.0, 26.0, 36.0]  # new; then waits 2, 4, 8, 10, 10


def test_a_cut_off_peer_is_asked_every_time_and_one_heard_again_is_forgotten() -> None:
    r = RecallSchedule(interval=2.0, cap=10.0)
    r.asked(["b", "c"], answered=["c"], new=[], at=0.0)  # b did not answer; c repeated itself
    assert r.due(["b", "c"], 1.0) == ["b"]
    assert r.due(["b"], 1.0) == ["b"]  # c was heard again: its wait is forgotten
    assert r.due(["b", "c"], 1.0) == ["b", "c"]
