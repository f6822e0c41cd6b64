"""The agent against a real supercluster: hostile input, restarts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federation import messages
from federation.adapters.bus import inbound_stream, outbound_stream
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.model.pools import PoolKey
from federation.runtime.agent import Agent
from tests.conftest import running_demo, wait_for
from tests.model.factories import load

pytestmark = pytest.mark.e2e


@pytest.fixture
async def demo(supercluster: Supercluster, clusterset: str) -> AsyncIterator[Demo]:
    async with running_demo(
        DemoOptions(clusters=2, pools=3, clusterset=clusterset), supercluster
    ) as d:
        assert await d.wait_converged(within=30) is not None
        yield d


def _hostile(clusterset: str, path: str = "sourced") -> list[tuple[str, bytes, str]]:
    """Hostile payloads on a subject of the inbound stream (an export's) or a live one."""
    subject = (
        messages.export_subject(clusterset, "us-east", "llm", "x")
        if path == "sourced"
        else messages.load_subject(clusterset, "us-east", "llm", "x")
    )
    spoofed = load(cluster="eu-west", name="x", sequence=2**62)
    good = orjson.loads(messages.encode(load(cluster="us-east", name="x")))
    return [
        (subject, b"\x00\xff not json", "malformed"),
        (subject, b'{"type": "load.v9", "cluster": "us-east"}', "unknown-type"),
        (subject, orjson.dumps({**good, "ready_pods": "many"}), "schema"),
        (subject, messages.encode(spoofed), "subject-mismatch"),
        (subject, b"[" * (messages.MAX_EVENT_BYTES + 10), "oversized"),
    ]


@pytest.mark.parametrize("path", ["sourced", "live"])
async def test_hostile_events_are_rejected_counted_and_never_applied(demo: Demo, path: str) -> None:
    cs = demo.options.clusterset
    peer = demo.clusters["eu-west"].agent
    assert peer is not None
    before = dict(peer.views)
    nc = await nats.connect(demo.supercluster.url("us-east"))
    try:
        js = nc.jetstream()
        for i, (subject, payload, reason) in enumerate(_hostile(cs, path)):
            had = peer.counts.rejected[reason]
            await js.publish(subject, payload, headers={"Nats-Msg-Id": f"hostile-{i}"})
            if path == "live":  # one at a time: a live subject keeps only its newest waiting
                await wait_for(
                    lambda r=reason, h=had: peer.counts.rejected[r] > h,  # type: ignore[misc]
                    within=15,
                    what=f"{reason} rejected",
                )
    finally:
        await nc.close()
    expected = {reason: 1 for _, _, reason in _hostile(cs, path)}
    await wait_for(
        lambda: dict(peer.counts.rejected) == expected,
        within=15,
        what=f"rejections {expected}, have {dict(peer.counts.rejected)}",
    )
    demo.check_agents()
    assert ("eu-west", "llm", "x") not in peer.beliefs.loads
    assert ("us-east", "llm", "x") not in peer.beliefs.loads
    assert set(peer.views) == set(before)
    assert demo.converged()


async def test_a_restarted_agent_keeps_its_exports_and_rebuilds_its_beliefs(demo: Demo) -> None:
    peer = demo.clusters["eu-west"].agent
    assert peer is not None
    key = ("us-east", "llm", "llama-3-70b")
    first = peer.beliefs.exports[key]
    await demo.stop_agent("us-east")
    await demo.start_agent("us-east")
    restarted = demo.clusters["us-east"].agent
    assert restarted is not None
    await wait_for(lambda: restarted.ready.is_set(), within=30, what="restarted agent ready")
    # Rebuilt from the streams: it believes what it believed before, its own exports included.
    assert restarted.beliefs.exports[key] == first
    assert await demo.wait_converged(within=15) is not None
    await wait_for(
        lambda: restarted.counts.published["Heartbeat"] >= 1, within=10, what="a heartbeat"
    )
    # Unchanged exports are not republished, so peers see the same generation and export time.
    assert restarted.counts.published["ExportEvent"] == 0
    assert peer.beliefs.exports[key] == first
    assert not any(e.withdrawn for e in peer.beliefs.exports.values())
    assert PoolKey("llm", "llama-3-70b") in demo.clusters["eu-west"].imports.views


VALID = orjson.loads(messages.encode(load(cluster="us-east", name="x")))
RAW_VALID = messages.encode(load(cluster="us-east", name="x"))
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Hostile payloads for one load-report subject: noise, cut-off events, a field replaced by any
# JSON value, deep nesting, wrong types and names, and valid events with extra fields.
POISON = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.integers(1, len(RAW_VALID) - 2).map(lambda n: RAW_VALID[:n]),
    st.tuples(st.sampled_from(sorted(VALID)), JSON).map(
        lambda kv: orjson.dumps({**VALID, kv[0]: kv[1]})
    ),
    st.integers(100, 5000).map(lambda n: b"[" * n + b"]" * 3),
    st.sampled_from(["", "LOAD", "load2", "load.v9"]).map(
        lambda t: orjson.dumps({**VALID, "type": t})
    ),
    st.sampled_from(["", "US-EAST", "a.b", "*", ">", "eu-west"]).map(
        lambda c: orjson.dumps({**VALID, "cluster": c})
    ),
    st.dictionaries(st.text(max_size=8), JSON, max_size=3).map(
        lambda extra: orjson.dumps({**extra, **VALID, "sequence": 1})
    ),
)


