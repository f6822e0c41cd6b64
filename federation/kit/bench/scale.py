"""Scale: C clusters x P pools on this machine, as production runs it — one OS process per agent.

Every cluster runs the production :class:`Agent` in its own process (``scale_agent.py``) with its
own streams and its own connection; clusters are spread over a few NATS clusters (each agent
connects to the server its streams are placed on), joined by gateways through proxies so a NATS
cluster can be cut off and healed. Pools and EPP loads are synthetic (no Kubernetes, no HTTP);
imports go to an in-memory sink. Shapes: ``own`` (each cluster exports P pools of its own: C x P
imports per agent) and ``shared`` (P pools, each exported by a random third of the clusters: P
imports with many backends each, the common inference case).

Figures: cold convergence (every agent told to start → every agent holds every import with every
cluster that exports it, ``cold_every_import_s``: with at least one; Python's
own start-up is reported apart), steady state over a 10 s window (CPU of all agents together,
RSS per agent, events received and published per agent per second, Kubernetes writes of the
weights annotation per agent per second, and the nats-servers' CPU), a NATS cluster cut off
(until the others weigh its clusters 0, and see their leases run out), the heal (from the heal
to every import everywhere Fresh with the cut-off clusters weighed above 0, or, where the policy
rightly gives one 0 — in ``shared``, an importer that exports the pool itself serves its own
demand below the target level — with that pool's load heard from it again within the lease),
and a dead cluster
(its agent killed: until every other agent weighs it 0, since it was last heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from federation.adapters.bus import outbound_stream, shared_inbound_stream
from federation.kit.bench.scale_agent import Layout
from federation.kit.children import die_with_parent
from federation.kit.nats_servers import Supercluster
from federation.messages import exports_subject
from federation.settings import FeedSettings, Settings

NATS_CLUSTERS = 4
# The agent processes' nice value: in production the NATS servers have CPUs of their own; here a
# hundred agents at the servers' priority left each of the 4 servers a hundredth of two cores in
# the cold start's burst, and JetStream acks took over 5 s (hundreds of publishes timed out,
# BENCHMARKS.md, session 19). The agents' CPU is measured the same either way.
AGENTS_NICE = 10
STEADY_WINDOW = 10.0
LEASE = Settings.lease  # the agents run the production settings
# The steady window begins this long after the last agent converged: a weight written during
# the cold start and changed again within the annotation's interval is written once that
# interval is over, and those writes (0.2 to 30 per second per agent in the quick run,
# depending on timing) are the cold start's, not the steady state's.
WRITES_SETTLE = FeedSettings.annotation_interval


class AgentProcess:
    """One cluster's agent process and what it said."""

    def __init__(self, cluster: str, proc: asyncio.subprocess.Process) -> None:
        self.cluster = cluster
        self.proc = proc
        self.events: dict[str, dict[str, Any]] = {}  # the newest of each kind (or watch id)
        self.arrived = asyncio.Condition()
        self.reader = asyncio.create_task(self._read(), name=f"read-{cluster}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            try:
                doc = orjson.loads(line)
                key = doc.get("id") or doc["event"]
            except (orjson.JSONDecodeError, KeyError, AttributeError):
                continue  # not ours (a library printing): the protocol lines are JSON objects
            async with self.arrived:
                self.events[key] = doc
                self.arrived.notify_all()
        await self.proc.wait()  # it exited: nobody waits out a timeout for its answers
        async with self.arrived:
            self.arrived.notify_all()

    async def send(self, doc: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(doc) + b"\n")
        await self.proc.stdin.drain()

    async def said(self, key: str, within: float) -> dict[str, Any] | None:
        """What it said under ``key``, waiting up to ``within`` seconds (None if it did not)."""
        try:
            async with asyncio.timeout(within), self.arrived:
                await self.arrived.wait_for(lambda: key in self.events or self.exited)
        except TimeoutError:
            return None
        return self.events.get(key)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(Exception):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader

    async def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


def _said_after(agents: Iterable[AgentProcess], event: str, go: float) -> list[float]:
    """Seconds from ``go`` to when each agent that said ``event`` said it."""
    return [a.events[event]["at"] - go for a in agents if event in a.events]


async def _spawn(spec: dict[str, Any], nice: int) -> AgentProcess:
    def prepare() -> None:  # in the child, before it runs Python
        die_with_parent()
        os.nice(nice)

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation.kit.bench.scale_agent", orjson.dumps(spec).decode(),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, preexec_fn=prepare,
        limit=1 << 20,
    )  # fmt: skip
    return AgentProcess(spec["cluster"], proc)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_watch_ids = itertools.count()


