"""The closed loop: weights program a real HAProxy, and real requests move between clusters.

Real nats-servers (a supercluster of its own: a cluster gets killed), the production agents,
a real HAProxy per cluster programmed only by its agent through the runtime API, simulated model
servers with finite capacity behind real HTTP, and clients sending real requests.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from federation.adapters.haproxy import HAProxyRuntime
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions, SimCluster
from federation.kit.sim.gateways import haproxy_binary
from federation.kit.sim.layouts import cluster_names
from federation.kit.sim.model_servers import Capacity
from federation.kit.sim.traffic_rig import TRAFFIC_POOL, TrafficOptions
from federation.model.haproxy_config import HOP_HEADER
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.faults,
    pytest.mark.skipif(
        not __import__("shutil").which("haproxy"),
        reason="haproxy not installed (.ci/run installs Debian's haproxy)",
    ),
]
LEASE = 3.0  # shortened so the suite stays quick; production default is 10 s
BACKEND = f"fed_{TRAFFIC_POOL.namespace}_{TRAFFIC_POOL.name}"
CAPACITY = Capacity(pods=2, slots_per_pod=2, service_time=0.25, queue_limit=4)  # 16 req/s


async def traffic_demo(
    base: Path, clusters: int, rates: dict[str, float]
) -> tuple[Demo, Supercluster]:
    haproxy_binary()
    sc = Supercluster(cluster_names(clusters), base)
    await sc.start()
    options = DemoOptions(
        clusters=clusters,
        pools=1,
        clusterset="loop",
        lease=LEASE,
        slow_start=1.0,
        traffic=TrafficOptions(rates=rates, capacity=CAPACITY, slo=1.0, drain=2.0),
    )
    try:
        demo = await Demo.start(options, sc)
        await demo.start_agents()
    except BaseException:
        sc.stop()
        raise
    return demo, sc


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[Demo]:
    # ap-south's own llama is unexported (its backend is `local`) and gets 1.75x its capacity.
    demo, sc = await traffic_demo(tmp_path, 3, {"ap-south": 28.0, "us-east": 3.0, "eu-west": 3.0})
    try:
        yield demo
    finally:
        await demo.stop()
        sc.stop()


def runtime(sim: SimCluster) -> HAProxyRuntime:
    assert sim.gateway is not None
    return HAProxyRuntime(sim.gateway.socket)


async def sessions(sim: SimCluster, server: str) -> int | None:
    """How many requests this HAProxy has sent to a server of the import (None: no server)."""
    answer = await runtime(sim).command("show stat")
    for row in csv.DictReader(io.StringIO(answer.lstrip("# "))):
        if row["pxname"] == BACKEND and row["svname"] == server:
            return int(row["stot"])
    return None


async def test_a_saturated_cluster_spills_to_peers_and_stops_sending_to_a_dead_one(
    three: Demo,
) -> None:
    b = three.clusters["ap-south"]
    traffic, clients = b.traffic, b.clients
    assert traffic is not None
    assert clients is not None
    await wait_for(
        lambda: min(traffic.served_by[c] for c in ("us-east", "eu-west")) >= 20,
        within=60,
        what="ap-south's requests served by both exporting clusters",
    )
    assert traffic.served_by["local"] > 0

    await three.kill("us-east")
    clients.rate = 6.0  # within what local and eu-west can take

    async def nothing_to_us_east() -> bool:
        servers = (await runtime(b).servers()).get(BACKEND, {})
        return "us-east" not in servers or servers["us-east"].weight == 0

    took = await wait_for(nothing_to_us_east, within=LEASE + 5, what="us-east drained")
    assert took <= LEASE + 5
    sent = await sessions(b, "us-east")
    assert three.agents_started_at is not None

    def local_serves() -> bool:  # the lower rate fits: the local pool takes traffic again
        view = b.imports.views.get(TRAFFIC_POOL)
        return view is not None and view.weights["local"].weight > 0

    await wait_for(local_serves, within=30, what="ap-south's own pool weighed again")
    # The window: requests sent from the next whole second on (older ones may still be queued
    # from the saturated rate, and answer now).
    window = int(time.monotonic() - three.agents_started_at) + 1
    await wait_for(
        lambda: sum(c.total() for s, c in traffic.timeline.items() if s >= window) >= 40,
        within=30,
        what="40 answers to requests of the window",
    )
    assert await sessions(b, "us-east") in (sent, None)  # not one more request to the dead
    failed = [s for s, n in traffic.failed_at.items() if s >= window and n]
    assert not failed, (window, dict(traffic.failed_at), dict(traffic.statuses))
    status = b.agent.status() if b.agent else {}
    assert status["feeds"]["haproxy"]["healthy"] is True


async def test_a_saturated_pair_never_bounces_requests(tmp_path: Path) -> None:
    # Both export the pool and both get more than they can serve; us-east first, alone.
    demo, sc = await traffic_demo(tmp_path, 2, {"us-east": 30.0, "eu-west": 4.0})
    try:
        east, west = demo.clusters["us-east"], demo.clusters["eu-west"]
        assert east.traffic is not None
        assert west.clients is not None
        await wait_for(
            lambda: east.traffic is not None and east.traffic.served_by["eu-west"] >= 20,
            within=60,
            what="us-east spilling to eu-west",
        )
        west.clients.rate = 30.0  # now eu-west saturates too
        served = sum(
            p.served["us-east"] for p in (west.servers.pools.values() if west.servers else [])
        )
        await wait_for(
            lambda: west.traffic is not None and west.traffic.requests >= 300,
            within=60,
            what="eu-west's burst",
        )
        for sim in (east, west):
            assert sim.servers is not None
            assert sim.traffic is not None
            for pool in sim.servers.pools.values():
                assert pool.max_hops <= 1  # a spilled request is served where it lands
            assert sim.traffic.statuses[508] == 0
        assert served > 0
        # An entry frontend refuses a request that already crossed clusters.
        assert west.gateway is not None
        url = f"{west.gateway.entry_url}/{TRAFFIC_POOL.namespace}/{TRAFFIC_POOL.name}/x"
        async with (
            aiohttp.ClientSession() as http,
            http.get(url, headers={HOP_HEADER: "us-east"}) as resp,
        ):
            assert resp.status == 508
    finally:
        await demo.stop()
        sc.stop()
