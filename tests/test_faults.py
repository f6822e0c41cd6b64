"""Fault tests with real processes: a cluster dies and comes back; the whole fleet restarts."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.layouts import cluster_names
from federation.model.conditions import FRESH
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
LEASE = 3.0  # shortened so the suite stays quick; production default is 10 s


@pytest.fixture
async def own_demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """A demo on a supercluster of its own: these tests kill servers."""
    sc = Supercluster(cluster_names(3), tmp_path)
    await sc.start()
    d = await Demo.start(
        DemoOptions(clusters=3, pools=4, clusterset="faults", lease=LEASE, slow_start=1.0), sc
    )
    await d.start_agents()
    try:
        assert await d.wait_converged(within=30) is not None
        yield d
    finally:
        await d.stop()
        sc.stop()


def _drained_and_stale(demo: Demo, dead: str) -> bool:
    for name in ("us-east", "ap-south"):
        for view in demo.clusters[name].imports.views.values():
            if dead not in view.desired.exporting_clusters:
                continue
            condition = next(c for c in view.conditions if c.type == FRESH)
            if view.weights[dead].weight != 0 or condition.reason != "Stale":
                return False
    return True


def _all_fresh(demo: Demo) -> bool:
    return demo.converged() and all(
        next(c for c in v.conditions if c.type == FRESH).status == "True"
        for sim in demo.clusters.values()
        for v in sim.imports.views.values()
    )


async def test_a_dead_cluster_is_drained_within_its_lease_and_rejoins_after_revival(
    own_demo: Demo,
) -> None:
    demo = own_demo
    await demo.kill("eu-west")
    detected = await wait_for(
        lambda: _drained_and_stale(demo, "eu-west"),
        within=4 * LEASE,
        what="survivors to drain eu-west and call it stale",
    )
    # The lease, plus one reconcile step and one keepalive of slack.
    assert detected <= LEASE + 2.0, detected
    # The survivors still federate with each other.
    assert demo.clusters["us-east"].imports.views
    await demo.revive("eu-west")
    await wait_for(lambda: _all_fresh(demo), within=30, what="convergence after revival")


async def test_the_whole_fleet_restarts_from_its_durable_stores(own_demo: Demo) -> None:
    demo = own_demo
    before = {n: set(s.imports.views) for n, s in demo.clusters.items()}
    for name in demo.clusters:
        await demo.kill(name)
    for name in demo.clusters:
        demo.supercluster.start_server(name)
    await demo.supercluster.wait_ready()
    for name in demo.clusters:
        await demo.start_agent(name)
    await wait_for(lambda: _all_fresh(demo), within=30, what="convergence after a full restart")
    assert {n: set(s.imports.views) for n, s in demo.clusters.items()} == before
    for sim in demo.clusters.values():
        assert sim.agent is not None
        published = sim.agent.counts.published
        assert published["ExportEvent"] == published["ExportSet"] == 0  # nothing said again


@contextmanager
def nothing_withdrawn(demo: Demo) -> Iterator[list[str]]:
    """Watch every cluster's imports while a fault runs: none may disappear."""
    before = {n: set(s.imports.views) for n, s in demo.clusters.items()}
    lost: list[str] = []

    async def watch() -> None:
        while True:
            for name, sim in demo.clusters.items():
                gone = before[name] - set(sim.imports.views)
                if gone:
                    lost.append(f"{name} lost {sorted(map(str, gone))}")
            await asyncio.sleep(0.05)

    task = asyncio.get_running_loop().create_task(watch())
    try:
        yield lost
    finally:
        task.cancel()


def wipe_and_restart(demo: Demo, clusters: list[str]) -> None:
    """The servers come back with empty stores (a lost disk, a reinstall); agents keep running."""
    sc = demo.supercluster
    for name in clusters:
        sc.kill_server(name)
    for name in clusters:
        shutil.rmtree(sc.specs[name].store_dir, ignore_errors=True)
        sc.start_server(name)


async def test_a_clusters_servers_come_back_with_empty_stores(own_demo: Demo) -> None:
    """eu-west's servers lose their stores while its agent runs: the agent notices, recreates
    its streams going on from its last sequence, republishes its state, and its peers hear it
    again through its recreated stream; nothing is withdrawn meanwhile."""
    demo = own_demo
    before = {n: set(s.imports.views) for n, s in demo.clusters.items()}
    agent, peer = demo.clusters["eu-west"].agent, demo.clusters["us-east"].agent
    assert agent is not None
    assert peer is not None

    def generations() -> dict[tuple[str, str, str], int]:
        return {k: e.generation for k, e in peer.beliefs.exports.items() if k[0] == "eu-west"}

    exported = generations()
    assert exported
    with nothing_withdrawn(demo) as lost:
        wipe_and_restart(demo, ["eu-west"])
        await demo.supercluster.wait_ready()
        back = time.monotonic()
        await wait_for(lambda: agent.counts.streams_repaired["outbound"] >= 1, within=20,
                       what="eu-west's agent to recreate its outbound stream")  # fmt: skip
        beat = peer.beliefs.beats["eu-west"].sequence

        def heard_again() -> bool:
            now = generations()
            return (
                _all_fresh(demo)
                and peer.beliefs.beats["eu-west"].sequence > beat
                and all(now.get(k, 0) > g for k, g in exported.items())
            )

        await wait_for(heard_again, within=30, what="us-east to hear eu-west's state again")
        print(f"eu-west wiped: its state heard again {time.monotonic() - back:.1f}s after")
    assert not lost, lost
    assert {n: set(s.imports.views) for n, s in demo.clusters.items()} == before


