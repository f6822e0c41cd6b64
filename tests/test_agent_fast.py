"""Agents on the in-memory bus (the fake checked by tests/test_bus_contract.py): the runtime's
behaviour in seconds — imports, weights, leases, partitions, hostile input. What only NATS shows
(sources, gateways, permissions, stalls) stays in the real-server tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from federation import messages
from federation.adapters.bus import LiveDelivery
from federation.adapters.metrics import AgentMetrics
from federation.app.assembly import AgentParts, build_agent
from federation.kit.memory_bus import MemoryNetwork
from federation.kit.sim.imports import MemoryImports
from federation.kit.sim.sources import MemoryLoads, MemoryPools
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.runtime.agent import Agent
from federation.runtime.stopping import stop_task
from federation.settings import Settings
from tests.conftest import wait_for

MEMBERS = ("us-east", "eu-west", "ap-south")
LLAMA = PoolKey("llm", "llama")
LEASE = 1.5


def pool(name: str, exported: bool) -> LocalPool:
    return LocalPool(namespace="llm", name=name, target_ports=(8000,), model=name,
                     export=EXPORT_VALUE if exported else None)  # fmt: skip


@dataclass
class Fleet:
    network: MemoryNetwork
    agents: dict[str, Agent]
    imports: dict[str, MemoryImports]
    loads: dict[str, MemoryLoads]

    def weights(self, cluster: str) -> dict[str, int]:
        view = self.imports[cluster].views.get(LLAMA)
        return {} if view is None else {b: w.weight for b, w in view.weights.items()}


@contextlib.asynccontextmanager
async def running_fleet(skews: dict[str, float] | None = None) -> AsyncIterator[Fleet]:
    """Three agents on one in-memory network; ``skews`` (mutable) sets each one's clock offset."""
    skews = skews if skews is not None else {}
    network = MemoryNetwork("fast", MEMBERS)
    agents, imports, loads, tasks = {}, {}, {}, []
    for cluster in MEMBERS:
        s = Settings(clusterset="fast", cluster=cluster, members=MEMBERS, nats_url="memory://",
                     lease=LEASE, grace=LEASE * 4, beat_interval=0.2, load_interval=0.2,
                     reconcile_interval=0.1, slow_start=0.0)  # fmt: skip

        def wall(c: str = cluster) -> float:
            return time.time() + skews.get(c, 0.0)

        imports[cluster], loads[cluster] = MemoryImports(), MemoryLoads(wall)
        # us-east and eu-west export llama; ap-south has its own, unexported.
        pools = MemoryPools({LLAMA: pool("llama", exported=cluster != "ap-south")})
        agents[cluster] = build_agent(s, AgentParts(
            bus=network.bus(cluster), pools=pools, loads=loads[cluster], wall=wall,
            extra_feeds={"memory": imports[cluster]},
        )).agent  # fmt: skip
        tasks.append(asyncio.create_task(agents[cluster].run(), name=f"agent-{cluster}"))
    try:
        yield Fleet(network, agents, imports, loads)
    finally:
        for task in tasks:
            with contextlib.suppress(Exception):
                await stop_task(task, within=5)


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with running_fleet() as f:
        yield f


async def test_imports_converge_with_local_and_exporters(fleet: Fleet) -> None:
    def exporters(cluster: str) -> tuple[str, ...]:
        view = fleet.imports[cluster].views.get(LLAMA)
        return view.desired.exporting_clusters if view else ()

    # Both exports, everywhere: the import appears with the first one to arrive.
    await wait_for(lambda: all(exporters(c) == ("eu-west", "us-east") for c in MEMBERS),
                   within=10, what="the import with both exporters everywhere")  # fmt: skip
    assert set(fleet.weights("ap-south")) == {"local", "eu-west", "us-east"}
    assert set(fleet.weights("us-east")) == {"eu-west", "us-east"}
    # Each agent says what its start-up waited on, step by step.
    startup = fleet.agents["us-east"].status()["startup_s"]
    assert list(startup) == [
        "connect to NATS", "ensure streams", "create consumer", "watch live events",
        "catch up exports", "read newest live events", "started",
    ]  # fmt: skip
    assert startup["started"] >= max(v for k, v in startup.items() if k != "started")


