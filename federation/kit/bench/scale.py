"""Scale: C clusters x P pools on this machine, on the real bus path.

Every cluster runs the production :class:`Agent` (in this one process, to fit the machine) with
its own streams and its own connection; clusters are spread over a few NATS clusters (each agent
connects to the server its streams are placed on), joined by gateways through proxies so a NATS
cluster can be cut off and healed. Pools and EPP loads are synthetic (no Kubernetes, no HTTP);
imports go to an in-memory sink. Each cluster exports P pools of its own, so every agent holds
C x P imports.

Figures: cold convergence (agents' start → every agent holds every import), time for every agent
to weigh a dead cluster at 0, convergence after a NATS cluster's partition heals (from the heal
to every import fresh again with the cut-off clusters weighed above 0; the heal comes once the
others saw those clusters' leases run out), and the agent process's RSS and CPU per 1,000 applied
events/s and the Kubernetes writes of the weights annotation per agent per second in steady state
(nats-servers not included).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from federation.app.assembly import AgentParts, build_agent
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.sources import MemoryPools
from federation.model.coalescing import annotation_due
from federation.model.conditions import FRESH
from federation.model.loads import LoadSample
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.model.views import ImportView
from federation.runtime.agent import Agent
from federation.runtime.stopping import stop_task
from federation.settings import FeedSettings, Settings

NATS_CLUSTERS = 4


class SyntheticLoads:
    """A steady load per pool with a slow drift, so reports flow at their keepalive pace."""

    async def sample(self, pool: LocalPool) -> LoadSample:
        now = time.time()
        level = 0.3 + 0.2 * ((zlib.crc32(pool.name.encode()) + int(now / 10)) % 3) / 2
        return LoadSample(
            observed_at=now, ready_pods=4, kv_cache_utilization=level, saturation=level
        )


class Views:
    """The agent's imports, and the Kubernetes writes of their weights annotation: counted by
    the kube sink's own coalescing rule (``model.coalescing``; the bench runs no API server),
    beside what one write per weight change — the rule before coalescing — would cost."""

    def __init__(self, feeds: FeedSettings) -> None:
        self.views: dict[PoolKey, ImportView] = {}
        self.feeds = feeds
        self.written: dict[PoolKey, tuple[dict[str, int], float]] = {}
        self.owed: dict[PoolKey, float] = {}  # deferred writes and when they come due
        self.writes = 0
        self.uncoalesced_writes = 0

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        now = time.monotonic()
        for key, view in views.items():
            wanted = {b: w.weight for b, w in view.weights.items()}
            written, at = self.written.get(key, (None, None))
            before = self.views.get(key)
            if before is None or {b: w.weight for b, w in before.weights.items()} != wanted:
                self.uncoalesced_writes += 1
            due = annotation_due(
                written, wanted, written_at=at, now=now,
                interval=self.feeds.annotation_interval,
                threshold=self.feeds.annotation_threshold,
            )  # fmt: skip
            if due is None:
                self.owed.pop(key, None)
            elif due <= now:
                self.writes += 1
                self.written[key] = (wanted, now)
                self.owed.pop(key, None)
            else:
                self.owed[key] = due
        self.views = dict(views)


def _fresh(view: ImportView) -> str:
    return next(c.status for c in view.conditions if c.type == FRESH)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _until(condition: Any, within: float, poll: float = 0.05) -> float | None:
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > within:
            return None
        await asyncio.sleep(poll)
    return time.monotonic() - began


async def scale(
    base: Path, clusters: int, pools: int, *, within: float, heal_within: float
) -> dict[str, Any]:
    nats_names = [f"n{i}" for i in range(min(NATS_CLUSTERS, clusters))]
    sc = Supercluster(nats_names, base / f"scale-{clusters}x{pools}", gateway_proxies=True)
    await sc.start()
    names = [f"c{i:03d}" for i in range(clusters)]
    placement = {c: nats_names[i % len(nats_names)] for i, c in enumerate(names)}
    sinks = {c: Views(FeedSettings()) for c in names}
    agents: dict[str, Agent] = {}
    tasks: dict[str, asyncio.Task[None]] = {}
    out: dict[str, Any] = {
        "clusters": clusters,
        "pools_per_cluster": pools,
        "exports": clusters * pools,
        "nats_clusters": len(nats_names),
    }
    expected = clusters * pools

    def start(c: str) -> None:
        s = Settings(
            clusterset="scale",
            cluster=c,
            members=tuple(names),
            nats_url=sc.url(placement[c]),
            nats_cluster=placement[c],
        )
        own = {
            PoolKey("llm", f"{c}-p{j}"): LocalPool(
                namespace="llm", name=f"{c}-p{j}", target_ports=(8000,), export=EXPORT_VALUE
            )
            for j in range(pools)
        }
        agents[c] = build_agent(
            s,
            AgentParts(
                pools=MemoryPools(own), loads=SyntheticLoads(), extra_feeds={"views": sinks[c]}
            ),
        ).agent
        tasks[c] = asyncio.create_task(agents[c].run(), name=f"agent-{c}")

    def converged() -> bool:
        return all(len(s.views) == expected for s in sinks.values())

    try:
        began = time.monotonic()
        for c in names:
            start(c)
        cold = await _until(converged, within)
        out["cold_convergence_s"] = round(cold, 2) if cold is not None else None
        if cold is None:
            out["converged_imports"] = min(len(s.views) for s in sinks.values())
            return out
        out["agents_started_in_s"] = round(time.monotonic() - began - cold, 2)

        # Steady state: RSS, and CPU per 1,000 applied events/s, over a 10 s window.
        applied0 = sum(a.counts.applied for a in agents.values())
        writes0 = sum(v.writes for v in sinks.values())
        plain0 = sum(v.uncoalesced_writes for v in sinks.values())
        cpu0, t0 = time.process_time(), time.monotonic()
        await asyncio.sleep(10)
        window = time.monotonic() - t0
        rate = (sum(a.counts.applied for a in agents.values()) - applied0) / window
        writes = sum(v.writes for v in sinks.values()) - writes0
        plain = sum(v.uncoalesced_writes for v in sinks.values()) - plain0
        out["kube_writes_per_s_per_agent"] = round(writes / window / clusters, 3)
        out["kube_writes_per_s_per_agent_uncoalesced"] = round(plain / window / clusters, 3)
        cpu = (time.process_time() - cpu0) / window
        out["steady_applied_events_per_s"] = round(rate)
        out["agent_process_rss_mib"] = round(_rss_mib())
        out["agent_process_cpu_cores"] = round(cpu, 2)
        out["cpu_cores_per_1000_events_per_s"] = round(cpu / (rate / 1000), 3) if rate else None

        # A NATS cluster cut off from the others, then healed.
        cut = nats_names[0]
        for other in nats_names[1:]:
            await sc.partition(cut, other)
        inside = [c for c in names if placement[c] == cut]
        outside = [c for c in names if placement[c] != cut]

        def cut_off_views() -> list[tuple[ImportView, str]]:
            return [
                (v, d)
                for o in outside[:3]
                for v in sinks[o].views.values()
                for d in v.desired.exporting_clusters
                if d in inside
            ]

        def drained() -> bool:
            return all(v.weights[d].weight == 0 for v, d in cut_off_views())

        def seen_stale() -> bool:  # drained, and the lease ran out too
            return drained() and all(_fresh(v) == "False" for v, _ in cut_off_views())

        seen = await _until(drained, 60)
        out["partition_drained_s"] = round(seen, 2) if seen is not None else None
        stale = await _until(seen_stale, 60) if seen is not None else None
        out["partition_stale_s"] = round(seen + stale, 2) if seen and stale is not None else None
        for other in nats_names[1:]:
            sc.heal(cut, other)

        def restored() -> bool:  # every import fresh, the cut-off clusters weighed again
            return (
                converged()
                and all(_fresh(v) == "True" for s in sinks.values() for v in s.views.values())
                and all(v.weights[d].weight > 0 for v, d in cut_off_views())
            )

        heal = await _until(restored, heal_within) if stale is not None else None
        # No heal figure when the partition was never seen: it would measure nothing.
        out["heal_convergence_s"] = round(heal, 2) if heal is not None else None

        # A dead cluster: its agent stops (its server lives on, shared); how long until every
        # other agent weighs it 0.
        dead = names[-1]
        await stop_task(tasks.pop(dead), within=10)
        last_heard = max(a.beliefs.last_heard(dead) or 0 for c, a in agents.items() if c != dead)

        def weighed_zero() -> bool:
            return all(
                v.weights[dead].weight == 0
                for c, s in sinks.items()
                if c != dead
                for v in s.views.values()
                if dead in v.weights
            )

        zero = await _until(weighed_zero, 60, poll=0.02)
        zero_at = time.time()
        out["dead_cluster_weight_zero_s"] = round(zero, 2) if zero is not None else None
        # The lease runs from when the cluster was last heard, not from when it died.
        out["dead_cluster_weight_zero_since_last_heard_s"] = (
            round(zero_at - last_heard, 2) if zero is not None else None
        )
        out["lease_s"] = agents[names[0]].settings.lease
        return out
    finally:
        for task in tasks.values():
            with contextlib.suppress(Exception):
                await stop_task(task, within=10)
        sc.stop()
        await sc.stop_proxies()
