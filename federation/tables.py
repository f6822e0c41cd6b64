"""Terminal views of the product: `federation status`, `weights` and `replay` tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from federation.model.weights import BackendWeight


def weights_table(pool: str, here: str | None, weights: dict[str, BackendWeight]) -> Table:
    table = Table(
        title=f"weights for {pool or 'the pool'} (here: {here or 'none'})", title_justify="left"
    )
    table.add_column("backend")
    table.add_column("weight", justify="right")
    table.add_column("%", justify="right")
    table.add_column("why")
    for name, w in weights.items():
        table.add_row(name, str(w.weight), f"{w.percent:.2f}", w.reason)
    return table


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}s ago"


def _offset(seconds: float | None) -> str:
    """A peer's clock against ours, in human units ("2.1s ahead", "3m behind")."""
    if seconds is None:
        return "-"
    size = abs(seconds)
    amount = f"{size:.1f}s" if size < 120 else f"{size / 60:.0f}m"
    if size < 0.05:
        return "in sync"
    return f"{amount} {'ahead' if seconds > 0 else 'behind'}"


def status_view(doc: dict[str, Any]) -> Group:
    """``federation status``: peers' leases, then every import's weights and why."""
    link = doc["link"]
    header = Text.from_markup(
        f"[bold]{doc['cluster']}[/] · lease {doc['lease_s']:g}s · link "
        + ("[red]SUSPECT[/] " + link["reason"] if link["suspect"] else "[green]ok[/]")
        + (" · [red]INSECURE[/] (unsigned events accepted)" if doc.get("insecure") else "")
        + _pacing(doc.get("pacing"))
    )
    peers = Table(title="peers", title_justify="left")
    for column in ("peer", "lease age", "state", "exports", "last beat", "missed", "clock"):
        peers.add_column(column)
    for name, p in doc["peers"].items():
        age = "-" if p["lease_age_s"] is None else f"{p['lease_age_s']:.1f}s"
        state = "[red]stale[/]" if p["stale"] else "[green]fresh[/]"
        peers.add_row(
            name,
            age,
            Text.from_markup(state),
            str(p["exports"]),
            _age(p.get("last_beat_age_s")),
            str(p.get("missed_events", 0)),  # events of this peer that never arrived
            _offset(p.get("clock_offset_s")),
        )
    imports = Table(title="imports", title_justify="left")
    for column in ("import", "backend", "weight", "%", "why"):
        imports.add_column(column)
    for key, imp in doc["imports"].items():
        for i, (backend, b) in enumerate(imp["backends"].items()):
            imports.add_row(
                key if i == 0 else "", backend, str(b["weight"]), f"{b['percent']:.1f}", b["reason"]
            )
    return Group(header, peers, imports, feeds_table(doc.get("feeds") or {}))


def _pacing(pacing: dict[str, float] | None) -> str:
    """Said only while a late loop stretches the reconcile gap beyond its base."""
    if not pacing or pacing.get("reconcile_gap_s", 0.0) <= pacing.get("reconcile_gap_base_s", 0.0):
        return ""
    return (
        f" · [yellow]loop {pacing['loop_lateness_s']:.2f}s late[/]: weights step at most every"
        f" {pacing['reconcile_gap_s']:.2f}s"
    )


def feeds_table(feeds: dict[str, Any]) -> Table:
    """Each gateway feed: healthy or failing (and why), failures so far, what it left out."""
    table = Table(title="feeds", title_justify="left")
    for column in ("feed", "state", "failures", "last ok", "notes"):
        table.add_column(column)
    for name, f in feeds.items():
        state = (
            Text("ok", style="green")
            if f["healthy"]
            else Text(f"failing: {f.get('last_error') or ''}", style="red")
        )
        age = "-" if f.get("last_ok_age_s") is None else f"{f['last_ok_age_s']:.1f}s ago"
        notes = f.get("notes") or {}
        said = []
        if notes.get("missing_backends"):
            said.append("not in haproxy.cfg: " + ", ".join(notes["missing_backends"]))
        for key, why in (notes.get("left_out") or {}).items():
            said.append(f"{key}: {why}")
        for route, state in (notes.get("routes") or {}).items():  # the Gateway API feed's
            if not str(state).startswith("managed"):
                said.append(f"HTTPRoute {route}: {state}")
        table.add_row(name, state, str(f["failures"]), age, Text("; ".join(said)[:300]))
    return table


