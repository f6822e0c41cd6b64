"""Gateway link partitions with real nats-servers: every gateway connection runs through a proxy
that can cut the links between two clusters while clients and all other links stay up."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.layouts import cluster_names
from federation.model.conditions import FRESH
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]
LEASE = 3.0  # shortened so the suite stays quick; production default is 10 s
HEAL_BOUND = 30.0  # seconds from heal to every import fresh and converged again


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[Demo]:
    sc = Supercluster(cluster_names(3), tmp_path, gateway_proxies=True)
    await sc.start()
    demo = await Demo.start(
        DemoOptions(clusters=3, pools=4, clusterset="parts", lease=LEASE, slow_start=1.0), sc
    )
    await demo.start_agents()
    try:
        assert await demo.wait_converged(within=30) is not None
        yield demo
    finally:
        await demo.stop()
        sc.stop()
        await sc.stop_proxies()


def condition(demo: Demo, cluster: str, exporter: str) -> list[tuple[str, int]]:
    """(freshness reason, weight of ``exporter``) of every import in ``cluster`` it exports."""
    out = []
    for view in demo.clusters[cluster].imports.views.values():
        if exporter in view.desired.exporting_clusters:
            fresh = next(c for c in view.conditions if c.type == FRESH)
            out.append((fresh.reason, view.weights[exporter].weight))
    return out


def all_fresh(demo: Demo) -> bool:
    return demo.converged() and all(
        next(c for c in v.conditions if c.type == FRESH).status == "True"
        for sim in demo.clusters.values()
        for v in sim.imports.views.values()
    )


async def test_one_cut_link_makes_the_two_sides_stale_to_each_other_only(proxied: Demo) -> None:
    demo, sc = proxied, proxied.supercluster
    await sc.partition("us-east", "eu-west")
    await wait_for(
        lambda: (
            bool(condition(demo, "eu-west", "us-east"))
            and all(r == "Stale" and w == 0 for r, w in condition(demo, "eu-west", "us-east"))
        ),
        within=LEASE + 10,
        what="eu-west to see us-east stale behind the cut link",
    )
    # ap-south still hears both and federates normally; nobody lost an import.
    assert all(r == "Fresh" for r, _ in condition(demo, "ap-south", "us-east"))
    assert all(r == "Fresh" for r, _ in condition(demo, "ap-south", "eu-west"))
    assert demo.converged()
    demo.check_agents()

    sc.heal("us-east", "eu-west")
    healed = time.monotonic()
    await wait_for(lambda: all_fresh(demo), within=HEAL_BOUND, what="fresh after heal")
    print(f"one link: heal → fresh in {time.monotonic() - healed:.2f}s")


async def test_an_isolated_cluster_keeps_its_weights_and_collects_no_garbage(
    proxied: Demo,
) -> None:
    demo, sc = proxied, proxied.supercluster
    objects_before = demo.clusters["us-east"].kube_imports()
    await sc.partition("us-east", "eu-west")
    await sc.partition("us-east", "ap-south")

    def us_east_suspect() -> bool:
        views = demo.clusters["us-east"].imports.views.values()
        return bool(views) and all(
            next(c for c in v.conditions if c.type == FRESH).reason == "LinkSuspect" for v in views
        )

    await wait_for(us_east_suspect, within=LEASE + 10, what="us-east to suspect its own link")
    frozen = {
        k: {b: w.weight for b, w in v.weights.items()}
        for k, v in demo.clusters["us-east"].imports.views.items()
    }
    # The others see us-east stale; us-east keeps the last known weights and every import.
    await wait_for(
        lambda: all(w == 0 for _, w in condition(demo, "ap-south", "us-east")),
        within=LEASE + 10,
        what="ap-south to drain us-east",
    )
    # Seconds later, still suspect: the same imports, weights frozen at their last known values.
    assert us_east_suspect()
    views = demo.clusters["us-east"].imports.views
    assert {k: {b: w.weight for b, w in v.weights.items()} for k, v in views.items()} == frozen
    assert demo.clusters["us-east"].kube_imports() == objects_before
    demo.check_agents()

    sc.heal("us-east", "eu-west")
    sc.heal("us-east", "ap-south")
    healed = time.monotonic()
    await wait_for(lambda: all_fresh(demo), within=HEAL_BOUND, what="fresh after heal")
    print(f"isolated cluster: heal → fresh in {time.monotonic() - healed:.2f}s")