async def test_a_saturated_local_pool_spills_and_a_silent_cluster_weighs_zero(fleet: Fleet) -> None:
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0
                   and fleet.weights("ap-south").get("eu-west", 0) > 0,
                   within=10, what="ap-south spilling to both exporters")  # fmt: skip
    fleet.network.partition("us-east")
    took = await wait_for(lambda: fleet.weights("ap-south").get("us-east") == 0,
                          within=LEASE * 4, what="the cut-off cluster at 0")  # fmt: skip
    assert took <= LEASE * 3
    assert fleet.weights("ap-south")["eu-west"] > 0
    # The cut-off cluster hears nobody: its link is suspect and it holds its weights.
    await wait_for(lambda: fleet.agents["us-east"].link.suspect, within=LEASE * 4,
                   what="us-east's link suspect")  # fmt: skip
    assert fleet.weights("us-east").get("us-east", 0) > 0
    fleet.network.heal("us-east")
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0, within=LEASE * 4,
                   what="us-east weighed again after the heal")  # fmt: skip


async def test_a_step_applies_the_beats_already_received_before_it_runs_out_a_lease(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starved agent's consume-live task gets to the live mailbox seconds late: the
    reconciler takes in what waits there before each step, so no live peer's lease runs out
    (weighed 0 and back) for want of reading beats it already holds."""
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0
                   and fleet.weights("ap-south").get("eu-west", 0) > 0,
                   within=10, what="ap-south spilling to both exporters")  # fmt: skip
    south = fleet.agents["ap-south"]
    live = south.bus.live
    held_off = asyncio.Event()

    async def late_live(wait: float) -> object:
        if wait > 0:  # the consume-live task's wait: held off for two leases, once
            monkeypatch.setattr(south.bus, "live", live)
            await asyncio.sleep(LEASE * 2)
            held_off.set()
        return await live(wait)

    monkeypatch.setattr(south.bus, "live", late_live)
    lapses, applied = south.lease_lapses, south.counts.applied
    await wait_for(held_off.is_set, within=LEASE * 2 + 5, what="consume-live held off")
    assert south.lease_lapses == lapses  # no peer's lease ran out...
    assert south.counts.applied > applied + 10  # ...for its beats were applied meanwhile
    assert fleet.weights("ap-south").get("us-east", 0) > 0
    assert fleet.weights("ap-south").get("eu-west", 0) > 0
    # A silent peer's lease does run out, and is counted.
    fleet.network.partition("us-east")
    await wait_for(lambda: fleet.weights("ap-south").get("us-east") == 0,
                   within=LEASE * 4, what="the cut-off cluster at 0")  # fmt: skip
    assert south.lease_lapses >= lapses + 1
    assert fleet.weights("ap-south").get("eu-west", 0) > 0
    metrics = AgentMetrics()
    metrics.watch(south)
    assert f"federation_peer_lease_lapses_total {south.lease_lapses}.0" in metrics.render().decode()
    assert "federation_live_acks_missed_total 0.0" in metrics.render().decode()


async def test_after_a_heal_a_peer_is_heard_again_before_it_says_anything_new(
    fleet: Fleet,
) -> None:
    """Beats are left out while digests flow, so a healed peer's next live event can be a
    digest keepalive away: its peers read what it said last (during the cut) at once."""
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0,
                   within=10, what="ap-south spilling to us-east")  # fmt: skip
    fleet.network.partition("us-east")
    await wait_for(lambda: fleet.weights("ap-south").get("us-east") == 0,
                   within=LEASE * 4, what="the cut-off cluster at 0")  # fmt: skip
    # us-east goes quiet (no beat, no sample, so no digest) and the cut heals.
    east = fleet.agents["us-east"]
    east.settings = dataclasses.replace(east.settings, beat_interval=60.0, load_interval=60.0)
    fleet.network.heal("us-east")
    took = await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0,
                          within=LEASE, what="us-east weighed from its last words")  # fmt: skip
    assert took < LEASE


async def test_a_silent_cluster_weighs_zero_when_its_lease_ends_not_a_period_later(
    fleet: Fleet,
) -> None:
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0,
                   within=10, what="ap-south spilling to us-east")  # fmt: skip
    # A periodic reconcile far longer than the lease, and no load sampled or published (each
    # would wake a reconciler): only the lease's own end can wake ap-south's in time.
    for agent in fleet.agents.values():
        agent.settings = dataclasses.replace(agent.settings, reconcile_interval=60.0,
                                             load_interval=60.0)  # fmt: skip
    fleet.network.partition("us-east")
    took = await wait_for(lambda: fleet.weights("ap-south").get("us-east") == 0,
                          within=LEASE * 4, what="the cut-off cluster at 0")  # fmt: skip
    assert took <= LEASE + 0.2  # last heard before the cut, so its lease ends within LEASE


async def test_hostile_payloads_are_counted_and_change_nothing(fleet: Fleet) -> None:
    await wait_for(lambda: LLAMA in fleet.imports["ap-south"].views, within=10, what="the import")
    bus = fleet.network.bus("us-east")
    await bus.connect()
    subject = messages.export_subject("fast", "us-east", "llm", "llama")
    for i, payload in enumerate([b"{", b"[]", b'{"type":"export"}', b"\xff" * 100]):
        # Headers are not signed: a hostile export count must not crash anyone either.
        hostile = {messages.EXPORT_SEQ_HEADER: ["1.\u00b2", "x", "9" * 99, "-1.-1"][i]}
        await bus.publish(subject, payload, f"bad-{i}", hostile)
    agent = fleet.agents["ap-south"]
    await wait_for(lambda: sum(agent.counts.rejected.values()) >= 4, within=10,
                   what="4 rejections")  # fmt: skip
    assert LLAMA in fleet.imports["ap-south"].views
    assert fleet.imports["ap-south"].views[LLAMA].desired.exporting_clusters == (
        "eu-west",
        "us-east",
    )


def healthy_everywhere(f: Fleet) -> bool:
    """Every import present, every exporter fresh and weighed > 0 by ap-south, no link suspect."""
    for cluster in MEMBERS:
        view = f.imports[cluster].views.get(LLAMA)
        if view is None or f.agents[cluster].link.suspect:
            return False
        if any(c.status != "True" for c in view.conditions):
            return False
    weights = f.weights("ap-south")  # its own pool is saturated: it spills to both exporters
    return weights.get("us-east", 0) > 0 and weights.get("eu-west", 0) > 0


@pytest.mark.parametrize("skew", [30.0, -30.0, 120.0, -120.0])
async def test_a_skewed_clock_changes_nothing_and_is_reported(skew: float) -> None:
    skews = {"us-east": skew}
    async with running_fleet(skews) as f:
        f.loads["ap-south"].set(LLAMA, saturation=1.0)  # ap-south spills: every backend counts
        await wait_for(lambda: healthy_everywhere(f), within=10, what="a healthy federation")
        # ...and it stays so for longer than a lease.
        deadline = time.monotonic() + LEASE * 2
        while time.monotonic() < deadline:
            assert healthy_everywhere(f), {c: f.weights(c) for c in MEMBERS}
            await asyncio.sleep(0.1)
        offset = f.agents["eu-west"].status()["peers"]["us-east"]["clock_offset_s"]
        assert offset == pytest.approx(skew, abs=1.0)
        back = f.agents["us-east"].status()["peers"]["eu-west"]["clock_offset_s"]
        assert back == pytest.approx(-skew, abs=1.0)


async def test_a_clock_that_jumps_while_running_changes_nothing() -> None:
    skews: dict[str, float] = {}
    async with running_fleet(skews) as f:
        f.loads["ap-south"].set(LLAMA, saturation=1.0)
        await wait_for(lambda: healthy_everywhere(f), within=10, what="a healthy federation")
        for jump in (-45.0, 45.0, 0.0):
            skews["eu-west"] = jump
            deadline = time.monotonic() + LEASE * 1.5
            while time.monotonic() < deadline:
                assert healthy_everywhere(f), (jump, {c: f.weights(c) for c in MEMBERS})
                await asyncio.sleep(0.1)


def test_the_reconcile_gap_grows_with_the_members_up_to_the_interval() -> None:
    """A step reads every member's lease: at 100 clusters, events fold into fewer steps."""
    from federation.runtime.agent import reconcile_gap

    assert reconcile_gap(3, 0.5) == 0.2
    assert reconcile_gap(50, 0.5) == 0.5
    assert reconcile_gap(35, 0.5) == pytest.approx(0.35)
    assert reconcile_gap(100, 0.5) == 0.5  # never longer than the periodic step
    assert reconcile_gap(3, 0.1) == 0.1


async def test_a_late_loop_stretches_the_reconcile_gap_and_says_so(fleet: Fleet) -> None:
    """A starved process steps its weights less often (``model.pacing``), bounded within the
    lease; status, its table and the metrics show it; the fleet goes on moving weights."""
    import re

    from rich.console import Console

    from federation.runtime.agent import PACED_GAP_OF_LEASE
    from federation.tables import status_view

    agent = fleet.agents["ap-south"]
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)  # it spills to both exporters
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0, within=10,
                   what="ap-south weighs us-east")  # fmt: skip
    now = time.monotonic()
    base = agent.paced_gap(now)
    agent.lateness.observe(5.0, now)
    assert agent.paced_gap(now) == pytest.approx(LEASE * PACED_GAP_OF_LEASE)
    assert agent.paced_gap(now) > base
    pacing = agent.status()["pacing"]
    assert 4.0 < pacing["loop_lateness_s"] <= 5.0  # (halving every 5 s)
    assert pacing["reconcile_gap_base_s"] == base
    console = Console(width=200, record=True)
    console.print(status_view(agent.status()))
    assert re.search(
        r"loop \d\.\d\ds late: weights step at most every 0\.38s", console.export_text()
    )
    metrics = AgentMetrics()
    metrics.watch(agent)
    text = metrics.render().decode()
    gauges = dict(
        line.split(" ") for line in text.splitlines()
        if line.startswith(("federation_event_loop_lateness", "federation_reconcile_gap"))
    )  # fmt: skip
    assert 4.0 < float(gauges["federation_event_loop_lateness_seconds"]) <= 5.0
    assert float(gauges["federation_reconcile_gap_seconds"]) == LEASE * PACED_GAP_OF_LEASE
    # Weights still step, at the stretched gap: the exporters' load moves, ap-south follows.
    before = fleet.weights("ap-south")
    fleet.loads["us-east"].set(LLAMA, saturation=0.95)
    await wait_for(lambda: fleet.weights("ap-south") != before, within=10,
                   what="ap-south's weights follow us-east's saturation")  # fmt: skip


