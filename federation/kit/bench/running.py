"""`federation bench`: run the scenarios, one JSON document with every figure and its ratio to
the raw NATS baseline measured in the same run, and whether each target is met."""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from federation import __version__
from federation.kit.bench.bus_paths import ingest, raw_baseline
from federation.kit.bench.propagation import propagation
from federation.kit.bench.routing import run_family
from federation.kit.bench.routing_scenarios import Scenario, scenario_family
from federation.kit.bench.scale import AGENTS_NICE, scale
from federation.model.weights import WeightPolicy

SCENARIOS = ("raw", "ingest", "propagation", "scale", "routing")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def machine() -> dict[str, Any]:
    with open("/proc/cpuinfo") as f:
        models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return {
        "cpus": len(models) or None,
        "cpu": models[0] if models else platform.processor(),
        "python": platform.python_version(),
        "federation": __version__,
    }


async def run_bench(
    scenarios: list[str],
    *,
    quick: bool,
    routing: list[Scenario] | None = None,
    demand_source: str = "epp",
    overflow_ratio: float | None = None,
    clusters: int | None = None,
    pools: int | None = None,
    shape: str = "own",
    shared_inbound: bool = True,
    agents_nice: int | None = None,
) -> dict[str, Any]:
    chosen = scenarios or list(SCENARIOS)
    doc: dict[str, Any] = {"quick": quick, "machine": machine(), "scenarios": {}}
    base = Path(tempfile.mkdtemp(prefix="federation-bench-"))
    started = time.monotonic()
    try:
        results = doc["scenarios"]
        if {"raw", "ingest", "propagation"} & set(chosen):
            results["raw"] = await raw_baseline(base, quick)  # every ratio's denominator
        raw = results.get("raw", {})
        if "ingest" in chosen:
            results["ingest"] = r = await ingest(base, quick)
            r["ratio_to_raw_consume_rate"] = _ratio(r["applied_per_s"], raw["consume_rate_per_s"])
            r["target_at_least_half_of_raw"] = (r["ratio_to_raw_consume_rate"] or 0) >= 0.5
        if "propagation" in chosen:
            results["propagation"] = r = await propagation(base, quick)
            raw_p99 = raw["publish_deliver_across_clusters_s"]["p99"]
            r["load_p99_ratio_to_raw_p99"] = _ratio(r["load_to_peer_weight_s"]["p99"], raw_p99)
            r["export_p99_ratio_to_raw_p99"] = _ratio(
                r["export_annotation_to_import_everywhere_s"]["p99"], raw_p99
            )
            r["target_load_p99_within_3x_raw"] = (r["load_p99_ratio_to_raw_p99"] or 1e9) <= 3.0
        if "scale" in chosen:
            c, p = (clusters or (20 if quick else 100)), (pools or (50 if quick else 100))
            results["scale"] = r = await scale(
                base, c, p, shape=shape, shared_inbound=shared_inbound,
                agents_nice=AGENTS_NICE if agents_nice is None else agents_nice,
                within=120 if quick else 300,
                heal_within=60 if quick else 120,
            )  # fmt: skip
            lease = r["lease_s"]
            steady = r.get("steady") or {}
            r["targets"] = {
                "cold_under_10s": (r.get("cold_convergence_s") or 1e9) < 10,
                "heal_under_5s": (r.get("heal_convergence_s") or 1e9) < 5,
                # From its death: since it was last heard, 0 comes by construction a reaction
                # after the lease (``dead_reaction_after_lease_s``).
                "dead_to_zero_within_lease": (r.get("dead_cluster_weight_zero_s") or 1e9) <= lease,
                "steady_cpu_under_1_core": steady.get("agents_cpu_cores_total", 1e9) < 1.0,
                "rss_under_150_mib": (steady.get("agent_rss_mib") or {}).get("max", 1e9) < 150,
            }
        if "routing" in chosen:
            family = routing if routing is not None else scenario_family(size=4 if quick else 16)
            policy = None if overflow_ratio is None else WeightPolicy(overflow_ratio=overflow_ratio)
            results["routing"] = r = run_family(
                family, demand_source=demand_source, weight_policy=policy
            )
            r["overflow_ratio"] = (policy or WeightPolicy()).overflow_ratio
    finally:
        shutil.rmtree(base, ignore_errors=True)
    doc["took_s"] = round(time.monotonic() - started, 1)
    return doc
