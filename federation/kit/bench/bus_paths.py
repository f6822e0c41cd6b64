"""Bus benchmarks: the raw nats-py baseline, and one agent's ingest rate, on embedded servers.

Raw baseline (nats-py only, no federation code): JetStream publish → deliver latency through a
pull consumer fetching in batches (the agent's pattern), on one server and across two NATS
clusters (a stream sourced over a gateway, the federation's path), and the consume rate
(fetch + ack) of a pre-filled stream — all with load-report-sized messages.

Ingest: the agent's two consume paths with a reconcile (recompute every changed import's view
and weights) every 0.5 s of wall time, as its ``consume``, ``consume-live`` and ``reconcile``
tasks do: exports from a pre-filled inbound stream (fetch → decode and check → apply → ack), then
load reports heard live on plain NATS (→ newest per subject → decode and check → apply).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from federation import messages
from federation.adapters.bus import BusAddress, NatsBus
from federation.app.assembly import AgentParts, build_agent
from federation.kit.bench.stats import percentiles
from federation.kit.nats_baseline import (
    create_raw_streams,
    fill_then_consume,
    plain_publisher,
    publish_deliver_latencies,
    publish_events,
    wait_stream_holds,
)
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.sources import MemoryLoads, MemoryPools
from federation.messages import ExportEvent, LoadReport
from federation.schemas import EXAMPLES
from federation.settings import Settings

# The bus schemas' example load report: the size of a real one.
REPORT_BYTES = len(messages.encode(EXAMPLES["load"]))


@contextlib.asynccontextmanager
async def supercluster(names: list[str], base: Path) -> AsyncIterator[Supercluster]:
    sc = Supercluster(names, base)
    try:
        await sc.start()
        yield sc
    finally:
        sc.stop()


async def raw_baseline(base: Path, quick: bool) -> dict[str, Any]:
    count = 300 if quick else 2000
    fill = 5_000 if quick else 50_000
    out: dict[str, Any] = {"message_bytes": REPORT_BYTES, "samples": count}
    async with supercluster(["r0", "r1"], base / "raw") as sc:
        await create_raw_streams(sc.url("r0"), "r0", "r1")
        local = await publish_deliver_latencies(
            sc.url("r0"), sc.url("r0"), "RAW_LOCAL", "raw.local", count, REPORT_BYTES
        )
        remote = await publish_deliver_latencies(
            sc.url("r0"), sc.url("r1"), "RAW_IN", "raw.out", count, REPORT_BYTES
        )
        out["publish_deliver_local_s"] = percentiles(local)
        out["publish_deliver_across_clusters_s"] = percentiles(remote)
        out["consume_rate_per_s"] = round(await fill_then_consume(sc.url("r0"), fill, REPORT_BYTES))
    return out


async def ingest(base: Path, quick: bool) -> dict[str, Any]:
    """Events per second one agent applies, through its own consume and reconcile code.

    Exports come through the inbound stream (fetch, apply, ack); load reports come live on plain
    NATS, as in production, in rounds of one report per pool, one round ahead: round k+1 is
    published once round k-1 was applied, so the agent is never idle, and what it has not
    taken when the next round arrives is superseded (counted apart, not as applied). The
    publisher shares the agent's event loop: its cost is counted against the agent.
    """
    peers = [f"p{i:02d}" for i in range(5)]
    pools = 40 if quick else 200
    rounds = 100
    cs = "ingest"
    members = ("agent", *peers)
    async with supercluster(["i0", "i1"], base / "ingest") as sc:
        url = sc.url("i0")

        def address(cluster: str, deliver_all: bool = False) -> BusAddress:
            return BusAddress(
                url=url,
                clusterset=cs,
                cluster=cluster,
                placement_cluster="i0",
                members=members,
                history_per_subject=100_000,
                deliver_all=deliver_all,
            )

        for cluster in peers:
            bus = NatsBus(address(cluster))
            await bus.connect()
            await bus.ensure_streams()
            await bus.close()
        agent_bus = NatsBus(address("agent", deliver_all=True))
        await agent_bus.connect()
        await agent_bus.ensure_streams()
        now = time.time()
        exports: list[messages.Event] = [
            ExportEvent(
                cluster=p,
                namespace="llm",
                name=f"pool-{j}",
                generation=1,
                exported_at=now,
                published_at=now,
                target_ports=(8000,),
                model=f"m{j}",
            )
            for p in peers
            for j in range(pools)
        ]
        await publish_events(url, cs, exports)
        await wait_stream_holds(url, f"FED_IN_{cs}_agent", len(exports), within=120)

        settings = Settings(clusterset=cs, cluster="agent", members=members, nats_url=url)
        agent = build_agent(
            settings, AgentParts(bus=agent_bus, pools=MemoryPools(), loads=MemoryLoads())
        ).agent
        await agent_bus.start_consuming()
        await agent_bus.watch_live()
        began = time.perf_counter()
        while agent.counts.applied + agent.counts.duplicates < len(exports):
            for delivery in await agent_bus.fetch(512, 1.0):
                await agent.apply_delivery(delivery)
        agent.step_views(agent.now())
        exports_s = time.perf_counter() - began

        def report(round_: int, i: int) -> LoadReport:
            p, j = peers[i % len(peers)], i // len(peers)
            return LoadReport(
                cluster=p,
                namespace="llm",
                name=f"pool-{j}",
                sequence=2 + round_,
                observed_at=now,
                published_at=time.time(),
                ready_pods=4 + (round_ + i) % 3,
                saturation=((round_ + i) % 100) / 100,
            )

        per_round = len(peers) * pools
        reports = rounds * per_round
        handled0 = agent.counts.applied + agent.counts.duplicates + agent.counts.stale
        handled0 += sum(agent.counts.rejected.values())

        def handled() -> int:
            c, (superseded, dropped) = agent.counts, agent_bus.live_unapplied()
            done = c.applied + c.duplicates + c.stale + sum(c.rejected.values())
            return done + superseded + dropped - handled0

        async with plain_publisher(url, cs) as publish:
            began = time.perf_counter()
            last_reconcile, reconciles, published = began, 0, 0
            # Plain NATS delivers at most once: a report lost on the way must not hang the bench.
            while handled() < reports and time.perf_counter() - began < 300:
                # One round ahead: the next is on its way while this one is applied.
                if published < rounds and handled() >= (published - 1) * per_round:
                    await publish([report(published, i) for i in range(per_round)])
                    published += 1
                for heard in await agent_bus.live(0.05):
                    await agent.apply_delivery(heard)
                if time.perf_counter() - last_reconcile >= settings.reconcile_interval:
                    agent.step_views(agent.now())
                    last_reconcile, reconciles = time.perf_counter(), reconciles + 1
            agent.step_views(agent.now())
            reports_s = time.perf_counter() - began
        await agent_bus.close()
    superseded = agent_bus.live_unapplied()[0]
    if handled() < reports:
        raise RuntimeError(f"ingest: {reports - handled()} of {reports} reports never arrived")
    return {
        "events": len(exports) + reports,
        "exports": len(exports),
        "exports_applied_per_s": round(len(exports) / exports_s),
        "reports": reports,
        "reports_applied_per_s": round((reports - superseded) / reports_s),
        "reports_superseded": superseded,
        "imports": len(agent.views),
        "backends_per_import": len(peers),
        "reconciles": reconciles + 2,
        "applied_per_s": round((len(exports) + reports - superseded) / (exports_s + reports_s)),
        "rejected": sum(agent.counts.rejected.values()),
    }
