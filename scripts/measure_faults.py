"""Measure failure figures on this machine: dead-peer detection, revival, full-fleet restart.

Ad-hoc until `federation bench` exists (issue 8). Run: .venv/bin/python scripts/measure_faults.py
Uses production timer defaults (lease 10 s) on a fresh 3-cluster embedded supercluster.
"""

from __future__ import annotations

import asyncio
import json
import time

from federation.model.conditions import FRESH
from federation.sim.demo import Demo, DemoOptions


async def until(condition, within: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > within:
            raise TimeoutError
        await asyncio.sleep(0.02)
    return round(time.monotonic() - start, 2)


def drained(demo: Demo, dead: str) -> bool:
    return all(
        v.weights[dead].weight == 0
        and next(c for c in v.conditions if c.type == FRESH).reason == "Stale"
        for name, sim in demo.clusters.items()
        if name != dead
        for v in sim.imports.views.values()
        if dead in v.desired.exporting_clusters
    )


def fresh(demo: Demo) -> bool:
    return demo.converged() and all(
        next(c for c in v.conditions if c.type == FRESH).status == "True"
        for sim in demo.clusters.values()
        for v in sim.imports.views.values()
    )


async def main() -> None:
    demo = await Demo.start(DemoOptions(clusters=3, pools=4, clusterset="measure"))
    figures: dict[str, float | None] = {"bus_ready_after_s": demo.bus_ready_after_s}
    try:
        demo.start_agents()
        figures["converged_after_s"] = await demo.wait_converged(within=60)
        await demo.kill("eu-west")
        figures["dead_peer_drained_after_s"] = await until(lambda: drained(demo, "eu-west"))
        await demo.revive("eu-west")
        figures["revived_fresh_after_s"] = await until(lambda: fresh(demo))
        for name in demo.clusters:
            await demo.kill(name)
        began = time.monotonic()
        for name in demo.clusters:
            demo.supercluster.start_server(name)
        await demo.supercluster.wait_ready()
        figures["restart_bus_ready_after_s"] = round(time.monotonic() - began, 2)
        for name, sim in demo.clusters.items():
            sim.imports.views = {}  # measure what the restarted agents rebuild, not old state
            demo.start_agent(name)
        figures["restart_fresh_after_agents_s"] = await until(lambda: fresh(demo))
        figures["events"] = {n: s.agent.counts.as_dict() for n, s in demo.clusters.items() if s.agent}
    finally:
        await demo.stop()
    print(json.dumps(figures, indent=2))


asyncio.run(main())