def _first_three(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _summary(row: dict[str, Any]) -> str:
    event = row.get("event") or {}
    if row["type"] == "export":
        if event.get("withdrawn"):
            return "withdrawn"
        return f"ports {event.get('target_ports')} model {event.get('model') or '-'}"
    if row["type"] == "load":
        return (
            f"saturation {event.get('saturation', 0):.2f} ready {event.get('ready_pods')} "
            f"{event.get('epp_status')}"
        )
    if row["type"] == "digest":
        pools = event.get("pools") or []
        hottest = max((p.get("saturation", 0) for p in pools), default=0)
        return f"{len(pools)} pools, highest saturation {hottest:.2f}"
    if row["type"] == "exports":
        listed = [f"{e.get('namespace')}/{e.get('name')}" for e in event.get("exports") or []]
        withdrew = row.get("withdrew") or []
        gone = f"; withdrew {_first_three(withdrew)}" if withdrew else ""
        return f"{len(listed)} exports: {_first_three(listed) or 'none (all withdrawn)'}{gone}"
    if row["type"] == "beat":
        return f"exports {event.get('exports')}"
    return str(row.get("error", ""))


def replay_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(rows)} events", title_justify="left")
    for column in ("stored at", "cluster", "type", "pool", "seq", "what"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["stored_at"], row.get("cluster", "?"), row["type"], row.get("pool", ""),
            str(row.get("event", {}).get("sequence", row.get("event", {}).get("generation", ""))),
            _summary(row),
        )  # fmt: skip
    return table


def state_table(doc: dict[str, Any]) -> Table:
    table = Table(
        title=f"{doc['cluster']} at {doc['at']} (rebuilt from the bus)", title_justify="left"
    )
    for column in ("import", "exporting clusters", "weights", "conditions"):
        table.add_column(column)
    for key, imp in doc["imports"].items():
        weights = ", ".join(f"{b} {w / 10_000:.0f}%" for b, w in sorted(imp["weights"].items()))
        conditions = ", ".join(
            f"{c['type'].split('/')[-1]}={c['reason']}" for c in imp["conditions"]
        )
        table.add_row(key, ", ".join(imp["exportingClusters"]), weights, conditions)
    return table


def routing_view(routing: dict[str, Any]) -> Table:
    """Per routing scenario, every policy's SLO attainment, misses, p99 and rejected share."""
    table = Table(
        title=f"routing: {len(routing['results'])} scenarios "
        f"(demand from {routing['demand_source']})",
        title_justify="left",
    )
    table.add_column("scenario")
    table.add_column("policy")
    for column in ("SLO met", "misses", "p99 s", "rejected", "remote"):
        table.add_column(column, justify="right")
    for result in routing["results"]:
        for i, (policy, p) in enumerate(result["policies"].items()):
            table.add_row(
                result["name"] if i == 0 else "", policy, f"{p['slo_attainment']:.1%}",
                str(p["slo_misses"]), f"{p['p99_delay_s']:.2f}", f"{p['rejected_share']:.1%}",
                f"{p['remote_share']:.0%}", end_section=i == len(result["policies"]) - 1,
            )  # fmt: skip
    return table


def bench_view(doc: dict[str, Any]) -> Group:
    """Every figure of a bench run, flattened (scenario, figure, value), and the routing table."""
    table = Table(title=f"federation bench ({'quick' if doc['quick'] else 'full'}, "
                  f"{doc['took_s']} s)", title_justify="left")  # fmt: skip
    for column in ("scenario", "figure", "value"):
        table.add_column(column)

    def walk(scenario: str, prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(scenario, f"{prefix}.{k}" if prefix else k, v)
        elif not isinstance(value, list):
            table.add_row(scenario, prefix, str(value))

    for scenario, figures in doc["scenarios"].items():
        walk(scenario, "", figures)
    routing = doc["scenarios"].get("routing")
    return Group(table, routing_view(routing)) if routing else Group(table)