async def _all_hold(
    agents: list[AgentProcess], kind: str, clusters: list[str], within: float
) -> tuple[float | None, list[dict[str, Any]]]:
    """Ask each agent to say when ``kind`` holds over ``clusters``; the wall time at which the
    last one did, and what each said (None if one did not within ``within``)."""
    wid = f"{kind}-{next(_watch_ids)}"
    for a in agents:
        await a.send({"cmd": "watch", "id": wid, "kind": kind, "clusters": clusters})
    said = await asyncio.gather(*(a.said(wid, within) for a in agents))
    if any(s is None for s in said):
        return None, []
    return max(s["at"] for s in said if s), [s for s in said if s]


def _no_fields(_: AgentProcess) -> dict[str, Any]:
    return {}


async def _ask(
    agents: list[AgentProcess],
    cmd: str,
    fields: Callable[[AgentProcess], dict[str, Any]] = _no_fields,
) -> dict[str, dict[str, Any]]:
    """Send ``cmd`` (with each agent's ``fields``) to every agent still running; what each
    answered within 30 s, by cluster (one that did not answer is left out)."""
    wid = f"{cmd}-{next(_watch_ids)}"
    running = [a for a in agents if not a.exited]
    for a in running:
        await a.send({"cmd": cmd, "id": wid, **fields(a)})
    said = await asyncio.gather(*(a.said(wid, 30) for a in running))
    return {a.cluster: s for a, s in zip(running, said, strict=True) if s}


async def _stats(agents: list[AgentProcess]) -> dict[str, dict[str, Any]]:
    """Each agent's stats, by cluster (an agent that did not answer is left out)."""
    return await _ask(agents, "stats")


async def _exports_stored(
    sc: Supercluster, names: list[str], nats_names: list[str], shared: bool
) -> dict[str, Any]:
    """For a run that did not converge: how many export subjects each outbound stream and
    each shared inbound stream holds (does an export go missing at its source or on the way?)."""
    asked = [(outbound_stream("scale", c), exports_subject("scale", c)) for c in names]
    if shared:
        asked += [(shared_inbound_stream("scale", n), exports_subject("scale")) for n in nats_names]
    counts = await sc.subjects_held(nats_names[0], asked)
    outbound = dict(zip(names, counts[: len(names)], strict=True))
    inbound = dict(zip(nats_names, counts[len(names) :], strict=False))
    held: list[float] = [v for v in outbound.values() if v is not None]
    return {"outbound_by_cluster": _spread(held) | {"min": min(held)} if held else None,
            "shared_inbound": inbound}  # fmt: skip


async def _heal_short(
    late: list[AgentProcess], placement: dict[str, str], cut: str, names: list[str]
) -> list[dict[str, Any]]:
    """What keeps agents from the heal's "restored" (a few of them): imports missing, views
    not Fresh (with one such condition's message), cut-off backends at 0 without news."""

    def other_side(a: AgentProcess) -> dict[str, Any]:
        inside = placement[a.cluster] == cut
        return {"clusters": [o for o in names if (placement[o] != cut) == inside]}

    said = await _ask(late, "why", other_side)
    return [s | {"agent": c} for c, s in said.items()]


async def _publishing(agents: list[AgentProcess], over: float = 3.0) -> dict[str, Any]:
    """What each of ``agents`` published over ``over`` seconds, by type (is a peer that others
    find stale saying anything at all?)."""
    before = await _stats(agents)
    await asyncio.sleep(over)
    after = await _stats(agents)
    waiting = await _ask(agents, "tasks")
    return {
        c: {k: n - before[c]["published_by"].get(k, 0) for k, n in s["published_by"].items()}
        | {"failures": s["publish_failures"] - before[c]["publish_failures"]}
        | {"loop_lag_max_s": s["loop_lag_max_s"]}
        | {"waiting_in": waiting.get(c, {}).get("waiting_in")}
        for c, s in after.items()
        if c in before
    }


