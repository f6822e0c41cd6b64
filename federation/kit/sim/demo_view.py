"""The demo's live view: one table per simulated cluster, its imports, weights and traffic."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from federation.kit.sim.demo import Demo, SimCluster
from federation.model.pools import LOCAL_BACKEND


def _ages(sim: SimCluster, namespace: str, name: str, backends: tuple[str, ...]) -> str:
    if sim.agent is None:
        return ""
    now = time.time()
    parts = []
    for backend in backends:
        if backend == LOCAL_BACKEND:
            continue
        seen = sim.agent.beliefs.report_seen_at(backend, namespace, name)
        parts.append(f"{backend} {now - seen:.1f}s" if seen is not None else f"{backend} -")
    return ", ".join(parts)


def cluster_table(sim: SimCluster, second: int = 0) -> Table:
    pools = sim.pools.snapshot()
    exported = sum(1 for p in pools.values() if p.export == "ClusterSet")
    table = Table(
        title=f"[bold]{sim.name}[/] — {len(pools)} pools, {exported} exported · {sim.api.base_url}",
        title_justify="left",
        expand=True,
    )
    table.add_column("import")
    table.add_column("exporting clusters")
    table.add_column("weights (% of traffic)")
    table.add_column("report ages")
    for key, view in sorted(sim.imports.views.items()):
        weights = "  ".join(
            f"{b} {w.percent:5.1f}%" if w.weight else f"[dim]{b} 0%[/]"
            for b, w in view.weights.items()
        )
        table.add_row(
            str(key),
            ", ".join(view.desired.exporting_clusters),
            Text.from_markup(weights),
            _ages(sim, key.namespace, key.name, view.desired.backends),
        )
    if sim.traffic is not None:
        table.caption = traffic_line(sim, second)
        table.caption_justify = "left"
    return table


def traffic_line(sim: SimCluster, second: int) -> str:
    """Requests per second served by each backend (last 5 s), errors and SLO attainment."""
    t = sim.traffic
    assert t is not None
    rates = t.rate_by_backend(second)
    split = ", ".join(f"{b} {r:.1f}" for b, r in rates.items()) or "-"
    slo = f"{100 * t.within_slo / t.requests:.1f} %" if t.requests else "-"
    return (
        f"traffic {t.key}: {sum(rates.values()):.1f} req/s served — {split} · "
        f"errors {t.errors} of {t.requests} · SLO ({t.slo:g} s) {slo}"
    )


def demo_view(demo: Demo, elapsed: float, duration: float) -> Group:
    converged = (
        f"converged after {demo.converged_after_s:.2f}s"
        if demo.converged_after_s is not None
        else "converging..."
    )
    header = Text.from_markup(
        f"[bold]federation demo[/] clusterset [cyan]{demo.options.clusterset}[/] · "
        f"supercluster ready after {demo.bus_ready_after_s or 0:.1f}s · {converged} · "
        f"{elapsed:.0f}/{duration:.0f}s · "
        + (
            "[green]secure[/] (mTLS, per-cluster users, signed events)"
            if demo.options.secure
            else "[yellow]insecure sandbox[/] on loopback (--secure for signed events)"
        )
    )
    second = demo.seconds_since_start()
    return Group(header, *(cluster_table(sim, second) for sim in demo.clusters.values()))
