"""End to end: several agents federating over a real NATS supercluster."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.model.pools import PoolKey
from tests.conftest import running_demo, wait_for
from tests.contract import check_demo_snapshot

pytestmark = pytest.mark.e2e


@pytest.fixture
async def demo(supercluster: Supercluster, clusterset: str) -> AsyncIterator[Demo]:
    async with running_demo(
        DemoOptions(clusters=3, pools=4, clusterset=clusterset), supercluster
    ) as d:
        yield d


async def _weights_positive(demo: Demo) -> bool:
    demo.check_agents()
    return all(
        any(w.weight > 0 for w in view.weights.values())
        for sim in demo.clusters.values()
        for view in sim.imports.views.values()
    )


async def test_three_clusters_converge_to_the_contract(demo: Demo) -> None:
    assert await demo.wait_converged(within=30) is not None
    await wait_for(lambda: _weights_positive(demo), within=15, what="positive weights")
    snapshot = demo.snapshot()
    check_demo_snapshot(snapshot)
    async with aiohttp.ClientSession() as http:
        for name, sim in demo.clusters.items():
            async with http.get(sim.api.url) as resp:
                served = await resp.json()
            assert served["cluster"] == name
            assert set(served["imports"]) == set(snapshot["clusters"][name]["imports"])


async def test_each_agent_reads_only_from_its_own_server(demo: Demo) -> None:
    await demo.wait_converged(within=30)
    async with aiohttp.ClientSession() as http:
        for cluster, spec in demo.supercluster.specs.items():
            async with http.get(f"{spec.monitor_url}/connz?limit=1000") as resp:
                conns = (await resp.json())["connections"] or []
            agents = {c.get("name") for c in conns if c.get("name", "").startswith("federation-")}
            assert agents == {f"federation-agent/{cluster}"}, (cluster, agents)


async def test_withdrawing_an_export_updates_every_cluster(demo: Demo) -> None:
    await demo.wait_converged(within=30)
    pools = demo.clusters["ap-south"].pools
    key = PoolKey("llm", "mixtral-8x7b")
    assert pools.snapshot()[key].export == "ClusterSet"
    await pools.remove(key)
    await wait_for(
        lambda: all(key not in s.imports.views for s in demo.clusters.values()),
        within=15,
        what="the withdrawn import to disappear everywhere",
    )
    await wait_for(demo.converged, within=15, what="views and InferencePoolImports to match")


async def test_exporting_a_pool_adds_it_everywhere(demo: Demo) -> None:
    await demo.wait_converged(within=30)
    pools = demo.clusters["us-east"].pools
    key = PoolKey("llm", "batch-us-east")
    await pools.put(
        pools.snapshot()[key].__class__(
            **{**pools.snapshot()[key].__dict__, "export": "ClusterSet"}
        )
    )
    await wait_for(
        lambda: all(
            key in s.imports.views
            and s.imports.views[key].desired.exporting_clusters == ("us-east",)
            for s in demo.clusters.values()
        ),
        within=15,
        what="the new export to be imported everywhere",
    )
    # Heard after catch-up, with the exporter's beats and digests between it and its last
    # export in the outbound stream: a healthy link, so no export counts as missed.
    for sim in demo.clusters.values():
        assert sim.agent is not None
        assert sim.agent.gaps.missed["us-east"] == 0, sim.name


def test_demo_cli_json_contract() -> None:
    """The exact command of the issue's contract, as a newcomer would run it."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "federation",
            "demo",
            "--clusters",
            "3",
            "--duration",
            "8",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    snapshot = json.loads(out.stdout)
    check_demo_snapshot(snapshot)
    assert snapshot["bus_ready_after_s"] > 0
    assert len(snapshot["clusters"]) == 3


async def test_metrics_endpoint_reports_events_lag_leases_and_weights(demo: Demo) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await demo.wait_converged(within=30)
    await wait_for(lambda: _weights_positive(demo), within=15, what="positive weights")
    sim = demo.clusters["ap-south"]
    url = f"{sim.api.base_url}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200
        text = await resp.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("federation_events_received_total", (("outcome", "applied"),))] > 0
    lag_counts = {
        dict(k[1])["peer"]: v
        for k, v in samples.items()
        if k[0] == "federation_propagation_lag_seconds_count"
    }
    assert set(lag_counts) == set(demo.clusters)  # every member, this one included
    assert all(v > 0 for v in lag_counts.values())
    leases = {
        dict(k[1])["peer"]: v
        for k, v in samples.items()
        if k[0] == "federation_peer_lease_age_seconds"
    }
    assert set(leases) == set(demo.clusters)
    assert all(0 <= v < 10 for v in leases.values())
    weights = {
        (dict(k[1])["import"], dict(k[1])["backend"]): v
        for k, v in samples.items()
        if k[0] == "federation_import_weight"
    }
    expected = {(str(key), b) for key, view in sim.imports.views.items() for b in view.weights}
    assert set(weights) == expected
    assert samples[("federation_events_published_total", (("type", "Heartbeat"),))] > 0


async def test_status_command_explains_peers_and_every_weight(demo: Demo) -> None:
    await demo.wait_converged(within=30)
    await wait_for(lambda: _weights_positive(demo), within=15, what="positive weights")
    base = demo.clusters["ap-south"].api.base_url
    for args in (["--json"], []):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "federation",
            "status",
            "--url",
            base,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        if args:
            doc = json.loads(out)
            assert set(doc["peers"]) == set(demo.clusters)
            assert not any(p["stale"] for p in doc["peers"].values())
            assert [p["missed_events"] for p in doc["peers"].values()] == [0] * len(demo.clusters)
            assert doc["link"]["suspect"] is False
            assert set(doc["imports"]) == {str(k) for k in demo.clusters["ap-south"].imports.views}
            assert all(
                b["reason"] for imp in doc["imports"].values() for b in imp["backends"].values()
            )
        else:
            text = out.decode()
            for name in demo.clusters:
                assert name in text
            assert "llm/llama-3-70b" in text
            assert "missed" in text


def test_status_of_an_unreachable_agent_is_a_clear_error() -> None:
    from federation.kit.nats_servers import free_port

    out = subprocess.run(
        [sys.executable, "-m", "federation", "status", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "federation status:" in out.stderr
