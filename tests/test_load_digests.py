"""Load digests: one event per cluster carrying every exported pool's load (issue 13).

The publisher's rules (when a digest goes, what it carries, when per-pool reports go beside it)
on a recording bus, and fleets of agents on the in-memory bus: digests only among digest agents,
per-pool reports too while a member that reads no digests is live.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest

from federation import messages
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import DemoOptions
from federation.model.beliefs import Beliefs
from federation.model.counts import EventCounts
from federation.model.loads import LoadSample
from federation.model.pools import LocalPool
from federation.runtime.agent import DIGESTS_HEARD_PER_S, digest_gap
from federation.runtime.publishing import DIGEST_BUDGET_BYTES, Publisher, _fit_digest
from tests.conftest import running_demo, wait_for
from tests.memory_fleet import MEMBERS, every_peer_held, memory_fleet
from tests.memory_fleet import fleet_pool as exported_pool
from tests.recording_bus import RecordingBus


def sample(saturation: float = 0.3, **kw: float) -> LoadSample:
    return LoadSample(observed_at=time.time(), ready_pods=4, saturation=saturation, **kw)  # type: ignore[arg-type]


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def publisher(bus: RecordingBus, ticks: Ticks, *, digests: bool = True) -> Publisher:
    return Publisher(
        bus=bus, clusterset="cs", cluster="a", wall=time.time, counts=EventCounts(),
        keepalive=3.0, clock=ticks, digests=digests,
    )  # type: ignore[arg-type]  # fmt: skip


async def test_one_digest_carries_every_pool_and_goes_only_when_something_moved() -> None:
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    pools = [exported_pool(f"p{i}") for i in range(50)]
    steady = [(p, sample()) for p in pools]
    await pub.publish_loads(steady)
    assert bus.kinds() == ["LoadDigest"]
    first = bus.sent[0]
    assert isinstance(first, messages.LoadDigest)
    assert len(first.pools) == 50
    ticks.now += 1
    await pub.publish_loads([(p, sample(0.31)) for p in pools])  # below the threshold
    assert len(bus.sent) == 1
    ticks.now += 0.5
    moved = [(p, sample(0.9 if i == 7 else 0.3)) for i, p in enumerate(pools)]
    await pub.publish_loads(moved)  # one pool moved: one digest, of all of them
    assert bus.kinds() == ["LoadDigest"] * 2
    second = bus.sent[1]
    assert isinstance(second, messages.LoadDigest)
    assert second.sequence > first.sequence
    assert {p.name: p.saturation for p in second.pools}["p7"] == 0.9
    assert len(second.pools) == 50
    await pub.publish_loads(moved[:-1])  # a pool left: the set changed
    assert len(bus.sent) == 3
    assert len(bus.sent[2].pools) == 49
    ticks.now += 3.0  # the keepalive
    await pub.publish_loads(moved[:-1])
    assert len(bus.sent) == 4
    await pub.publish_loads([])  # the last export went: said once, then nothing
    await pub.publish_loads([])
    assert len(bus.sent) == 5
    assert bus.sent[4].pools == ()


async def test_a_digest_repeats_the_entries_of_pools_that_moved_less_than_the_threshold() -> None:
    # An EPP's gauges and rates jitter at every scrape. A digest sent for one pool's move must
    # not carry every other pool's jitter: a peer would find all of them changed and recompute
    # every import of that cluster's pools.
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    pools = [exported_pool(f"p{i}") for i in range(5)]
    await pub.publish_loads([(p, sample(0.3, arrival_rate=10.0)) for p in pools])
    ticks.now += 1
    jitter = [(p, sample(0.9 if i == 2 else 0.31, arrival_rate=10.2)) for i, p in enumerate(pools)]
    await pub.publish_loads(jitter)
    first, second = bus.sent
    assert isinstance(first, messages.LoadDigest)
    assert isinstance(second, messages.LoadDigest)
    assert [e.saturation for e in second.pools] == [0.3, 0.3, 0.9, 0.3, 0.3]
    assert [e.arrival_rate for e in second.pools] == [10.0, 10.0, 10.2, 10.0, 10.0]
    beliefs = Beliefs()
    beliefs.apply(first, 1000.0)
    beliefs.apply(second, 1001.0)
    assert beliefs.digest_dirty(full_trust_age=5.0) == (("llm", "p2"),)

    # Small moves add up against the entry last sent, not against the last sample: p0 drifting
    # by 0.01 a time goes out once it is 0.02 from what peers hold.
    def drifted(p0: float) -> list[tuple[LocalPool, LoadSample]]:
        levels = [p0, 0.31, 0.9, 0.31, 0.31]
        return [(p, sample(levels[i], arrival_rate=10.1)) for i, p in enumerate(pools)]

    ticks.now += 0.5
    await pub.publish_loads(drifted(0.31))
    assert len(bus.sent) == 2
    ticks.now += 0.5
    await pub.publish_loads(drifted(0.32))
    assert len(bus.sent) == 3
    assert [e.saturation for e in bus.sent[-1].pools] == [0.32, 0.3, 0.9, 0.3, 0.3]
    # At the keepalive every pool's newest sample goes.
    ticks.now += 3.0
    await pub.publish_loads(drifted(0.31))
    assert [e.saturation for e in bus.sent[-1].pools] == [0.31, 0.31, 0.9, 0.31, 0.31]


async def test_moves_wait_for_the_digest_gap_and_a_new_pool_does_not() -> None:
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    pub.digest_gap = 2.0
    pools = [exported_pool(f"p{i}") for i in range(2)]
    await pub.publish_loads([(p, sample(0.3)) for p in pools])
    ticks.now += 1.0
    await pub.publish_loads([(p, sample(0.6)) for p in pools])  # moved, within the gap
    assert bus.kinds() == ["LoadDigest"]
    ticks.now += 0.85  # a sample a little early for the gap still goes
    await pub.publish_loads([(p, sample(0.6)) for p in pools])
    assert bus.kinds() == ["LoadDigest"] * 2
    assert [e.saturation for e in bus.sent[-1].pools] == [0.6, 0.6]  # type: ignore[union-attr]
    ticks.now += 0.1
    pools.append(exported_pool("p2"))  # a pool came: said at once
    await pub.publish_loads([(p, sample(0.6)) for p in pools])
    assert bus.kinds() == ["LoadDigest"] * 3


def test_the_digest_gap_grows_with_the_members_past_the_intake_budget() -> None:
    assert digest_gap(20, 1.0, 10 / 3) == 1.0
    assert digest_gap(DIGESTS_HEARD_PER_S, 1.0, 10 / 3) == 1.0
    assert digest_gap(100, 1.0, 10 / 3) == 2.0
    assert digest_gap(1000, 1.0, 10 / 3) == 10 / 3  # never past the keepalive


async def test_an_agent_that_starts_before_its_pools_are_listed_sends_no_empty_digest() -> None:
    # A restarted agent samples before its pool watch lists anything: an empty digest, newer
    # than the one peers hold, would take this cluster's load from every import at once.
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    await pub.publish_loads([])
    assert bus.sent == []
    await pub.publish_loads([(exported_pool("p0"), sample())])
    assert bus.kinds() == ["LoadDigest"]


class RefusingBus(RecordingBus):
    """Refuses digests while ``refuse`` is set (servers whose permissions predate them)."""

    refuse = False

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> None:
        if self.refuse and ".digest." in subject:
            raise PermissionError("permissions violation")
        await super().publish(subject, payload, msg_id, headers)


async def test_a_digest_repeats_the_report_peers_hold_not_an_older_entry() -> None:
    # While digests are refused the pools' reports carry the load, and peers hold those; the
    # next digest, above the reports' sequences, must repeat what they hold, not take a pool
    # back to the older entry of the last digest.
    bus, ticks = RefusingBus(), Ticks()
    pub = publisher(bus, ticks)  # type: ignore[arg-type]
    pools = [exported_pool(f"p{i}") for i in range(3)]
    await pub.publish_loads([(p, sample(0.3)) for p in pools])
    ticks.now += 0.5
    bus.refuse = True
    # p0 moved: the digest is refused, and every pool's report goes (p1's says 0.31).
    await pub.publish_loads([(p, sample((0.6, 0.31, 0.3)[i])) for i, p in enumerate(pools)])
    assert bus.kinds() == ["LoadDigest"] + ["LoadReport"] * 3
    ticks.now += 0.5
    bus.refuse = False
    await pub.publish_loads([(p, sample((0.6, 0.31, 0.9)[i])) for i, p in enumerate(pools)])
    last = bus.sent[-1]
    assert isinstance(last, messages.LoadDigest)
    assert [e.saturation for e in last.pools] == [0.6, 0.31, 0.9]  # p1 not back at 0.3


async def test_per_pool_reports_go_beside_the_digest_when_asked_each_on_its_own_pace() -> None:
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    pools = [exported_pool(f"p{i}") for i in range(3)]
    await pub.publish_loads([(p, sample()) for p in pools], per_pool=True)
    assert sorted(bus.kinds()) == ["LoadDigest"] + ["LoadReport"] * 3
    digest = next(e for e in bus.sent if isinstance(e, messages.LoadDigest))
    reports = [e for e in bus.sent if isinstance(e, messages.LoadReport)]
    said = {(r.name, r.saturation, r.ready_pods) for r in reports}
    assert said == {(p.name, p.saturation, p.ready_pods) for p in digest.pools}  # one truth
    bus.sent.clear()
    ticks.now += 1
    await pub.publish_loads(
        [(p, sample(0.9 if p.name == "p1" else 0.3)) for p in pools], per_pool=True
    )
    assert sorted(bus.kinds()) == ["LoadDigest", "LoadReport"]  # only p1's report is due
    assert next(e for e in bus.sent if isinstance(e, messages.LoadReport)).name == "p1"


async def test_per_pool_mode_sends_reports_only_and_its_beat_says_so() -> None:
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks, digests=False)
    await pub.publish_loads([(exported_pool("p"), sample())])
    await pub.publish_beat(1, "test")
    assert bus.kinds() == ["LoadReport", "Heartbeat"]
    beat = bus.sent[1]
    assert isinstance(beat, messages.Heartbeat)
    assert beat.load_digests is False


async def test_a_beat_that_says_nothing_new_is_left_out_while_a_digest_renews_the_lease() -> None:
    bus, ticks = RecordingBus(), Ticks()
    pub = publisher(bus, ticks)
    assert await pub.publish_beat(1, "v", covered=2.0)  # nothing said yet: it goes
    await pub.publish_loads([(exported_pool("p"), sample())])
    ticks.now += 1.0
    assert not await pub.publish_beat(1, "v", covered=2.0)  # the digest 1 s ago renewed it
    assert await pub.publish_beat(1, "v")  # not covered: it goes
    assert await pub.publish_beat(2, "v", covered=2.0)  # says something new: it goes
    ticks.now += 1.5
    assert await pub.publish_beat(2, "v", covered=2.0)  # the digest is 2.5 s old
    assert bus.kinds() == ["Heartbeat", "LoadDigest", "Heartbeat", "Heartbeat", "Heartbeat"]
    assert pub.beats_covered == 1
    await pub.publish_loads([(exported_pool("p"), sample(0.9))])
    ticks.now += 1.0
    assert not await pub.publish_beat(2, "v", covered=2.0, keepalive=3.0)  # said 1 s ago
    ticks.now += 0.9
    await pub.publish_loads([(exported_pool("p"), sample(0.3))])
    ticks.now += 0.5
    assert not await pub.publish_beat(2, "v", covered=2.0, keepalive=3.0)  # 2.4 s
    ticks.now += 0.7
    assert await pub.publish_beat(2, "v", covered=2.0, keepalive=3.0)  # 3.1 s: said again
    pub.state_lost()  # the store lost our beats too: the next goes whatever
    assert await pub.publish_beat(2, "v", covered=10.0)


def test_a_digest_is_cut_by_count_and_bytes_and_the_rest_go_as_reports() -> None:
    long = [exported_pool(f"{i:04d}" + "x" * 249) for i in range(messages.MAX_DIGEST_POOLS)]
    full = sample(
        0.123456789, kv_cache_utilization=0.987654321, arrival_rate=123.456789,
        completion_rate=122.3456789, capacity_rate=200.123456, demand_rate=99.87654,
    )  # fmt: skip
    fitted, rest = _fit_digest([(p, full) for p in long])
    assert 0 < len(fitted) < len(long)
    assert len(fitted) + len(rest) == len(long)
    digest = messages.LoadDigest(cluster="a", sequence=1, published_at=1.0,
                                 pools=tuple(entry for _, entry, _ in fitted))  # fmt: skip
    payload = messages.encode(digest)
    assert len(payload) <= DIGEST_BUDGET_BYTES + 200
    assert messages.decode(payload) == digest  # a peer takes it
    short = [exported_pool(f"p{i}") for i in range(messages.MAX_DIGEST_POOLS + 5)]
    fitted, rest = _fit_digest([(p, full) for p in short])
    assert len(fitted) == messages.MAX_DIGEST_POOLS
    assert len(rest) == 5


async def _fleet(load_messages: Mapping[str, str], within: float) -> dict[str, dict[str, int]]:
    """Three agents, two pools exported by each; return what each published, by event type,
    once every agent holds every peer's loads."""
    settings = {c: {"load_messages": m} for c, m in load_messages.items()}
    async with memory_fleet("dg", settings) as agents:
        await wait_for(lambda: every_peer_held(agents, "loads"), within=within,
                       what="every agent holds every load")  # fmt: skip
        # Past the first beats: each agent knows which peers read digests.
        await wait_for(lambda: all(len(a.beliefs.beats) == 3 for a in agents.values()),
                       within=within, what="every beat heard")  # fmt: skip
        before = {c: dict(a.counts.published) for c, a in agents.items()}

        def sent(c: str) -> dict[str, int]:
            now = agents[c].counts.published
            return {k: now[k] - before[c].get(k, 0) for k in ("LoadDigest", "LoadReport")}

        # A keepalive round (3 s / 3) from everyone after that point.
        await wait_for(lambda: all(sum(sent(c).values()) > 0 for c in MEMBERS),
                       within=within, what="another round of load")  # fmt: skip
        return {c: sent(c) for c in MEMBERS}


