"""A fleet of production agents on the in-memory bus, two exported pools each (for tests of
what agents send one another: load digests, export sets)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from federation.app.assembly import AgentParts, build_agent
from federation.kit.memory_bus import MemoryNetwork
from federation.kit.sim.imports import MemoryImports
from federation.kit.sim.sources import MemoryLoads, MemoryPools
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.runtime.agent import Agent
from federation.runtime.stopping import stop_task
from federation.settings import Settings

MEMBERS = ("us-east", "eu-west", "ap-south")


def fleet_pool(name: str) -> LocalPool:
    return LocalPool(namespace="llm", name=name, target_ports=(8000,), export=EXPORT_VALUE)


@contextlib.asynccontextmanager
async def memory_fleet(
    clusterset: str, settings: Mapping[str, Mapping[str, str]]
) -> AsyncIterator[dict[str, Agent]]:
    """Running agents of ``MEMBERS`` (each exporting ``<cluster>-0`` and ``<cluster>-1``), with
    each cluster's extra ``settings``; stopped on exit."""
    network = MemoryNetwork(clusterset, MEMBERS)
    agents, tasks = {}, []
    try:
        for cluster in MEMBERS:
            s = Settings(
                clusterset=clusterset, cluster=cluster, members=MEMBERS, nats_url="memory://",
                lease=3.0, grace=12.0, beat_interval=0.2, load_interval=0.2,
                reconcile_interval=0.1, **settings.get(cluster, {}),  # type: ignore[arg-type]
            )  # fmt: skip
            pools = {PoolKey("llm", f"{cluster}-{i}"): fleet_pool(f"{cluster}-{i}") for i in (0, 1)}
            agents[cluster] = build_agent(s, AgentParts(
                bus=network.bus(cluster), pools=MemoryPools(pools), loads=MemoryLoads(time.time),
                extra_feeds={"memory": MemoryImports()},
            )).agent  # fmt: skip
            tasks.append(asyncio.create_task(agents[cluster].run()))
        yield agents
    finally:
        for task in tasks:
            with contextlib.suppress(Exception):
                await stop_task(task, within=5)


def every_peer_held(agents: Mapping[str, Agent], held: str) -> bool:
    """Every agent holds every member's two pools' exports or loads (``held``)."""
    return all(
        (peer, "llm", f"{peer}-{i}") in getattr(a.beliefs, held)
        for a in agents.values()
        for peer in MEMBERS
        for i in (0, 1)
    )
