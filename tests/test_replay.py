"""`federation replay`: events from a demo's stores on disk and from a live NATS, filters, and
the state a cluster computed, rebuilt from its inbound stream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from federation.app.replay import load_streams
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import DemoOptions
from federation.model.pools import PoolKey
from federation.model.replay import ReplayFilter, Stored, parse_time, select
from tests.conftest import running_demo
from tests.model.factories import export

pytestmark = pytest.mark.e2e

WEIGHT_TOLERANCE = 100_000  # 10 points: README "Replay" says why replayed weights differ


def federation(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "federation", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    data = tmp_path_factory.mktemp("incident")
    out = federation("demo", "--duration", "15", "--data-dir", str(data), "--json")
    return data, json.loads(out.stdout)


def test_replay_prints_the_demos_events(demo_run: tuple[Path, dict[str, Any]]) -> None:
    data, snapshot = demo_run
    rows = [json.loads(line) for line in federation("replay", "--data-dir", str(data), "--json")
            .stdout.splitlines()]  # fmt: skip
    # Exports travel as one set per cluster (every agent of the demo reads sets).
    assert {r["type"] for r in rows} == {"exports", "digest", "beat"}
    assert [r["stored_at"] for r in rows] == sorted(r["stored_at"] for r in rows)
    for cluster, state in snapshot["clusters"].items():
        sets = [r for r in rows if r["type"] == "exports" and r["cluster"] == cluster]
        assert set(sets[-1]["pools"]) == set(state["exports"]), cluster

    only = [json.loads(line) for line in federation(
        "replay", "--data-dir", str(data), "--json", "--type", "digest", "--cluster", "eu-west",
        "--pool", "llm/llama-3-70b",
    ).stdout.splitlines()]  # fmt: skip
    assert only
    assert {(r["type"], r["cluster"]) for r in only} == {("digest", "eu-west")}
    assert all("llm/llama-3-70b" in r["pools"] for r in only)
    assert len(only) < len(rows)


def test_state_at_reproduces_the_demo_snapshot(demo_run: tuple[Path, dict[str, Any]]) -> None:
    data, snapshot = demo_run
    at = str(snapshot["taken_at"])
    for cluster, state in snapshot["clusters"].items():
        out = federation("replay", "--data-dir", str(data), "--state-at", at, "--as", cluster,
                         "--json")  # fmt: skip
        rebuilt = json.loads(out.stdout)["imports"]
        assert set(rebuilt) == set(state["imports"]), cluster
        for key, imp in state["imports"].items():
            assert rebuilt[key]["exportingClusters"] == imp["exportingClusters"], (cluster, key)
            if "local" in imp["weights"]:
                continue  # an unexported local pool is never on the bus
            for backend, weight in imp["weights"].items():
                assert abs(rebuilt[key]["weights"][backend] - weight) <= WEIGHT_TOLERANCE, (
                    cluster, key, backend, weight, rebuilt[key]["weights"],
                )  # fmt: skip


def test_replay_refuses_a_directory_without_stores(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "federation", "replay", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "no JetStream store" in out.stderr


async def test_replay_reads_a_live_nats(supercluster: Supercluster, clusterset: str) -> None:
    async with running_demo(
        DemoOptions(clusters=2, pools=3, clusterset=clusterset), supercluster
    ) as demo:
        await demo.wait_converged(within=30)
        streams = await load_streams(
            nats_url=supercluster.url("ap-south"), stores=[], manifest={}, clusterset=clusterset
        )
    assert set(streams.outbound) == {"us-east", "eu-west"}
    assert set(streams.inbound) == {"us-east", "eu-west"}
    exports = [s for s in streams.outbound["us-east"] if s.type == "exports"]
    assert exports


def stored(t: float, cluster: str = "a", name: str = "pool") -> Stored:
    return Stored("FED_OUT_x_a", int(t), t, "s", export(cluster, name))


def test_filters() -> None:
    events = [stored(10), stored(20, "b"), stored(30, name="other")]
    assert [s.stored_at for s in select(events, ReplayFilter(since=15))] == [20, 30]
    assert [s.stored_at for s in select(events, ReplayFilter(until=15))] == [10]
    assert [s.stored_at for s in select(events, ReplayFilter(clusters=frozenset({"b"})))] == [20]
    pools = frozenset({PoolKey("llm", "other")})
    assert [s.stored_at for s in select(events, ReplayFilter(pools=pools))] == [30]
    assert select(events, ReplayFilter(types=frozenset({"beat"}))) == []


def test_parse_time() -> None:
    assert parse_time("1700000000.5") == 1_700_000_000.5
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000.0
    assert parse_time("2023-11-14T22:13:20") == 1_700_000_000.0
    with pytest.raises(ValueError, match="Invalid isoformat"):
        parse_time("yesterday")