async def _spilling_to_us_east(fleet: Fleet) -> Agent:
    """ap-south saturated and spilling to us-east; from here no periodic step comes in time and
    only eu-west samples (every 0.1 s): ap-south's steps are woken by eu-west's digests."""
    fleet.loads["ap-south"].set(LLAMA, saturation=1.0)
    await wait_for(lambda: fleet.weights("ap-south").get("us-east", 0) > 0,
                   within=10, what="ap-south spilling to us-east")  # fmt: skip
    for name, agent in fleet.agents.items():
        sampling = 0.1 if name == "eu-west" else 60.0
        agent.settings = dataclasses.replace(agent.settings, reconcile_interval=60.0,
                                             load_interval=sampling)  # fmt: skip
    return fleet.agents["ap-south"]


async def _cut_us_east_while_paced(fleet: Fleet, south: Agent) -> float:
    """ap-south paced (0.375 s between woken steps) and eu-west's load moving each 0.1 s, each
    sample a digest that wakes ap-south; us-east cut off. When ap-south weighed it 0 (its clock)."""

    async def move_eu_west() -> None:
        level = 0.3
        while True:
            level = 0.9 - level  # 0.3, 0.6, ...: each sample a digest that moves the pool
            fleet.loads["eu-west"].set(LLAMA, saturation=level)
            await asyncio.sleep(0.1)

    south.lateness.observe(5.0, time.monotonic())
    mover = asyncio.create_task(move_eu_west())
    try:
        fleet.network.partition("us-east")
        await wait_for(lambda: fleet.weights("ap-south").get("us-east") == 0,
                       within=LEASE * 4, what="the cut-off cluster at 0")  # fmt: skip
        return south.now()
    finally:
        await stop_task(mover, within=5)


