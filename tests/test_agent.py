"""The agent against a real supercluster: hostile input, restarts."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import nats
import orjson
import pytest

from federation import messages
from federation.adapters.nats_servers import Supercluster
from federation.model.pools import PoolKey
from federation.runtime.agent import Agent
from federation.sim.demo import Demo, DemoOptions
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


def _hostile(clusterset: str) -> list[tuple[str, bytes, str]]:
    subject = messages.load_subject(clusterset, "us-east", "llm", "x")
    spoofed = load(cluster="eu-west", name="x", sequence=2**62)
    good = orjson.loads(messages.encode(load(cluster="us-east", name="x")))
    return [
        (subject, b"\x00\xff not json", "malformed"),
        (subject, b'{"type": "load.v9", "cluster": "us-east"}', "unknown-type"),
        (subject, orjson.dumps({**good, "ready_pods": "many"}), "schema"),
        (subject, messages.encode(spoofed), "subject-mismatch"),
        (subject, b"[" * (messages.MAX_EVENT_BYTES + 10), "oversized"),
    ]


async def test_hostile_events_are_rejected_counted_and_never_applied(demo: Demo) -> None:
    cs = demo.options.clusterset
    peer = demo.clusters["eu-west"].agent
    assert peer is not None
    before = dict(peer.views)
    nc = await nats.connect(demo.supercluster.url("us-east"))
    try:
        js = nc.jetstream()
        for i, (subject, payload, _) in enumerate(_hostile(cs)):
            await js.publish(subject, payload, headers={"Nats-Msg-Id": f"hostile-{i}"})
    finally:
        await nc.close()
    expected = {reason: 1 for _, _, reason in _hostile(cs)}
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
    demo.start_agent("us-east")
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


def _poison(clusterset: str, seed: int, count: int) -> list[bytes]:
    """Seeded fuzz: random bytes, truncations and mutations of a valid event, deep nesting."""
    rng = random.Random(seed)
    valid = orjson.loads(messages.encode(load(cluster="us-east", name="x")))
    out: list[bytes] = []
    while len(out) < count:
        kind = rng.randrange(6)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(1, 300)))
        elif kind == 1:
            raw = messages.encode(load(cluster="us-east", name="x"))
            out.append(raw[: rng.randrange(1, len(raw) - 1)])
        elif kind == 2:
            key = rng.choice(sorted(valid))
            value = rng.choice([None, "", -1, 2**62, [], {}, "x" * 5000, True, -1e308])
            out.append(orjson.dumps({**valid, key: value}))
        elif kind == 3:
            out.append(b"[" * rng.randrange(100, 5000) + b"]" * 3)
        elif kind == 4:
            out.append(orjson.dumps({**valid, "type": rng.choice(["", "LOAD", "load2", 7])}))
        else:
            out.append(orjson.dumps({**valid, "cluster": rng.choice(["", "US-EAST", "a.b", "*"])}))
    # Well-formed but far ahead: accepted, it would make every honest report look stale.
    out[-1] = orjson.dumps({**valid, "sequence": 2**62})
    return out


def _handled(agent: Agent) -> int:
    c = agent.counts
    return c.applied + c.duplicates + c.stale + sum(c.rejected.values())


async def test_fuzzed_poison_never_crashes_the_agent_or_changes_its_imports(demo: Demo) -> None:
    cs = demo.options.clusterset
    peer = demo.clusters["eu-west"].agent
    assert peer is not None
    before = {k: (v.desired.exporting_clusters, set(v.weights)) for k, v in peer.views.items()}
    payloads = _poison(cs, seed=20261128, count=150)
    handled_before = _handled(peer)
    subject = messages.load_subject(cs, "us-east", "llm", "x")
    nc = await nats.connect(demo.supercluster.url("us-east"))
    try:
        js = nc.jetstream()
        for i, payload in enumerate(payloads):
            await js.publish(subject, payload, headers={"Nats-Msg-Id": f"poison-{i}"})
    finally:
        await nc.close()
    # Other events (heartbeats, reports) arrive meanwhile, so this is a lower bound.
    await wait_for(
        lambda: _handled(peer) - handled_before >= len(payloads),
        within=20,
        what="every poison message to be handled",
    )
    demo.check_agents()
    assert sum(peer.counts.rejected.values()) >= len(payloads) // 2, peer.counts.rejected
    assert peer.counts.rejected["future-sequence"] >= 1, peer.counts.rejected
    after = {k: (v.desired.exporting_clusters, set(v.weights)) for k, v in peer.views.items()}
    assert after == before