async def test_a_fleet_of_digest_agents_sends_no_per_pool_reports() -> None:
    sent = await _fleet({}, within=10)
    for cluster, kinds in sent.items():
        assert kinds["LoadReport"] == 0, cluster


async def test_a_member_that_reads_no_digests_gets_per_pool_reports_from_the_others() -> None:
    sent = await _fleet({"ap-south": "per-pool"}, within=10)
    assert sent["ap-south"]["LoadDigest"] == 0
    for cluster in ("us-east", "eu-west"):
        assert sent[cluster]["LoadReport"] > 0, cluster


@pytest.mark.e2e
async def test_a_mixed_fleet_federates_on_a_real_supercluster(
    supercluster: Supercluster, clusterset: str
) -> None:
    """An agent on the old wire format (per-pool reports, a beat without ``load_digests``) and
    two digest agents: every import everywhere, every exporter's load heard everywhere; the old
    one sends no digests, the new ones send it per-pool reports besides theirs."""
    options = DemoOptions(clusters=3, pools=2, clusterset=clusterset,
                          per_pool_loads=frozenset({"ap-south"}))  # fmt: skip
    async with running_demo(options, supercluster) as demo:
        assert await demo.wait_converged(within=30) is not None
        agents = {name: sim.agent for name, sim in demo.clusters.items()}

        def every_load_heard() -> bool:
            return all(
                export[0] in {c for c, _, _ in a.beliefs.loads}
                for a in agents.values()
                for export in a.beliefs.exports
            )

        await wait_for(every_load_heard, within=15, what="every exporter's load everywhere")
        assert agents["ap-south"].counts.published["LoadDigest"] == 0
        # ap-south decodes digests too, so its loads can be complete before a digest agent has
        # heard its beat and sent its first per-pool report: wait for those, do not race them.
        for name in ("us-east", "eu-west"):
            published = agents[name].counts.published
            assert published["LoadDigest"] > 0, name
            await wait_for(lambda p=published: p["LoadReport"] > 0, within=15,
                           what=f"{name}'s per-pool reports")  # fmt: skip