async def test_a_late_loop_still_steps_a_lease_end_at_its_time(fleet: Fleet) -> None:
    """As the test above it without pacing: no periodic step in time, and eu-west's load
    moving all along, so ap-south's reconciler is woken and paced (0.375 s gaps) right up to
    us-east's lease end, which that pacing must not hold back."""
    south = await _spilling_to_us_east(fleet)
    zero_at = await _cut_us_east_while_paced(fleet, south)
    heard = south.beliefs.last_heard("us-east")
    assert heard is not None
    assert zero_at - (heard + LEASE) < 0.2  # at its lease end, not a paced gap later
    assert south.paced_gap(time.monotonic()) > 0.3  # (paced all along)


async def test_a_lease_that_ends_during_a_long_step_is_stepped_right_after_it(
    fleet: Fleet,
) -> None:
    """A step that begins just before us-east's lease end and runs past it (a starved machine:
    here a synchronous step held 0.3 s beyond the end) computed its weights before the end, so
    us-east kept its weight; the next step must come right after it, not a paced gap later."""
    south = await _spilling_to_us_east(fleet)
    step = south.step_views
    held: list[float] = []  # the lease end the long step straddled
    steps: list[tuple[float, float]] = []  # each step's start and end (monotonic)
    slept: list[int] = []  # which of them was held past the lease end

    def long_step(now: float) -> bool:
        began = time.monotonic()
        changed = step(now)
        heard = south.beliefs.last_heard("us-east")
        if not held and heard is not None and now < heard + LEASE <= now + 0.8:
            held.append(heard + LEASE)
            slept.append(len(steps))  # this step's index
            time.sleep(heard + LEASE - now + 0.3)  # (blocks the loop, as starvation does)
        steps.append((began, time.monotonic()))
        return changed

    south.step_views = long_step  # type: ignore[method-assign]
    zero_at = await _cut_us_east_while_paced(fleet, south)
    assert held, "no step straddled the lease end"
    assert zero_at >= held[0]
    long_one = slept[0]
    after = steps[long_one + 1][0] - steps[long_one][1]
    assert after < 0.25  # right after the long step, not a paced gap (0.375 s) later


