"""Weights follow live load end to end: simulated EPP → real scraper → bus → peer's weights."""

from __future__ import annotations

import itertools

import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.model.loads import LoadSample
from federation.model.pools import PoolKey
from federation.model.weights import WeightPolicy
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e
LLAMA = PoolKey("llm", "llama-3-70b")  # exported by us-east and eu-west; local in ap-south


def busy(saturation: float, pods: int = 4) -> LoadSample:
    return LoadSample(
        observed_at=0, ready_pods=pods, kv_cache_utilization=saturation, saturation=saturation
    )


@pytest.fixture
async def demo(supercluster: Supercluster, clusterset: str):  # type: ignore[no-untyped-def]
    d = await Demo.start(
        DemoOptions(clusters=3, pools=3, clusterset=clusterset, slow_start=3.0), supercluster
    )
    d.clusters["ap-south"].load.pin(LLAMA, busy(0.9))  # local spills 50 %
    d.clusters["eu-west"].load.pin(LLAMA, busy(0.5))
    d.clusters["us-east"].load.pin(LLAMA, busy(1.0))  # saturated: no headroom
    await d.start_agents()
    try:
        yield d
    finally:
        await d.stop()


def weights_at(demo: Demo, cluster: str) -> dict[str, int]:
    demo.check_agents()
    view = demo.clusters[cluster].imports.views.get(LLAMA)
    return {} if view is None else {b: w.weight for b, w in view.weights.items()}


async def test_saturation_drains_a_cluster_and_recovery_is_gradual(demo: Demo) -> None:
    await wait_for(
        lambda: (
            weights_at(demo, "ap-south") == {"eu-west": 500_000, "local": 500_000, "us-east": 0}
        ),
        within=20,
        what="ap-south spilling half to eu-west only (us-east saturated)",
    )
    demo.clusters["us-east"].load.pin(LLAMA, busy(0.5))  # recovers: same headroom as eu-west
    seen: list[int] = []

    def regained() -> bool:
        w = weights_at(demo, "ap-south").get("us-east", 0)
        if w and (not seen or seen[-1] != w):
            seen.append(w)
        return w == 250_000

    await wait_for(regained, within=20, what="us-east to regain its share in ap-south")
    assert seen[0] < 150_000, seen  # slow start and smoothing: no jump to the full share
    assert len(seen) >= 3, seen  # several steps on the way up
    # And no flapping: never back down by a deadband or more. A smaller move is the policy's
    # own (a target within the deadband that held still for `settle` is adopted): seen once
    # as 220,115 then 220,000 while the demo's rate estimates settled.
    deadband = WeightPolicy().deadband
    assert all(b > a - deadband for a, b in itertools.pairwise(seen)), seen
    assert weights_at(demo, "ap-south")["local"] == 500_000


async def test_local_dominates_while_it_has_headroom(demo: Demo) -> None:
    demo.clusters["ap-south"].load.pin(LLAMA, busy(0.3))
    await wait_for(
        lambda: weights_at(demo, "ap-south") == {"eu-west": 0, "local": 1_000_000, "us-east": 0},
        within=20,
        what="ap-south to keep all llama traffic local",
    )
    demo.clusters["ap-south"].load.pin(LLAMA, busy(1.0, pods=0))  # EPP would answer 503
    await wait_for(
        lambda: (
            weights_at(demo, "ap-south").get("local") == 0
            and weights_at(demo, "ap-south").get("eu-west", 0) > 0
        ),
        within=20,
        what="ap-south to send everything away when its pool has no ready pods",
    )