class DigestDenyingBus(RecordingBus):
    """Servers whose permissions predate digests: the digest subject is refused."""

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> None:
        if ".digest." in subject:
            raise PermissionError("nats: permissions violation for publish")
        await super().publish(subject, payload, msg_id, headers)


class SlowServerBus(RecordingBus):
    """A server too busy to ack a digest in time (the publish times out)."""

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> None:
        if ".digest." in subject:
            raise TimeoutError("nats: timeout")
        await super().publish(subject, payload, msg_id, headers)


async def test_a_digest_that_timed_out_is_tried_again_without_a_report_per_pool() -> None:
    bus, ticks = SlowServerBus(), Ticks()
    pub = publisher(bus, ticks)
    pools = [exported_pool(f"p{i}") for i in range(3)]
    await pub.publish_loads([(p, sample()) for p in pools])
    assert bus.sent == []  # a busy server is sent no more messages than before
    assert pub.counts.publish_failures == 1
    ticks.now += 1
    await pub.publish_loads([(p, sample()) for p in pools])
    assert bus.sent == []
    assert pub.counts.publish_failures == 2  # the digest, again


async def test_while_digests_are_refused_the_pools_reports_carry_the_load() -> None:
    bus, ticks = DigestDenyingBus(), Ticks()
    pub = publisher(bus, ticks)
    pools = [exported_pool(f"p{i}") for i in range(3)]
    await pub.publish_loads([(p, sample()) for p in pools])
    assert bus.kinds() == ["LoadReport"] * 3
    assert pub.counts.publish_failures == 1
    ticks.now += 1
    await pub.publish_loads([(p, sample()) for p in pools])  # the digest is retried, reports wait
    assert len(bus.sent) == 3
    assert pub.counts.publish_failures == 2
