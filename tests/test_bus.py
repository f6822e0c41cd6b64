"""The bus adapter against a real NATS supercluster."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.js.api import StreamSource
from nats.js.errors import NotFoundError

from federation import messages
from federation.adapters.bus import (
    BusAddress,
    NatsBus,
    inbound_stream,
    outbound_stream,
    shared_inbound_stream,
)
from federation.kit.nats_servers import Supercluster
from tests.conftest import wait_for
from tests.model.factories import export

pytestmark = pytest.mark.bus


def _bus(sc: Supercluster, clusterset: str, cluster: str) -> NatsBus:
    members = tuple(sc.specs)
    return NatsBus(BusAddress(sc.url(cluster), clusterset, cluster, cluster, members))


async def _delivered(bus: NatsBus, cluster: str) -> list:
    """The first fetch that delivers anything (waited for with a deadline)."""
    got: list = []

    async def fetched() -> bool:
        got.extend(await bus.fetch(10, 0.2))
        return bool(got)

    await wait_for(fetched, within=15, what=f"delivery at {cluster}")
    return got


async def _started(sc: Supercluster, clusterset: str, cluster: str) -> NatsBus:
    bus = _bus(sc, clusterset, cluster)
    await bus.connect()
    await bus.ensure_streams()
    await bus.start_consuming()
    return bus


async def test_streams_are_placed_in_the_clusters_own_nats_cluster(
    supercluster: Supercluster, clusterset: str
) -> None:
    bus = await _started(supercluster, clusterset, "eu-west")
    try:
        for name in (outbound_stream(clusterset, "eu-west"), inbound_stream(clusterset, "eu-west")):
            info = await bus.js.stream_info(name)
            assert info.cluster is not None
            assert info.cluster.name == "eu-west"
        inbound = await bus.js.stream_info(inbound_stream(clusterset, "eu-west"))
        # Every member's exports, and nothing else (live events travel on plain NATS).
        assert {(s.name, s.filter_subject) for s in inbound.config.sources or []} == {
            (outbound_stream(clusterset, c), messages.exports_subject(clusterset, c))
            for c in supercluster.specs
        }
    finally:
        await bus.close()


async def test_ensure_streams_is_idempotent(supercluster: Supercluster, clusterset: str) -> None:
    bus = await _started(supercluster, clusterset, "us-east")
    try:
        subject = messages.subject_for(clusterset, export(cluster="us-east"))
        await bus.publish(subject, b"{}", "kept")
        names = (outbound_stream(clusterset, "us-east"), inbound_stream(clusterset, "us-east"))
        before = [(await bus.js.stream_info(n)).config for n in names]
        await bus.ensure_streams()
        await bus.ensure_streams()
        after = [(await bus.js.stream_info(n)).config for n in names]
        assert after == before
        # Already as configured: read, not updated (two streams, two ensures).
        assert bus.stream_updates_skipped == 4
        info = await bus.js.stream_info(names[0])
        assert info.state.messages == 1  # re-ensuring never purges what was published
    finally:
        await bus.close()


async def test_the_kit_counts_the_subjects_a_stream_holds(
    supercluster: Supercluster, clusterset: str
) -> None:
    """What the scale benchmark reads when a run does not converge (where did exports go?)."""
    bus = await _started(supercluster, clusterset, "us-east")
    try:
        out = outbound_stream(clusterset, "us-east")
        for name in ("p1", "p2", "p1"):  # two subjects, one of them twice
            event = export(cluster="us-east", name=name)
            await bus.publish(messages.subject_for(clusterset, event), b"{}", None)
        exports = messages.exports_subject(clusterset, "us-east")
        beats = messages.beat_subject(clusterset, "us-east")
        for via in supercluster.specs:  # asked through any server of the supercluster
            asked = [(out, exports), (out, beats), ("NO_SUCH_STREAM", exports)]
            assert await supercluster.subjects_held(via, asked) == [2, 0, None]
        assert await supercluster.slow_consumers() == dict.fromkeys(supercluster.specs, 0)
    finally:
        await bus.close()


async def test_an_event_reaches_every_members_inbound_stream(
    supercluster: Supercluster, clusterset: str
) -> None:
    buses = {c: await _started(supercluster, clusterset, c) for c in supercluster.specs}
    try:
        event = export(cluster="us-east")
        subject = messages.subject_for(clusterset, event)
        assert await buses["us-east"].publish(subject, messages.encode(event), "id-1")
        for cluster, bus in buses.items():
            got = await _delivered(bus, cluster)
            assert [d.subject for d in got] == [subject]
            assert messages.decode(got[0].data) == event
            await got[0].ack()
    finally:
        for bus in buses.values():
            await bus.close()


async def test_a_resent_msg_id_is_dropped_by_the_server(
    supercluster: Supercluster, clusterset: str
) -> None:
    bus = await _started(supercluster, clusterset, "us-east")
    try:
        subject = messages.subject_for(clusterset, export(cluster="us-east"))
        assert await bus.publish(subject, b"{}", "same-id") is True
        assert await bus.publish(subject, b"{}", "same-id") is False
        info = await bus.js.stream_info(outbound_stream(clusterset, "us-east"))
        assert info.state.messages == 1
    finally:
        await bus.close()


async def test_a_live_event_is_stored_and_its_ack_taken_after_the_publish_returned(
    supercluster: Supercluster, clusterset: str
) -> None:
    bus = await _started(supercluster, clusterset, "us-east")
    try:
        beat = messages.beat_subject(clusterset, "us-east")
        for _ in range(3):
            assert await bus.publish(beat, b"{}", None) is True  # no msg id: a live event
        # Their acks are taken in the background: the stream's sequences are known (what a
        # lost store is noticed by), and none was missed.
        await wait_for(lambda: bus._outbound_last == 3, within=5, what="the live acks")
        assert bus.live_acks_missed == 0
        stored = await bus.js.stream_info(outbound_stream(clusterset, "us-east"))
        assert stored.state.messages == 3  # the stream keeps them for replay
    finally:
        await bus.close()


async def test_a_live_event_no_stream_stores_is_counted_as_an_ack_missed(
    supercluster: Supercluster, clusterset: str
) -> None:
    """Its outbound stream deleted under it (a lost store), a live beat is still sent (peers
    hear it on plain NATS) but no stream stores it: the ack that does not come (here the
    server's "no responders" at once; a timeout counts the same) is counted, which
    ``federation_live_acks_missed_total`` exports."""
    bus = await _started(supercluster, clusterset, "us-east")
    try:
        await bus.js.delete_stream(outbound_stream(clusterset, "us-east"))
        beat = messages.beat_subject(clusterset, "us-east")
        assert await bus.publish(beat, b"{}", None) is True  # (not waited for)
        await wait_for(lambda: bus.live_acks_missed == 1, within=10, what="the missed ack")
    finally:
        await bus.close()


async def test_a_restarted_consumer_sees_only_the_newest_event_per_subject(
    supercluster: Supercluster, clusterset: str
) -> None:
    bus = await _started(supercluster, clusterset, "ap-south")
    try:
        for seq in (1, 2, 3):
            for name in ("p1", "p2"):
                e = export(cluster="ap-south", name=name, generation=seq)
                await bus.publish(
                    messages.subject_for(clusterset, e), messages.encode(e), f"{name}{seq}"
                )
        await wait_for(
            lambda: _inbound_has(bus, clusterset, 6), within=15, what="sourcing of 6 events"
        )
        await bus.start_consuming()  # what an agent restart does
        got = await bus.fetch(100, 1.0)
        decoded = sorted(
            (e.name, messages.sequence_of(e)) for e in map(messages.decode, (d.data for d in got))
        )
        assert decoded == [("p1", 3), ("p2", 3)]
        assert got[-1].pending == 0
    finally:
        await bus.close()


async def _inbound_has(bus: NatsBus, clusterset: str, count: int) -> bool:
    info = await bus.js.stream_info(inbound_stream(clusterset, bus.address.cluster))
    return info.state.messages >= count


async def test_a_source_check_puts_back_sources_a_failed_restart_left_out(
    supercluster: Supercluster, clusterset: str
) -> None:
    """A restart removes and re-adds a source in two updates; when the second fails (JetStream
    answers 503 for seconds after a gateway heal) the source is gone. The next check repairs it,
    and peers' events flow into the inbound stream again."""
    bus = await _started(supercluster, clusterset, "eu-west")
    peer = await _started(supercluster, clusterset, "us-east")
    try:
        name = inbound_stream(clusterset, "eu-west")
        info = await bus.js.stream_info(name)
        config = info.config
        config.sources = [
            s for s in config.sources or [] if s.name != outbound_stream(clusterset, "us-east")
        ]
        await bus.js.update_stream(config)  # the first step of a restart, and no second one

        # Nothing is stalled by the clock (every source was just active), yet one is missing.
        assert await bus.restart_stalled_sources(3600.0) == [outbound_stream(clusterset, "us-east")]
        repaired = await bus.js.stream_info(name)
        assert {s.name for s in repaired.config.sources or []} == {
            outbound_stream(clusterset, c) for c in supercluster.specs
        }
        assert await bus.restart_stalled_sources(3600.0) == []  # repaired once, then quiet

        event = export(cluster="us-east", name="after-repair")
        await peer.publish(messages.subject_for(clusterset, event), messages.encode(event), "r1")

        async def arrived() -> bool:
            got = await bus.fetch(64, 0.5)
            return any(d.subject.endswith("after-repair") for d in got)

        await wait_for(arrived, within=15, what="us-east's event in eu-west's inbound stream")
    finally:
        await bus.close()
        await peer.close()


async def test_a_supercluster_that_never_gets_ready_is_stopped_and_says_why(tmp_path: Path) -> None:
    """Two attempts (the second from empty stores), then a TimeoutError with the servers' last
    log lines, and no server left running."""
    sc = Supercluster(["a", "b", "c"], tmp_path)
    with pytest.raises(TimeoutError, match=r"no JetStream meta leader: \[a\] .*\[c\]"):
        await sc.start(within=0.4)  # an election takes seconds: both attempts time out
    assert not any(sc.is_running(c) for c in sc.specs)


async def test_agents_from_before_the_live_path_and_after_hear_each_other(
    supercluster: Supercluster, clusterset: str
) -> None:
    """An agent of the previous version sources *every* subject of members' outbound streams
    into its inbound stream and reads live events only from there; this version publishes
    everything to its outbound stream still, and hears the old one's live events on plain NATS."""
    new = await _started(supercluster, clusterset, "us-east")
    await new.watch_live()
    old = await _started(supercluster, clusterset, "eu-west")
    try:
        # eu-west's inbound stream as the previous version configures it: unfiltered sources.
        name = inbound_stream(clusterset, "eu-west")
        config = (await old.js.stream_info(name)).config
        config.sources = [
            StreamSource(name=outbound_stream(clusterset, c)) for c in supercluster.specs
        ]
        await old.js.update_stream(config)
        new_beat = messages.beat_subject(clusterset, "us-east")
        old_beat = messages.beat_subject(clusterset, "eu-west")
        sent = iter(range(1000))

        async def old_stored_new_beat() -> bool:
            await new.publish(new_beat, b"{}", f"n{next(sent)}")
            try:  # what the old consumer reads
                return (await old.js.get_msg(name, subject=new_beat)).subject == new_beat
            except NotFoundError:  # not sourced yet
                return False

        await wait_for(old_stored_new_beat, within=15, what="the new agent's beat sourced")

        async def new_heard_old_beat() -> bool:
            await old.publish(old_beat, b"{}", f"o{next(sent)}")
            return any(d.subject == old_beat for d in await new.live(0.5))

        await wait_for(new_heard_old_beat, within=15, what="the old agent's beat heard live")
    finally:
        await new.close()
        await old.close()


async def test_agents_of_one_nats_cluster_share_its_inbound_stream(
    supercluster: Supercluster, clusterset: str
) -> None:
    """--shared-inbound: one inbound stream per NATS cluster (N x C sources, not C x C), each
    agent with its own consumer on it; every export still reaches every agent once."""
    nats_a, nats_b = list(supercluster.specs)[:2]
    placed = {"a1": nats_a, "a2": nats_a, "b1": nats_b}
    buses = {
        c: NatsBus(
            BusAddress(supercluster.url(n), clusterset, c, n, tuple(placed), shared_inbound=True)
        )
        for c, n in placed.items()
    }
    try:
        for bus in buses.values():
            await bus.connect()
            await bus.ensure_streams()
            await bus.start_consuming()
        js = buses["a1"].js
        shared = await js.stream_info(shared_inbound_stream(clusterset, nats_a))
        assert shared.config.placement is not None
        assert shared.config.placement.cluster == nats_a
        assert len(shared.config.sources or []) == len(placed)  # one per member, not per agent
        with pytest.raises(NotFoundError):
            await js.stream_info(inbound_stream(clusterset, "a1"))
        event = export(cluster="b1")
        subject = messages.subject_for(clusterset, event)
        assert await buses["b1"].publish(subject, messages.encode(event), "id-shared")
        for cluster, bus in buses.items():
            got = await _delivered(bus, cluster)
            assert [d.subject for d in got] == [subject]  # once each, by its own consumer
            await got[0].ack()
        assert await buses["a2"].restart_stalled_sources(60.0) == []
    finally:
        for bus in buses.values():
            await bus.close()


async def test_a_shared_source_set_up_before_its_peers_stream_is_restarted_once_heard(
    supercluster: Supercluster, clusterset: str
) -> None:
    """A whole ClusterSet starting at once: a shared inbound stream made before a peer's
    outbound stream existed asks that stream for a consumer, gets no answer, and (nats-server
    2.15) asks again only about 42 s later. Once the peer is heard live and the source has been
    seen out of contact for ``quiet_after`` (another agent of the stream may have just re-added
    it), the check restarts it, and the peer's exports flow at once."""
    nats_a, nats_b = list(supercluster.specs)[:2]
    members = ("a1", "late")
    early = NatsBus(BusAddress(supercluster.url(nats_a), clusterset, "a1", nats_a, members,
                               shared_inbound=True))  # fmt: skip
    late = NatsBus(BusAddress(supercluster.url(nats_b), clusterset, "late", nats_b, members))
    watcher = await nats.connect(supercluster.url(nats_a))
    try:
        asked = await watcher.subscribe(
            f"$JS.API.CONSUMER.CREATE.{outbound_stream(clusterset, 'late')}.>"
        )
        await watcher.flush()  # the server has our interest before the stream's first ask
        await early.connect()
        await early.ensure_streams()
        await early.start_consuming()
        await asked.next_msg(timeout=15)  # the source asked, before the peer's stream exists
        await late.connect()
        await late.ensure_streams()
        event = export(cluster="late", name="from-late")
        assert await late.publish(messages.subject_for(clusterset, event),
                                  messages.encode(event), "late-1")  # fmt: skip
        # Heard live, but out of contact only since this check: left alone for now.
        assert await early.restart_stalled_sources(3600.0, heard_live=["late"]) == []
        assert await early.restart_stalled_sources(
            3600.0, heard_live=["late"], quiet_after=0.0
        ) == [outbound_stream(clusterset, "late")]
        got = await _delivered(early, "a1")  # within 15 s; without the restart, 42 s
        assert [d.subject for d in got] == [messages.subject_for(clusterset, event)]
        info = await early.js.stream_info(shared_inbound_stream(clusterset, nats_a))
        assert {s.name for s in info.config.sources or []} == {
            outbound_stream(clusterset, m) for m in members
        }
        # In contact now (a healthy source hears from its stream every second or so).
        assert (
            await early.restart_stalled_sources(3600.0, heard_live=["late"], quiet_after=30.0) == []
        )
    finally:
        await watcher.close()
        await early.close()
        await late.close()


async def test_ensure_streams_updates_a_stream_whose_config_differs(
    supercluster: Supercluster, clusterset: str
) -> None:
    """A member added to the ClusterSet (an agent restarted with the longer list) changes the
    inbound stream's sources: that is updated, though the outbound stream is left alone."""
    names = list(supercluster.specs)
    first = NatsBus(BusAddress(supercluster.url(names[0]), clusterset, names[0], names[0],
                               tuple(names[:2])))  # fmt: skip
    await first.connect()
    await first.ensure_streams()
    await first.close()
    bus = _bus(supercluster, clusterset, names[0])  # every member now
    await bus.connect()
    try:
        await bus.ensure_streams()
        assert bus.stream_updates_skipped == 1  # the outbound stream
        inbound = await bus.js.stream_info(inbound_stream(clusterset, names[0]))
        assert {s.name for s in inbound.config.sources or []} == {
            outbound_stream(clusterset, c) for c in names
        }
    finally:
        await bus.close()
