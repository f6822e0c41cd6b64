"""Feeds: one that fails is retried with backoff, counted and shown; the others go on."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from federation.adapters.haproxy import HAProxyFeed, HAProxyRuntime
from federation.kit.sim.imports import MemoryImports
from federation.model.pools import PoolKey
from federation.model.views import ImportView
from federation.runtime.feeding import Feeds


class Flaky:
    """A feed that fails until told not to."""

    def __init__(self) -> None:
        self.failing = True
        self.applied = 0

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        self.applied += 1
        if self.failing:
            raise RuntimeError("gateway away")


async def test_a_failing_feed_backs_off_and_never_stops_the_others(tmp_path: Path) -> None:
    clock = [0.0]
    memory, flaky = MemoryImports(), Flaky()
    gone = HAProxyFeed(HAProxyRuntime(tmp_path / "no-such.sock"))
    feeds = Feeds(
        {"haproxy": gone, "flaky": flaky, "memory": memory},
        backoff=(1.0, 2.0),
        timeout=1.0,
        resync=5.0,
        clock=lambda: clock[0],
    )
    assert not await feeds.feed({})
    assert memory.applied.is_set()  # after two failing feeds
    status = feeds.status()
    assert status["haproxy"]["healthy"] is False
    assert "No such file" in status["haproxy"]["last_error"]
    assert status["memory"]["healthy"] is True
    clock[0] = 0.5
    await feeds.feed({})
    assert flaky.applied == 1  # within its backoff: not tried again
    clock[0] = 1.0
    await feeds.feed({})
    assert flaky.applied == 2
    clock[0] = 2.5
    await feeds.feed({})
    assert flaky.applied == 2  # the second failure backs off 2 s
    flaky.failing = False
    clock[0] = 3.0
    await feeds.feed({})
    assert flaky.applied == 3
    assert feeds.status()["flaky"] == {
        "healthy": True,
        "failures": 2,
        "consecutive_failures": 0,
        "last_error": "RuntimeError: gateway away",
        "last_ok_age_s": 0.0,
    }
    assert feeds.status()["haproxy"]["failures"] == 3


async def test_every_feed_is_given_the_views_again_after_the_resync_interval() -> None:
    clock = [0.0]
    flaky = Flaky()
    flaky.failing = False
    feeds = Feeds({"f": flaky}, backoff=(1.0,), timeout=1.0, resync=5.0, clock=lambda: clock[0])
    assert await feeds.feed({})
    clock[0] = 4.0
    await feeds.feed({})
    assert flaky.applied == 1  # nothing new, not yet due
    clock[0] = 5.0
    await feeds.feed({})
    assert flaky.applied == 2  # a resync: a restarted gateway gets its state back
    feeds.changed()
    await feeds.feed({})
    assert flaky.applied == 3
