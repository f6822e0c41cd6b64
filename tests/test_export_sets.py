"""Export sets: one event per cluster carrying every pool it exports (issue 13).

The publisher's rules (when a set goes, what it lists, when per-pool exports go beside it) on a
recording bus; how beliefs take a set in (entries on the per-pool ordering, a pool left out is
withdrawn); and fleets of agents: sets only among set agents, per-pool exports too while a
member that reads no sets is live, on the in-memory bus and on a real supercluster.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import pytest
from rich.console import Console

from federation import messages
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import DemoOptions
from federation.messages import ExportEvent, ExportSet, InvalidEvent
from federation.model.beliefs import Beliefs, Outcome
from federation.model.counts import EventCounts
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.model.replay import ReplayFilter, Stored, row, select
from federation.runtime.consuming import check
from federation.runtime.ports import Delivery
from federation.runtime.publishing import Publisher
from federation.tables import replay_table
from tests.conftest import running_demo, wait_for
from tests.memory_fleet import MEMBERS, every_peer_held, memory_fleet
from tests.recording_bus import RecordingBus


def pools(*names: str) -> dict[PoolKey, LocalPool]:
    made = (LocalPool(namespace="llm", name=n, target_ports=(8000,), export=EXPORT_VALUE)
            for n in names)  # fmt: skip
    return {p.key: p for p in made}


def publisher(bus: RecordingBus, *, sets: bool = True) -> Publisher:
    return Publisher(
        bus=bus, clusterset="cs", cluster="a", wall=time.time, counts=EventCounts(),
        keepalive=3.0, export_sets=sets,
    )  # type: ignore[arg-type]  # fmt: skip


def listed(s: ExportSet) -> list[str]:
    return [e.name for e in s.exports]


async def test_one_set_carries_every_export_and_goes_only_when_one_changed() -> None:
    bus = RecordingBus()
    pub = publisher(bus)
    assert await pub.sync_exports(pools("p1", "p2", "p3")) == 3
    assert bus.kinds() == ["ExportSet"]
    (first,) = bus.sets()
    assert listed(first) == ["p1", "p2", "p3"]
    assert await pub.sync_exports(pools("p1", "p2", "p3")) == 0  # nothing changed
    assert len(bus.sent) == 1
    changed = pools("p1", "p2", "p3")
    changed[PoolKey("llm", "p2")] = LocalPool(namespace="llm", name="p2", target_ports=(9000,),
                                              export=EXPORT_VALUE)  # fmt: skip
    assert await pub.sync_exports(changed) == 1
    second = bus.sets()[-1]
    assert listed(second) == ["p1", "p2", "p3"]
    assert second.exports[1].target_ports == (9000,)
    # The unchanged entries are the events peers already hold: they apply as duplicates.
    assert second.exports[0] == first.exports[0]
    assert second.exports[1].generation > first.exports[1].generation
    assert second.sequence > first.sequence
    assert pub.exports_sent == 4


async def test_a_pool_left_out_of_the_set_is_withdrawn_and_a_re_export_is_newer() -> None:
    bus = RecordingBus()
    pub = publisher(bus)
    await pub.sync_exports(pools("p1", "p2"))
    await pub.sync_exports(pools("p1"))
    withdrawing = bus.sets()[-1]
    assert listed(withdrawing) == ["p1"]
    peer = Beliefs()
    for event in bus.sent:
        peer.apply(event, 1.0)
    gone = peer.exports[("a", "llm", "p2")]
    assert gone.withdrawn
    assert gone.generation == withdrawing.sequence  # the set's tombstone
    assert peer.set_moved == (("llm", "p2"),)
    await pub.sync_exports(pools("p1", "p2"))  # exported again
    back = bus.sets()[-1]
    assert back.exports[1].generation > withdrawing.sequence
    assert peer.apply(back, 2.0) is Outcome.APPLIED
    assert not peer.exports[("a", "llm", "p2")].withdrawn
    assert peer.set_moved == (("llm", "p2"),)  # p1's entry repeats what is held


async def test_per_pool_exports_go_beside_the_set_when_a_peer_reads_none() -> None:
    bus = RecordingBus()
    pub = publisher(bus)
    await pub.sync_exports(pools("p1", "p2"))
    assert bus.kinds() == ["ExportSet"]
    # A peer that reads no sets appears: it hears every live export, one per pool, each the
    # very event of the set's entry (so a peer reading both takes each once).
    await pub.sync_exports(pools("p1", "p2"), per_pool=True)
    assert bus.kinds() == ["ExportSet", "ExportEvent", "ExportEvent"]
    assert tuple(bus.sent[1:]) == bus.sets()[0].exports
    await pub.sync_exports(pools("p1", "p2"), per_pool=True)
    assert len(bus.sent) == 3  # said once
    await pub.sync_exports(pools("p1"), per_pool=True)  # p2 withdrawn: its tombstone too
    assert bus.kinds()[3:] == ["ExportSet", "ExportEvent"]
    tombstone = bus.sent[-1]
    assert isinstance(tombstone, ExportEvent)
    assert tombstone.name == "p2"
    assert tombstone.withdrawn


async def test_per_pool_mode_sends_no_set_and_its_beat_says_so() -> None:
    bus = RecordingBus()
    pub = publisher(bus, sets=False)
    await pub.sync_exports(pools("p1", "p2"))
    assert bus.kinds() == ["ExportEvent", "ExportEvent"]
    await pub.publish_beat(2, "v")
    beat = bus.sent[-1]
    assert isinstance(beat, messages.Heartbeat)
    assert beat.export_sets is False
    setting = RecordingBus()
    await publisher(setting).publish_beat(0, "v")
    assert setting.sent[-1].export_sets is True  # type: ignore[union-attr]


async def test_more_exports_than_one_set_holds_go_one_per_pool() -> None:
    bus = RecordingBus()
    pub = publisher(bus)
    many = pools(*(f"p{i:04}" for i in range(messages.MAX_SET_EXPORTS + 1)))
    assert await pub.sync_exports(many) == len(many)
    assert set(bus.kinds()) == {"ExportEvent"}


async def test_a_restarted_publisher_continues_above_its_last_set() -> None:
    bus = RecordingBus()
    pub = publisher(bus)
    await pub.sync_exports(pools("p1", "p2"))
    last = bus.sets()[-1]
    stored = Beliefs()  # what the restarted agent reads back from its stream
    stored.apply(last, 1.0)
    restarted = publisher(bus)
    restarted.wall = lambda: 1.0  # a clock set far back across the restart
    restarted.adopt(stored)
    assert await restarted.sync_exports(pools("p1")) == 1
    assert bus.sets()[-1].sequence > last.sequence
    peer = Beliefs()
    for event in bus.sets():
        peer.apply(event, 1.0)
    assert peer.exports[("a", "llm", "p2")].withdrawn


class StoredButTimedOutBus(RecordingBus):
    """Stores a set and then times out its publish while ``late`` is set (a busy server)."""

    late = False

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> None:
        await super().publish(subject, payload, msg_id, headers)
        if self.late and subject.endswith(messages.EXPORT_SET_TOKEN):
            raise TimeoutError("nats: timeout")


async def test_a_set_that_timed_out_is_said_again_and_a_pool_it_left_out_comes_back() -> None:
    bus = StoredButTimedOutBus()
    pub = publisher(bus)
    await pub.sync_exports(pools("p1", "p2"))
    bus.late = True
    await pub.sync_exports(pools("p1"))  # p2 withdrawn: stored, but we were not told
    bus.late = False
    peer = Beliefs()
    for event in bus.sent:
        peer.apply(event, 1.0)
    assert peer.exports[("a", "llm", "p2")].withdrawn  # peers took the set that timed out
    # p2 is exported again, as it was: the next set says every export again, p2's above the
    # tombstone peers hold.
    await pub.sync_exports(pools("p1", "p2"))
    again = bus.sets()[-1]
    assert listed(again) == ["p1", "p2"]
    assert peer.apply(again, 2.0) is Outcome.APPLIED
    assert not peer.exports[("a", "llm", "p2")].withdrawn
    assert await pub.sync_exports(pools("p1", "p2")) == 0  # said: nothing more


async def test_per_pool_exports_go_oldest_first_with_tombstones_held_from_before() -> None:
    first = RecordingBus()
    pub = publisher(first)
    await pub.sync_exports(pools("p2", "p1", "p3"))
    await pub.sync_exports(pools("p2", "p1"))  # p3 withdrawn by a set alone
    stored = Beliefs()
    for event in first.sent:
        stored.apply(event, 1.0)
    # Restarted, with a peer that reads no sets: its p3 subject may hold the live export from
    # before, so p3's tombstone goes too; every export in the order it was made.
    bus = RecordingBus()
    restarted = publisher(bus)
    restarted.adopt(stored)
    await restarted.sync_exports(pools("p2", "p1"), per_pool=True)
    said = [e for e in bus.sent if isinstance(e, ExportEvent)]
    assert {e.name for e in said} == {"p1", "p2", "p3"}
    assert [e.generation for e in said] == sorted(e.generation for e in said)
    assert next(e for e in said if e.name == "p3").withdrawn


def export(name: str, generation: int, cluster: str = "a", **kw: object) -> ExportEvent:
    return ExportEvent(cluster=cluster, namespace="llm", name=name, generation=generation,
                       exported_at=1.0, published_at=1.0, target_ports=(8000,), **kw)  # type: ignore[arg-type]  # fmt: skip


def exports(sequence: int, *entries: ExportEvent, cluster: str = "a") -> ExportSet:
    return ExportSet(cluster=cluster, sequence=sequence, published_at=1.0, exports=entries)


def test_a_set_mixes_with_per_pool_exports_on_each_pools_generation() -> None:
    b = Beliefs()
    assert b.apply(exports(10, export("p1", 5), export("p2", 6)), 1.0) is Outcome.APPLIED
    assert b.set_moved == (("llm", "p1"), ("llm", "p2"))
    assert b.watermarks["a"] == 6
    # A per-pool export newer than the set: a set that leaves its pool out (published before
    # it) must not withdraw it; an older set is stale as a whole.
    assert b.apply(export("p3", 12), 2.0) is Outcome.APPLIED
    assert b.apply(exports(9, export("p1", 5)), 3.0) is Outcome.STALE
    assert b.apply(exports(11, export("p1", 5)), 3.0) is Outcome.APPLIED
    assert b.set_moved == (("llm", "p2"),)  # p1 repeated, p2 left out, p3 newer than the set
    assert b.exports[("a", "llm", "p2")].withdrawn
    assert b.exports[("a", "llm", "p2")].generation == 11
    assert not b.exports[("a", "llm", "p3")].withdrawn
    assert b.apply(exports(11, export("p1", 5)), 4.0) is Outcome.DUPLICATE
    # A per-pool export of p2 older than the set's tombstone stays withdrawn.
    assert b.apply(export("p2", 7), 5.0) is Outcome.STALE
    # An empty set withdraws every live export of its cluster, and no other cluster's.
    b.apply(export("p1", 20, cluster="b"), 6.0)
    b.apply(exports(30), 6.0)
    assert {k for k, e in b.exports.items() if not e.withdrawn} == {("b", "llm", "p1")}


@dataclass
class Received:
    """What ``check`` reads of a delivery."""

    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def delivery(event: messages.Event) -> Delivery:
    subject = messages.subject_for("cs", event)
    return Received(subject, messages.encode(event))  # type: ignore[return-value]


TOO_MANY = tuple(export(f"p{i}", 5) for i in range(messages.MAX_SET_EXPORTS + 1))


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (exports(10, export("p1", 5, cluster="b")), "schema"),  # speaks for another cluster
        (exports(10, export("p1", 5), export("p1", 6)), "schema"),  # a pool twice
        (exports(10, export("P1", 5)), "schema"),  # not a DNS subdomain
        (exports(10, export("p1", 10**18)), "future-sequence"),  # an entry far ahead
        (exports(10, *TOO_MANY), "schema"),
    ],
)
def test_a_hostile_set_is_refused_with_a_reason(bad: ExportSet, reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        check(delivery(bad), "cs", ("a", "b"), time.time())
    assert refused.value.reason == reason


def test_an_agent_before_sets_refuses_a_set_as_an_unknown_type() -> None:
    # Its decoder's union has no "exports" tag: the set is refused and counted, never applied
    # (and the per-pool exports that go beside it while it is live are what it reads).
    before = msgspec.json.Decoder(
        messages.ExportEvent | messages.LoadReport | messages.LoadDigest | messages.Heartbeat
    )
    with pytest.raises(msgspec.ValidationError, match=r"Invalid value 'exports' - at `\$.type`"):
        before.decode(messages.encode(exports(10, export("p1", 5))))


async def _fleet(export_messages: Mapping[str, str], within: float) -> dict[str, dict[str, int]]:
    """Three agents, two pools exported by each; return what each published, by event type,
    once every agent holds every export and has heard every beat."""
    settings = {c: {"export_messages": m} for c, m in export_messages.items()}
    async with memory_fleet("xs", settings) as agents:
        await wait_for(lambda: every_peer_held(agents, "exports"), within=within,
                       what="every agent holds every export")  # fmt: skip
        await wait_for(lambda: all(len(a.beliefs.beats) == 3 for a in agents.values()),
                       within=within, what="every beat heard")  # fmt: skip
        if export_messages:  # at the set agents' next export sync after its beat was heard
            await wait_for(
                lambda: all(agents[c].counts.published["ExportEvent"] > 0
                            for c in MEMBERS if c not in export_messages),
                within=within, what="per-pool exports for the member that reads no sets",
            )  # fmt: skip
        return {c: dict(a.counts.published) for c, a in agents.items()}


async def test_a_fleet_of_set_agents_sends_no_per_pool_exports() -> None:
    sent = await _fleet({}, within=10)
    for cluster, kinds in sent.items():
        assert kinds.get("ExportEvent", 0) == 0, cluster
        assert kinds["ExportSet"] > 0, cluster


async def test_a_member_that_reads_no_sets_gets_per_pool_exports_from_the_others() -> None:
    sent = await _fleet({"ap-south": "per-pool"}, within=10)
    assert sent["ap-south"].get("ExportSet", 0) == 0
    assert sent["ap-south"]["ExportEvent"] == 2


@pytest.mark.e2e
async def test_a_mixed_fleet_federates_exports_on_a_real_supercluster(
    supercluster: Supercluster, clusterset: str
) -> None:
    """An agent on the old export wire format (one export per pool, a beat without
    ``export_sets``) and two set agents: every import everywhere; the old one sends no sets,
    the new ones send it per-pool exports besides their sets."""
    options = DemoOptions(clusters=3, pools=2, clusterset=clusterset,
                          per_pool_exports=frozenset({"ap-south"}))  # fmt: skip
    async with running_demo(options, supercluster) as demo:
        assert await demo.wait_converged(within=30) is not None
        agents = {name: sim.agent for name, sim in demo.clusters.items()}
        assert agents["ap-south"].counts.published["ExportSet"] == 0
        for name in ("us-east", "eu-west"):
            published = agents[name].counts.published
            assert published["ExportSet"] > 0, name
            await wait_for(lambda p=published: p["ExportEvent"] > 0, within=15,
                           what=f"{name}'s per-pool exports")  # fmt: skip


def test_replay_of_a_pool_shows_the_set_that_withdrew_it_by_leaving_it_out() -> None:
    """``federation replay --pool llm/p2``: the sets that listed p2, and the one after them that
    left it out (withdrawn by omission), told so. Each stream is judged on its own: OUT_a no
    longer holds set 1, so its set 2 withdrew nothing that can be told (IN_b's copies do not
    count). Per-pool exports and tombstones between two sets count as the cluster's exports."""

    def at(stream: str, seq: int, event: ExportSet | ExportEvent) -> Stored:
        return Stored(stream, seq, float(seq), "fed.v1.x.export.a._set", event)

    p1, p2 = export("p1", 1), export("p2", 2)
    stored = [
        at("IN_b", 1, exports(1, p1, p2)),
        at("IN_b", 3, exports(3, p1, p2)),
        at("OUT_a", 2, exports(2, p1)),  # (set 1 aged out of this stream)
        at("OUT_a", 3, exports(3, p1, p2)),
        at("OUT_a", 4, exports(4, p1)),  # p2 left out: withdrawn
        at("OUT_a", 5, export("p3", 5)),  # per pool, between two sets
        at("OUT_a", 6, export("p4", 6)),
        at("OUT_a", 7, export("p4", 7, withdrawn=True)),  # withdrawn per pool already
        at("OUT_a", 8, exports(8, p1)),  # withdraws p3 (p4 was gone)
    ]
    only = select(stored, ReplayFilter(pools=frozenset({PoolKey("llm", "p2")})))
    assert [(s.stream, s.sequence) for s in only] == [
        ("IN_b", 1), ("IN_b", 3), ("OUT_a", 3), ("OUT_a", 4),
    ]  # fmt: skip
    assert only[-1].withdrew == (PoolKey("llm", "p2"),)
    last = select(stored, ReplayFilter(clusters=frozenset({"a"})))[-1]
    assert last.withdrew == (PoolKey("llm", "p3"),)
    printed = row(only[-1])
    assert printed["withdrew"] == ["llm/p2"]
    assert printed["pools"] == ["llm/p1"]
    console = Console(width=300, record=True, file=io.StringIO())
    console.print(replay_table([printed]))  # what `federation replay` prints as a table
    assert "withdrew llm/p2" in console.export_text()
    assert "withdrew" not in row(only[0])