def _handled(agent: Agent) -> int:
    """Events the agent is done with: checked, or superseded on their live subject unchecked."""
    c = agent.counts
    return c.applied + c.duplicates + c.stale + sum(c.rejected.values()) + c.superseded


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payloads=st.lists(POISON, min_size=60, max_size=60))
async def test_fuzzed_poison_never_crashes_the_agent_or_changes_its_imports(
    demo: Demo, payloads: list[bytes]
) -> None:
    """Hypothesis-generated hostile payloads, published raw on a peer's live subject through
    JetStream, reach a live agent; 3 batches of 60 against the same agents."""
    cs = demo.options.clusterset
    peer = demo.clusters["eu-west"].agent
    assert peer is not None
    before = {k: (v.desired.exporting_clusters, set(v.weights)) for k, v in peer.views.items()}
    # Well-formed but far ahead: accepted, it would make every honest report look stale.
    payloads = [*payloads, orjson.dumps({**VALID, "sequence": 2**62})]
    handled_before, rejected_before = _handled(peer), peer.counts.rejected.copy()
    subject = messages.load_subject(cs, "us-east", "llm", "x")  # a live subject
    nc = await nats.connect(demo.supercluster.url("us-east"))
    try:
        js = nc.jetstream()
        for payload in payloads:
            await js.publish(subject, payload, headers={"Nats-Msg-Id": uuid.uuid4().hex})
    finally:
        await nc.close()
    # The far-ahead event comes last and a live subject's events arrive in order, so once it is
    # rejected every payload was checked or superseded by a later one (other events arrive
    # meanwhile: the count is a bound).
    await wait_for(
        lambda: (
            _handled(peer) - handled_before >= len(payloads)
            and peer.counts.rejected["future-sequence"] > rejected_before["future-sequence"]
        ),
        within=20,
        what="every poison message to be handled",
    )
    demo.check_agents()
    after = {k: (v.desired.exporting_clusters, set(v.weights)) for k, v in peer.views.items()}
    assert after == before


async def test_events_lost_on_the_way_are_counted_as_sequence_gaps(demo: Demo) -> None:
    """A peer's source is detached while that peer's per-subject history rolls over; once the
    source is back (the agent's own source check puts it back), the exports that were dropped in
    between are counted as missed, exactly (by the exports' own count: the filtered source skips
    the live events' sequences between them, which are no gap)."""
    cs = demo.options.clusterset
    agent = demo.clusters["us-east"].agent
    assert agent is not None
    await wait_for(lambda: "eu-west" in agent.gaps.last, within=10, what="a sourced delivery")
    assert agent.gaps.missed["eu-west"] == 0  # a healthy link loses nothing

    nc = await nats.connect(demo.supercluster.url("us-east"))
    try:
        js = nc.jetstream()
        inbound = await js.stream_info(inbound_stream(cs, "us-east"))
        config = inbound.config
        config.sources = [
            s for s in config.sources or [] if s.name != outbound_stream(cs, "eu-west")
        ]
        await js.update_stream(config)  # as a half-failed re-attach leaves it
        history = agent.settings.history_per_subject
        subject = messages.export_subject(cs, "eu-west", "llm", "rolled-over")
        # As eu-west's agent would number its next exports (it has none to send meanwhile).
        publisher = demo.clusters["eu-west"].agent.publisher  # type: ignore[union-attr]
        epoch, sent = publisher.export_epoch, publisher.exports_counted
        peer = await nats.connect(demo.supercluster.url("eu-west"))
        try:
            for i in range(history + 4):  # the peer's stream keeps only the last `history`
                counted = messages.export_seq_header(epoch, sent + 1 + i)
                headers = {"Nats-Msg-Id": f"roll-{i}", messages.EXPORT_SEQ_HEADER: counted}
                await peer.jetstream().publish(subject, b"{}", headers=headers)
        finally:
            await peer.close()
    finally:
        await nc.close()
    await wait_for(
        lambda: agent.gaps.missed["eu-west"] > 0,
        within=30,
        what="the source put back and the gap seen",
    )
    assert agent.gaps.missed["eu-west"] == 4
    assert agent.counts.sources_restarted >= 1
    assert agent.status()["peers"]["eu-west"]["missed_events"] == 4
    demo.check_agents()