async def test_the_whole_supercluster_comes_back_with_empty_stores(own_demo: Demo) -> None:
    """Every server loses its store while every agent runs: each recreates both its streams
    (its outbound going on from its last sequence) and republishes; everyone hears everyone's
    state again; nothing is withdrawn meanwhile."""
    demo = own_demo
    before = {n: set(s.imports.views) for n, s in demo.clusters.items()}
    names = list(demo.clusters)
    agents = {n: demo.clusters[n].agent for n in names}
    generations = {
        n: {k: e.generation for k, e in a.beliefs.exports.items()}
        for n, a in agents.items()
        if a is not None
    }
    with nothing_withdrawn(demo) as lost:
        wipe_and_restart(demo, names)
        await demo.supercluster.wait_ready()
        back = time.monotonic()

        def heard_again() -> bool:
            for name, agent in agents.items():
                assert agent is not None
                repaired = agent.counts.streams_repaired
                if repaired["outbound"] < 1 or repaired["inbound"] < 1:
                    return False
                now = {k: e.generation for k, e in agent.beliefs.exports.items()}
                if any(now.get(k, 0) <= g for k, g in generations[name].items()):
                    return False
            return _all_fresh(demo)

        await wait_for(heard_again, within=45, what="everyone's state heard again after a wipe")
        print(f"all wiped: every state heard again {time.monotonic() - back:.1f}s after")
    assert not lost, lost
    assert {n: set(s.imports.views) for n, s in demo.clusters.items()} == before


async def test_a_killed_agent_alone_restarts_without_disturbing_peers(own_demo: Demo) -> None:
    demo = own_demo
    peer = demo.clusters["ap-south"].agent
    assert peer is not None
    exports_before = dict(peer.beliefs.exports)
    await demo.stop_agent("us-east")
    await demo.start_agent("us-east")
    await wait_for(lambda: _all_fresh(demo), within=20, what="convergence after agent restart")
    restarted = demo.clusters["us-east"].agent
    assert restarted is not None
    # Its publishing has run (a heartbeat went out), and no export needed saying again.
    await wait_for(
        lambda: restarted.counts.published["Heartbeat"] >= 2,
        within=10,
        what="the restarted agent's publishing to run",
    )
    assert restarted.counts.published["ExportEvent"] == 0
    assert {k: e.generation for k, e in peer.beliefs.exports.items()} == {
        k: e.generation for k, e in exports_before.items()
    }


def test_demo_cli_kill_contract(tmp_path: Path) -> None:
    """The issue's exact command: a cluster killed at 8 s shows as dead everywhere else."""
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "federation", "demo", "--clusters", "3", "--duration", "30",
         "--kill", "eu-west", "--at", "8", "--json", "--dump-objects", str(tmp_path / "objects")],
        capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    snapshot = json.loads(out.stdout)
    clusters = snapshot["clusters"]
    assert clusters["eu-west"]["alive"] is False
    survivors = ("us-east", "ap-south")
    dead_seen = 0
    for name in survivors:
        assert clusters[name]["alive"] is True
        for key, imp in clusters[name]["imports"].items():
            fresh = next(c for c in imp["conditions"] if c["type"] == FRESH)
            if "eu-west" in imp["exportingClusters"]:
                dead_seen += 1
                assert imp["weights"]["eu-west"] == 0, (name, key)
                assert fresh["reason"] == "Stale", (name, key)
                assert "eu-west" in fresh["message"]
            else:  # the survivors still federate with each other
                assert fresh["reason"] == "Fresh", (name, key)
        assert snapshot["events"][name]["applied"] > 0
    assert dead_seen > 0
    # The same state is in the Kubernetes objects: the dead cluster is still listed (grace).
    imp = json.loads(
        (tmp_path / "objects/us-east/InferencePoolImport/llm.llama-3-70b.json").read_text()
    )
    (entry,) = imp["status"]["controllers"]
    stale = next(c for c in entry["conditions"] if c["type"] == FRESH)
    assert stale["status"] == "False"
