"""One contract, two buses: the real NatsBus (a supercluster with cuttable gateway links) and the
in-memory fake the fast agent tests run on. What the agent relies on holds for both."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from federation import messages
from federation.app.assembly import nats_bus
from federation.kit.memory_bus import MemoryNetwork
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.layouts import cluster_names
from federation.runtime.ports import Bus, Delivery
from federation.settings import Settings
from tests.conftest import wait_for

MEMBERS = tuple(cluster_names(3))
_sets = itertools.count()


# One event loop for the module: the gateway proxies of the supercluster live in it.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def proxied(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Supercluster]:
    sc = Supercluster(list(MEMBERS), tmp_path_factory.mktemp("contract"), gateway_proxies=True)
    try:
        await sc.start()
        yield sc
    finally:
        sc.stop()
        await sc.stop_proxies()


@dataclass
class World:
    """Buses of one cluster set, and a switch that cuts one cluster off from the others."""

    kind: str
    clusterset: str
    supercluster: Supercluster | None = None
    network: MemoryNetwork | None = None
    buses: list[Bus] = field(default_factory=list)

    async def bus(self, cluster: str) -> Bus:
        if self.network is not None:
            bus: Bus = self.network.bus(cluster)
        else:
            assert self.supercluster is not None
            bus = nats_bus(Settings(clusterset=self.clusterset, cluster=cluster, members=MEMBERS,
                                    nats_url=self.supercluster.url(cluster)))  # fmt: skip
        await bus.connect()
        await bus.ensure_streams()
        await bus.start_consuming()
        self.buses.append(bus)
        return bus

    async def partition(self, cluster: str) -> None:
        if self.network is not None:
            self.network.partition(cluster)
            return
        assert self.supercluster is not None
        for other in MEMBERS:
            if other != cluster:
                await self.supercluster.partition(cluster, other)

    def heal(self, cluster: str) -> None:
        if self.network is not None:
            self.network.heal(cluster)
            return
        assert self.supercluster is not None
        for other in MEMBERS:
            if other != cluster:
                self.supercluster.heal(cluster, other)


@pytest.fixture(params=[pytest.param("nats", marks=pytest.mark.bus), "memory"])
def backend(request: pytest.FixtureRequest) -> Supercluster | None:
    """The real supercluster (started once, on first use), or None for the fake."""
    if request.param == "memory":
        return None
    sc: Supercluster = request.getfixturevalue("proxied")
    return sc


@pytest_asyncio.fixture(loop_scope="module")
async def world(backend: Supercluster | None) -> AsyncIterator[World]:
    cs = f"c{next(_sets)}"
    if backend is None:
        w = World("memory", cs, network=MemoryNetwork(cs, MEMBERS))
    else:
        w = World("nats", cs, supercluster=backend)
    try:
        yield w
    finally:
        for bus in w.buses:
            await bus.close()


def subject(w: World, cluster: str, pool: str = "p") -> str:
    """A subject the inbound streams source (an export's)."""
    return messages.export_subject(w.clusterset, cluster, "llm", pool)


async def collect(bus: Bus, want: int, *, within: float = 15) -> list[Delivery]:
    got: list[Delivery] = []

    async def enough() -> bool:
        for d in await bus.fetch(64, 0.2):
            await d.ack()
            got.append(d)
        return len(got) >= want

    await wait_for(enough, within=within, what=f"{want} deliveries")
    return got


def of(deliveries: list[Delivery], prefix: str) -> list[Delivery]:
    return [d for d in deliveries if d.subject.startswith(prefix)]


async def test_a_peer_receives_what_a_cluster_publishes_with_its_origin(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    assert east.connected
    assert await east.publish(subject(world, "us-east"), b"one", "m1", {"traceparent": "x"})
    got = await collect(west, 1)
    (d,) = got
    assert (d.subject, d.data, d.headers["traceparent"]) == (subject(world, "us-east"), b"one", "x")
    assert d.origin is not None
    assert d.origin[0] == "us-east"


async def test_a_message_id_is_stored_once_and_order_per_subject_holds(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    for i in range(5):
        assert await east.publish(subject(world, "us-east"), str(i).encode(), f"id{i}")
    assert not await east.publish(subject(world, "us-east"), b"again", "id4")  # a re-send
    got = await collect(west, 5)
    assert [d.data for d in got] == [b"0", b"1", b"2", b"3", b"4"]
    origins = [d.origin[1] for d in got if d.origin]
    assert origins == sorted(origins)
    assert await west.fetch(64, 0.5) == []  # the duplicate never arrives


async def test_a_new_consumer_starts_at_the_newest_message_per_subject(world: World) -> None:
    east = await world.bus("us-east")
    for pool, data in (("a", b"a1"), ("b", b"b1"), ("a", b"a2")):
        await east.publish(subject(world, "us-east", pool), data, f"{pool}-{data!r}")
    west = await world.bus("eu-west")

    async def holds_all() -> bool:  # the inbound stream sources asynchronously on NATS
        await west.start_consuming()
        seen = {d.subject: d.data for d in await west.fetch(64, 0.5)}
        return seen == {
            subject(world, "us-east", "a"): b"a2",
            subject(world, "us-east", "b"): b"b1",
        }

    await wait_for(holds_all, within=15, what="the newest message of each subject")


async def test_a_nak_redelivers(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    await east.publish(subject(world, "us-east"), b"x", "n1")
    first: list[Delivery] = []

    async def delivered() -> bool:
        first.extend(await west.fetch(1, 0.2))
        return bool(first)

    await wait_for(delivered, within=15, what="the first delivery")
    await first[0].nak(0.1)  # a temporary failure: not acknowledged
    (again,) = await collect(west, 1)
    assert again.data == b"x"


async def test_a_cluster_cannot_publish_on_another_clusters_subjects(world: World) -> None:
    east = await world.bus("us-east")
    with pytest.raises(Exception):  # noqa: B017, PT011 - NoRespondersError on NATS
        await east.publish(subject(world, "eu-west"), b"spoof", "s1")


async def heard(
    bus: Bus, want: dict[str, bytes], send: Bus | None = None, *, within: float = 10
) -> None:
    """Wait until the newest live event heard on each subject of ``want`` is its value; with
    ``send``, publish them from it until then (a new subscription's interest reaches the other
    NATS clusters through their gateways a moment later: what is sent before is not heard)."""
    newest: dict[str, bytes] = {}
    ids = itertools.count()

    async def all_heard() -> bool:
        if send is not None:
            for k, v in want.items():
                await send.publish(k, v, f"{k}-{next(ids)}")
        for d in await bus.live(0.2):
            assert d.origin is None  # plain NATS: nothing stored for the receiver
            newest[d.subject] = d.data
        return all(newest.get(k) == v for k, v in want.items())

    await wait_for(all_heard, within=within, what=f"live {sorted(want)}")


async def test_live_events_are_heard_on_plain_nats_and_not_sourced(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    await west.watch_live()
    cs = world.clusterset
    beat, digest = messages.beat_subject(cs, "us-east"), messages.digest_subject(cs, "us-east")
    load = messages.load_subject(cs, "us-east", "llm", "p")
    await heard(west, {beat: b"b1", digest: b"d1", load: b"l1"}, east)
    # Exports only in the inbound stream: an export published after the live events arrives,
    # and is the only thing the consumer ever delivers.
    await east.publish(subject(world, "us-east"), b"e1", "e1")
    got = await collect(west, 1)
    assert [d.subject for d in got] == [subject(world, "us-east")]
    assert await west.fetch(64, 0.5) == []


async def test_a_live_subject_waiting_holds_only_its_newest_event(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    await west.watch_live()
    beat = messages.beat_subject(world.clusterset, "us-east")
    await heard(west, {beat: b"first"}, east)
    for i in range(5):  # nobody takes them meanwhile
        await east.publish(beat, f"b{i}".encode(), f"n{i + 2}")

    async def newest_only() -> bool:
        taken = await west.live(0.2)
        return [d.data for d in taken if d.subject == beat][-1:] == [b"b4"] and len(
            [d for d in taken if d.subject == beat]
        ) == 1

    await wait_for(newest_only, within=10, what="one beat, the newest")


async def test_a_starting_agent_reads_every_members_newest_live_events(world: World) -> None:
    cs = world.clusterset
    for cluster in ("us-east", "ap-south"):
        bus = await world.bus(cluster)
        await bus.publish(messages.beat_subject(cs, cluster), b"old", f"{cluster}-1")
        await bus.publish(messages.beat_subject(cs, cluster), b"new", f"{cluster}-2")
        await bus.publish(messages.digest_subject(cs, cluster), b"digest", f"{cluster}-3")
    west = await world.bus("eu-west")  # published nothing: nothing of its own is found

    async def all_read() -> bool:
        return {(d.subject, d.data) for d in await west.newest_live()} == {
            (messages.beat_subject(cs, c), b"new") for c in ("us-east", "ap-south")
        } | {(messages.digest_subject(cs, c), b"digest") for c in ("us-east", "ap-south")}

    await wait_for(all_read, within=10, what="members' newest beats and digests")
    # Asked for some members (peers whose lease ran out), only theirs.
    east_only = {(d.subject, d.data) for d in await west.newest_live(["us-east"])}
    assert east_only == {(messages.beat_subject(cs, "us-east"), b"new"),
                         (messages.digest_subject(cs, "us-east"), b"digest")}  # fmt: skip


async def test_a_newest_live_event_already_heard_live_is_not_read_again(world: World) -> None:
    """At start, one heard live since watching is newer than the stream's: it is taken from the
    mailbox, and not read (at 100 members most are heard before their turn to be read)."""
    cs = world.clusterset
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    beat, digest = messages.beat_subject(cs, "us-east"), messages.digest_subject(cs, "us-east")
    await east.publish(digest, b"digest", "d1")
    await west.watch_live()
    mailbox = west.live_mailbox  # type: ignore[attr-defined]

    async def beat_heard() -> bool:
        if not mailbox.holds(beat):
            await east.publish(beat, b"live", f"b{next(_sets)}")
        return bool(mailbox.holds(beat))

    await wait_for(beat_heard, within=10, what="a beat heard live")

    async def digest_read() -> bool:
        return {(d.subject, d.data) for d in await west.newest_live(["us-east"])} == {
            (digest, b"digest")
        }

    await wait_for(digest_read, within=10, what="the digest read, the beat not")
    assert (beat, b"live") in {(d.subject, d.data) for d in await west.live(0)}


async def test_live_events_sent_during_a_partition_are_lost_and_the_next_arrives(
    world: World,
) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    await west.watch_live()
    beat = messages.beat_subject(world.clusterset, "us-east")
    await heard(west, {beat: b"before"}, east)
    await world.partition("us-east")
    try:
        await east.publish(beat, b"during", "q1")
        assert [d.data for d in await west.live(1.0)] == []
    finally:
        world.heal("us-east")
    sent = iter(range(2, 1000))

    async def next_heard() -> bool:  # gateway interest comes back within seconds of the heal
        await east.publish(beat, b"after", f"q{next(sent)}")
        return any(d.data == b"after" for d in await west.live(0.5))

    await wait_for(next_heard, within=60, what="a live event after the heal")


async def test_what_is_published_during_a_partition_arrives_after_the_heal(world: World) -> None:
    east, west = await world.bus("us-east"), await world.bus("eu-west")
    await east.publish(subject(world, "us-east"), b"before", "p0")
    await collect(west, 1)
    await world.partition("us-east")
    try:
        await east.publish(subject(world, "us-east"), b"during", "p1")  # the local server stores it
        assert await west.fetch(64, 1.0) == []
    finally:
        world.heal("us-east")
    got = await collect(west, 1, within=60)
    assert [d.data for d in got] == [b"during"]
