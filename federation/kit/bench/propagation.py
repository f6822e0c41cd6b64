"""Propagation through the whole product, on the demo's real paths (NATS supercluster, agents,
kube adapter against emulated API servers):

- load → weight: an exporter's EPP load steps; from the moment its agent publishes the report
  (the scrape interval is excluded) until a peer's weights for that exporter change in what the
  peer feeds its gateways;
- export → import: an export annotation is written into one cluster's API; until the
  InferencePoolImport exists in every member's API.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

from federation.kit.bench.stats import percentiles
from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.layouts import cluster_names
from federation.model.loads import LoadSample
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey

POLL = 0.001  # seconds between checks: the resolution of these figures
LLAMA = PoolKey("llm", "llama-3-70b")  # exported by us-east and eu-west; ap-south has it locally


async def _until(condition: Any, within: float) -> float:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(POLL)
    return time.time()


async def propagation(base: Path, quick: bool) -> dict[str, Any]:
    samples = 15 if quick else 60
    sc = Supercluster(cluster_names(3), base / "propagation")
    await sc.start()
    demo = await Demo.start(
        DemoOptions(clusters=3, pools=4, clusterset="prop", load_interval=0.25), sc
    )
    try:
        steady = LoadSample(observed_at=0, ready_pods=6, kv_cache_utilization=0.3, saturation=0.3)
        for name in ("eu-west", "ap-south"):  # hold every other load still: no other movement
            for key in demo.clusters[name].pools.snapshot():
                demo.clusters[name].load.pin(key, steady)
        # ap-south's own llama runs hot, so it spills to the exporters and their loads matter.
        hot = dataclasses.replace(steady, kv_cache_utilization=0.9, saturation=0.9)
        applied_lags: list[float] = []
        demo.clusters["ap-south"].load.pin(LLAMA, hot)
        # The bus part alone: publish at us-east → applied at ap-south.
        demo.lag_taps.append(
            lambda at, peer, lag: (
                applied_lags.append(lag) if (at, peer) == ("ap-south", "us-east") else None
            )
        )
        await demo.start_agents()
        await demo.wait_converged(within=60)
        exporter, peer = demo.clusters["us-east"], demo.clusters["ap-south"]
        assert peer.agent is not None
        load_lags: list[float] = []
        for i in range(samples):
            level = 0.2 if i % 2 else 0.75
            before = peer.agent.beliefs.loads.get(("us-east", *LLAMA))
            before_seq = before.sequence if before else -1
            weight_before = peer.imports.views[LLAMA].weights["us-east"].weight
            exporter.load.pin(
                LLAMA, dataclasses.replace(steady, kv_cache_utilization=level, saturation=level)
            )

            def report_applied(seq: int = before_seq, level: float = level) -> bool:
                r = peer.agent.beliefs.loads.get(("us-east", *LLAMA)) if peer.agent else None
                return r is not None and r.sequence > seq and abs(r.saturation - level) < 1e-6

            await _until(report_applied, within=20)
            report = peer.agent.beliefs.loads[("us-east", *LLAMA)]
            changed = await _until(
                lambda w=weight_before: peer.imports.views[LLAMA].weights["us-east"].weight != w,
                within=20,
            )
            load_lags.append(changed - report.published_at)
            await asyncio.sleep(1.0)  # let the weights settle before the next step

        export_lags: list[float] = []
        for i in range(samples):
            key = PoolKey("llm", f"bench-{i}")
            pool = LocalPool(
                namespace="llm",
                name=key.name,
                target_ports=(8000,),
                model=key.name,
                export=EXPORT_VALUE,
                metrics_url="http://127.0.0.1:9/metrics",
            )
            started = time.time()
            await exporter.pools.put(pool)
            done = await _until(
                lambda k=key: all(k in c.kube_imports() for c in demo.clusters.values()), within=30
            )
            export_lags.append(done - started)
        return {
            "load_to_peer_weight_s": percentiles(load_lags),
            "publish_to_applied_at_peer_s": percentiles(applied_lags),
            "export_annotation_to_import_everywhere_s": percentiles(export_lags),
            "clusters": 3,
            "note": "load: from the exporter's publish (scrape excluded) to the peer's feed; "
            "export: from the annotation's write to the InferencePoolImport in all 3 APIs",
        }
    finally:
        await demo.stop()
        sc.stop()