async def test_a_digest_of_pools_nobody_exported_wakes_no_step_and_their_export_brings_it() -> None:
    """At a cold start digests list pools whose exports have not arrived: their load is kept
    but marks nothing to recompute (no import of them can exist yet); the export, when it
    comes, is recomputed with the load already held."""
    s = Settings(clusterset="fast", cluster="us-east", members=MEMBERS, nats_url="memory://")
    agent = build_agent(s, AgentParts(
        bus=MemoryNetwork("fast", MEMBERS).bus("us-east"), pools=MemoryPools(),
        loads=MemoryLoads(),
    )).agent  # fmt: skip
    now = time.time()
    entries = (messages.PoolLoad(namespace="llm", name="llama", observed_at=now, ready_pods=4,
                                 kv_cache_utilization=0.5, saturation=0.5),)  # fmt: skip
    loads = messages.LoadDigest(cluster="eu-west", sequence=1, published_at=now, pools=entries)
    subject = messages.digest_subject("fast", "eu-west")
    await agent.apply_delivery(LiveDelivery(subject, messages.encode(loads), {}))
    assert agent.beliefs.loads[("eu-west", "llm", "llama")].saturation == 0.5  # kept
    assert not agent._changed.is_set()  # and no step woken for it
    export = messages.ExportEvent(cluster="eu-west", namespace="llm", name="llama",
                                  generation=1, exported_at=now, published_at=now,
                                  target_ports=(8000,), model="llama")  # fmt: skip
    subject = messages.export_subject("fast", "eu-west", "llm", "llama")
    await agent.apply_delivery(LiveDelivery(subject, messages.encode(export), {}))
    assert agent._changed.is_set()
    agent.step_views(agent.now())
    weights = agent.reconciler.book.views[LLAMA].weights
    assert weights["eu-west"].weight == 1_000_000  # its load known: it can serve


def test_an_extra_feed_named_as_a_gateway_feed_is_refused() -> None:
    # (It would replace the settings' feed in the agent's list while that feed's server and
    # counters stayed wired: a gateway fed nothing, its metrics still exported.)
    s = Settings(clusterset="fast", cluster="us-east", members=MEMBERS, nats_url="memory://")
    parts = AgentParts(
        bus=MemoryNetwork("fast", MEMBERS).bus("us-east"),
        pools=MemoryPools({}),
        loads=MemoryLoads(time.time),
        extra_feeds={"http": MemoryImports()},
    )
    with pytest.raises(ValueError, match="'http'"):
        build_agent(s, parts)