async def _short_by_exporter(agents: list[AgentProcess]) -> dict[str, dict[str, float]]:
    """Where a run that did not converge falls short: per exporting cluster, the imports it
    should back that the agents hold no weight of (the ten worst; the spread over agents)."""
    said = [s["by"] for s in (await _ask(agents, "short")).values()]
    exporters = {c for by in said for c in by}
    spread = {c: _spread([by.get(c, 0) for by in said]) for c in exporters}
    worst = sorted(spread, key=lambda c: -spread[c]["median"])[:10]
    return {c: spread[c] for c in sorted(worst)}


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


async def scale(
    base: Path,
    clusters: int,
    pools: int,
    *,
    within: float,
    heal_within: float,
    shape: str = "own",
    seed: int = 2026,
    shared_inbound: bool = True,
    agents_nice: int = AGENTS_NICE,
) -> dict[str, Any]:
    nats_names = [f"n{i}" for i in range(min(NATS_CLUSTERS, clusters))]
    sc = Supercluster(nats_names, base / f"scale-{shape}-{clusters}x{pools}", gateway_proxies=True)
    try:
        await sc.start()
    except BaseException:
        await sc.stop_proxies()  # the servers stop themselves when their start fails
        raise
    names = [f"c{i:03d}" for i in range(clusters)]
    layout = Layout(tuple(names), pools, shape, seed)
    placement = {c: nats_names[i % len(nats_names)] for i, c in enumerate(names)}
    out: dict[str, Any] = {
        "shape": shape,
        "clusters": clusters,
        "pools": pools,
        "pools_per_cluster": pools if shape == "own" else None,
        "agents_nice": agents_nice,
        "exports": sum(len(layout.exported_by(c)) for c in names),
        "imports_per_agent": layout.expected_imports(),
        "nats_clusters": len(nats_names),
        "agent_processes": clusters,
        "lease_s": LEASE,
        "inbound": "shared" if shared_inbound else "own",  # streams the agents read exports from
        "inbound_stream_sources": clusters * (len(nats_names) if shared_inbound else clusters),
    }
    agents: dict[str, AgentProcess] = {}
    try:
        began = time.monotonic()
        for c in names:
            agents[c] = await _spawn({
                "cluster": c, "clusters": names, "pools": pools, "shape": shape, "seed": seed,
                "clusterset": "scale", "nats_url": sc.url(placement[c]),
                "nats_cluster": placement[c], "shared_inbound": shared_inbound,
            }, agents_nice)  # fmt: skip
        loaded = await asyncio.gather(*(a.said("loaded", 300) for a in agents.values()))
        if any(x is None for x in loaded):
            out["error"] = "agent processes did not start"
            return out
        out["processes_loaded_in_s"] = round(time.monotonic() - began, 2)

        go = time.time()
        for a in agents.values():
            await a.send({"cmd": "go"})
        said = await asyncio.gather(*(a.said("converged", within) for a in agents.values()))
        done = [s["at"] - go for s in said if s]
        ready = _said_after(agents.values(), "ready", go)
        # Start-up alone (streams, consumer, catch-up): the JetStream meta layer's share.
        out["agents_ready_s"] = _spread(ready) | {"count": len(ready)} if ready else None
        # Where start-up waited: each step's seconds over the agents (Agent.startup_s).
        steps = [
            a.events["ready"].get("steps") or {} for a in agents.values() if "ready" in a.events
        ]
        out["agents_startup_steps_s"] = {
            k: _spread([s[k] for s in steps if k in s])
            for k in dict.fromkeys(k for s in steps for k in s)
        }
        out["cold_convergence_s"] = round(max(done), 2) if len(done) == clusters else None
        # The figure before session 20: every import held, in ``shared`` with its first exporter
        # (a third of the clusters export each pool; the others came up to 20 s later).
        held_at = _said_after(agents.values(), "imports_held", go)
        out["cold_every_import_s"] = round(max(held_at), 2) if len(held_at) == clusters else None
        if out["cold_convergence_s"] is None:
            by_agent = await _stats(list(agents.values()))
            stats = list(by_agent.values())
            converged = {c for c, s in zip(agents, said, strict=True) if s}
            # The first twenty that did not: where each is placed, and what it held and had
            # yet to read (its consumer's backlog in the inbound stream).
            out["unconverged_agents"] = {
                c: {"nats": placement[c]} | {k: s.get(k) for k in (
                    "imports", "exports_known", "inbound_pending", "applied", "cpu_s",
                    "recomputed", "kept_lone", "lease_lapses")}
                for c, s in sorted(by_agent.items())
                if c not in converged
            } if len(by_agent) - len(converged) <= 20 else None  # fmt: skip
            if out["unconverged_agents"]:
                late = [a for c, a in agents.items() if c in out["unconverged_agents"]]
                for c, said_ in (await _ask(late, "intake")).items():
                    out["unconverged_agents"][c]["intake"] = {
                        k: v for k, v in said_.items() if k not in ("event", "id")
                    }
            held = [s["imports"] for s in stats]
            out["converged_agents"] = len(done)
            out["converged_imports"] = min(held, default=0)  # the key before processes
            out["imports_held_at_deadline"] = _spread(held) | {"min": min(held, default=0)}
            out["events_applied_per_agent_at_deadline"] = _spread([s["applied"] for s in stats])
            known = [s["exports_known"] for s in stats]
            out["exports_known_at_deadline"] = _spread(known) | {"min": min(known, default=0)}
            # What the agents' steps did from go to the deadline: imports recomputed and kept
            # (lone), and the peers' leases they found run out (live peers: each weighed 0 and
            # back, every import it exports recomputed both times).
            counted = ("recomputed", "kept_lone", "lease_lapses")
            out["cold_steps_per_agent"] = {k: _spread([s[k] for s in stats]) for k in counted}
            out["imports_short_by_exporter"] = await _short_by_exporter(list(agents.values()))
            out["exports_stored"] = await _exports_stored(sc, names, nats_names, shared_inbound)
            out["nats_servers_cpu_s"] = round(sum(_cpu_seconds(p) for p in sc.pids().values()), 1)
            out["agents_cpu_s"] = round(sum(s["cpu_s"] for s in stats), 1)
            # Memory with what each held then (no steady window follows a run that fell short).
            out["agent_rss_mib_at_deadline"] = (
                _spread([s["rss_mib"] for s in stats]) if stats else None
            )
            return out
        out["cold_convergence_per_agent_s"] = _spread(done)

        # Steady state: every agent's CPU and RSS, events and writes over a window.
        await asyncio.sleep(max(0.0, go + out["cold_convergence_s"] + WRITES_SETTLE - time.time()))
        servers0 = {c: _cpu_seconds(p) for c, p in sc.pids().items()}
        first_stats = await _stats(list(agents.values()))
        t0 = time.monotonic()
        await asyncio.sleep(STEADY_WINDOW)
        last_stats = await _stats(list(agents.values()))
        window = time.monotonic() - t0
        servers1 = {c: _cpu_seconds(p) for c, p in sc.pids().items()}
        per = [
            {k: (last_stats[c][k] - a[k]) / window for k in (
                "cpu_s", "received", "published", "writes", "uncoalesced_writes", "recomputed",
                "kept_lone")}
            for c, a in first_stats.items()
            if c in last_stats
        ]  # fmt: skip
        lapses = [last_stats[c]["lease_lapses"] - a["lease_lapses"]
                  for c, a in first_stats.items() if c in last_stats]  # fmt: skip
        out["steady"] = {
            "window_s": round(window, 1),
            "agents_cpu_cores_total": round(sum(p["cpu_s"] for p in per), 2),
            "agent_cpu_cores": _spread([p["cpu_s"] for p in per]),
            "agent_rss_mib": _spread([s["rss_mib"] for s in last_stats.values()]),
            "received_events_per_s_per_agent": _spread([p["received"] for p in per]),
            "published_events_per_s_per_agent": _spread([p["published"] for p in per]),
            "kube_writes_per_s_per_agent": _spread([p["writes"] for p in per]),
            "kube_writes_per_s_per_agent_uncoalesced": _spread(
                [p["uncoalesced_writes"] for p in per]
            ),
            "imports_recomputed_per_s_per_agent": _spread([p["recomputed"] for p in per]),
            # Lone imports whose load moved, found as they were without a recomputation.
            "imports_kept_lone_per_s_per_agent": _spread([p["kept_lone"] for p in per]),
            # Peers' leases the agents found run out: every member is alive in this window, so
            # each one is a live peer weighed 0 and back (an agent that read its beats late).
            "lease_lapses_total": sum(lapses),
            "agents_with_lease_lapses": sum(n > 0 for n in lapses),
            # Each agent's worst event-loop lateness over the window (a timer's overshoot):
            # seconds a ready callback waited for its process to get a core.
            "agent_loop_lag_max_s": _spread([s["loop_lag_max_s"] for s in last_stats.values()]),
            # What the agents' reconcilers make of it at the window's end (``model.pacing``).
            "agent_paced_lateness_s": _spread([s["paced_lateness_s"] for s in last_stats.values()]),
            "agent_reconcile_gap_s": _spread([s["paced_gap_s"] for s in last_stats.values()]),
            "nats_servers_cpu_cores_total": round(
                sum(servers1[c] - servers0[c] for c in servers0) / window, 2
            ),
        }

        # A NATS cluster cut off from the others, then healed.
        cut = nats_names[0]
        inside = [c for c in names if placement[c] == cut]
        outside = [agents[c] for c in names if placement[c] != cut]
        for other in nats_names[1:]:
            await sc.partition(cut, other)
        cut_at = time.time()
        drained, _ = await _all_hold(outside, "drained", inside, 2 * LEASE + 30)
        out["partition_drained_s"] = round(drained - cut_at, 2) if drained else None
        stale, _ = await _all_hold(outside, "stale", inside, 2 * LEASE + 30) if drained else (
            None, [],
        )  # fmt: skip
        out["partition_stale_s"] = round(stale - cut_at, 2) if stale else None
        for other in nats_names[1:]:
            sc.heal(cut, other)
        healed_at = time.time()
        if stale is not None:  # no heal figure when the partition was never seen
            watches = [
                _all_hold([agents[c]], "restored", inside if placement[c] != cut else
                          [o for o in names if placement[o] != cut], heal_within)
                for c in names
            ]  # fmt: skip
            restored = await asyncio.gather(*watches)
            ok = [r for r, _ in restored if r is not None]
            out["heal_convergence_s"] = (
                round(max(ok) - healed_at, 2) if len(ok) == len(names) else None
            )
            out["heal_restored_agents"] = len(ok)
            # Each agent's worst event-loop lateness from the steady window's end to here (the
            # cut, the heal and its aftermath).
            lags = [s["loop_lag_max_s"] for s in (await _stats(list(agents.values()))).values()]
            out["heal_agent_loop_lag_max_s"] = _spread(lags) if lags else None
            if len(ok) < len(names):  # where the others fall short, for whoever reads the run
                behind = [
                    a for a, (r, _) in zip(agents.values(), restored, strict=True) if r is None
                ]
                out["heal_short"] = await _heal_short(behind[:5], placement, cut, names)
                unheard = sorted({m for w in out["heal_short"] for m in w["stale_members"]})
                out["heal_stale_members_publishing"] = await _publishing(
                    [agents[m] for m in unheard[:5] if m in agents]
                )
            out["nats_slow_consumers"] = await sc.slow_consumers()
        else:
            out["heal_convergence_s"] = None
        out["heal_s"] = out["heal_convergence_s"]  # the name for it

        # A dead cluster: its agent killed (its server lives on, shared).
        dead = names[-1]
        await agents.pop(dead).kill()
        killed_at = time.time()
        zero, said_zero = await _all_hold(list(agents.values()), "zero", [dead], 3 * LEASE + 30)
        out["dead_cluster_weight_zero_s"] = round(zero - killed_at, 2) if zero else None
        heard = [s["last_heard"] for s in said_zero if s.get("last_heard") is not None]
        # The lease runs from when the cluster was last heard, not from when it died.
        out["dead_cluster_weight_zero_since_last_heard_s"] = (
            round(zero - max(heard), 2) if zero and heard else None
        )
        # How late after the lease ran out each agent weighed it 0, on its own clock; the worst
        # agent. Only agents whose imports have it as a backend (in `shared`, others hold
        # "zero" from the start); negative when a fading report reached 0 before the lease.
        weighing = [s for s in said_zero
                    if s.get("last_heard") is not None and s.get("agent_now") is not None
                    and s.get("weighs", True)]  # fmt: skip
        if zero and weighing:
            latest = max(weighing, key=lambda s: s["agent_now"] - s["last_heard"])
            late = latest["agent_now"] - latest["last_heard"] - LEASE
            out["dead_reaction_after_lease_s"] = round(late, 3)
            # Its steps from its lease end on: why it was late.
            out["dead_latest_agent_steps_since_lease"] = latest.get("steps_since_lease")
        else:
            out["dead_reaction_after_lease_s"] = None
        return out
    finally:
        await asyncio.gather(*(a.stop() for a in agents.values()))
        sc.stop()
        await sc.stop_proxies()
