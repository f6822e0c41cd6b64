"""One cluster of the scale benchmark as its own OS process: the production agent on synthetic
pools and loads, imports into an in-memory sink, driven over stdin/stdout (JSON lines).

Agents are separate processes in real life; sharing one event loop made saturation feed back
into late reports and flapping leases. The driver (``scale.py``) starts one of these per cluster:

- it says ``{"event": "loaded"}`` once built, and starts its agent on ``{"cmd": "go"}``;
- it says ``{"event": "ready", "at": T, "steps": {...}}`` (wall clock) when its start-up is over
  (streams, consumer, catch-up; ``steps``: the seconds each took) and
  ``{"event": "imports_held", "at": T}`` when it holds every import, and
  ``{"event": "converged", "at": T}`` when every import holds every cluster that exports it;
- ``{"cmd": "watch", "id": I, "kind": K, "clusters": [...]}`` makes it say
  ``{"event": "watch", "id": I, "at": T, ...}`` once condition K holds over its imports —
  ``drained`` (those clusters weigh 0 wherever they are backends), ``stale`` (and their imports
  are not Fresh), ``restored`` (every import held and Fresh, those clusters above 0), ``zero``
  (a dead cluster weighs 0 everywhere; with when this agent last heard it);
- ``{"cmd": "stats", "id": I}`` is answered with its CPU, RSS, events and Kubernetes writes.

Conditions are checked here, when the views change, so the driver never pulls 10,000 imports
through a pipe. Run as ``python -m federation.kit.bench.scale_agent SPEC_JSON``.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import random
import sys
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from federation import messages
from federation.adapters.bus import NatsBus, consumer_name
from federation.app.assembly import AgentParts, build_agent
from federation.kit.sim.sources import MemoryPools
from federation.model.coalescing import annotation_due
from federation.model.conditions import FRESH
from federation.model.loads import LoadSample
from federation.model.pools import EXPORT_VALUE, LocalPool, PoolKey
from federation.model.views import ImportView
from federation.runtime.agent import Agent
from federation.settings import FeedSettings, Settings

LAG_TICK = 0.05  # seconds: the loop-lag probe's sleep
STEPS_KEPT = 400  # reconcile steps remembered for the dead cluster's diagnostics
PROFILE_ENV = "FEDERATION_BENCH_PROFILE"  # a directory: the first agent's profiles go there


@dataclass(frozen=True)
class Layout:
    """Which pools each cluster exports: ``own`` (P of its own each) or ``shared`` (P pools,
    each exported by a random third of the clusters, seeded)."""

    clusters: tuple[str, ...]
    pools: int
    shape: str = "own"
    seed: int = 2026

    def exported_by(self, cluster: str) -> list[str]:
        if self.shape == "own":
            return [f"{cluster}-p{j}" for j in range(self.pools)]
        return [p for p, owners in self.owners().items() if cluster in owners]

    def owners(self) -> dict[str, list[str]]:
        """Pool -> the clusters that export it (``shared`` only)."""
        rng = random.Random(self.seed)
        k = max(1, len(self.clusters) // 3)
        return {f"shared-p{j}": rng.sample(self.clusters, k) for j in range(self.pools)}

    def expected_imports(self) -> int:
        return len(self.clusters) * self.pools if self.shape == "own" else self.pools

    def expected_backends(self) -> int:
        """Exporting clusters summed over the imports: every export, at every agent."""
        if self.shape == "own":
            return self.expected_imports()
        return sum(len(owners) for owners in self.owners().values())


class SyntheticLoads:
    """A steady load per pool that moves every 10 s (each pool on its own phase), so digests
    flow on change as well as at their keepalive; its gauges jitter at every scrape by less
    than the publishing threshold, as a real pool's do. (No request counters: the agent's
    rates come from those, so the weights use the saturation rule, not the rate plan.)"""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self.noise = random.Random(zlib.crc32(cluster.encode()))

    async def sample(self, pool: LocalPool) -> LoadSample:
        now = time.time()
        h = zlib.crc32(f"{self.cluster}/{pool.name}".encode())
        level = 0.3 + 0.1 * ((h + int(now / 10 + h % 10 / 10)) % 3)
        busy = level + self.noise.uniform(-0.005, 0.005)
        return LoadSample(observed_at=now, ready_pods=4, kv_cache_utilization=busy, saturation=busy)


class Views:
    """The agent's imports, and the Kubernetes writes of their weights annotation: counted by
    the kube sink's own coalescing rule (``model.coalescing``; the bench runs no API server),
    beside what one write per weight change — the rule before coalescing — would cost."""

    def __init__(self, feeds: FeedSettings, on_change: Any) -> None:
        self.views: Mapping[PoolKey, ImportView] = {}
        self.feeds = feeds
        self.written: dict[PoolKey, tuple[dict[str, int], float]] = {}
        self.owed: dict[PoolKey, float] = {}  # deferred writes and when they come due
        self.writes = 0
        self.uncoalesced_writes = 0
        self.on_change = on_change

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        now = time.monotonic()
        before = self.views
        # The book hands unchanged views over as the same objects: only the others, and the
        # writes deferred earlier, can cost a write.
        moved = [k for k, v in views.items() if before.get(k) is not v]
        for key in moved:
            held = before.get(key)
            if held is None or held.weight_by_backend != views[key].weight_by_backend:
                self.uncoalesced_writes += 1
        for key in {*moved, *(k for k, due in self.owed.items() if due <= now)}:
            view = views.get(key)
            if view is None:
                self.owed.pop(key, None)
                continue
            wanted = view.weight_by_backend
            written, at = self.written.get(key, (None, None))
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
        self.views = views
        self.on_change()


def _fresh(view: ImportView) -> bool:
    return any(c.type == FRESH and c.status == "True" for c in view.conditions)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Child:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.layout = Layout(tuple(spec["clusters"]), spec["pools"], spec["shape"], spec["seed"])
        self.cluster: str = spec["cluster"]
        settings = Settings(
            clusterset=spec["clusterset"], cluster=self.cluster, members=self.layout.clusters,
            nats_url=spec["nats_url"], nats_cluster=spec["nats_cluster"],
            shared_inbound=spec.get("shared_inbound", False),
        )  # fmt: skip
        own = {
            PoolKey("llm", name): LocalPool(
                namespace="llm", name=name, target_ports=(8000,), export=EXPORT_VALUE
            )
            for name in self.layout.exported_by(self.cluster)
        }
        self.expected = self.layout.expected_imports()
        self.expected_backends = self.layout.expected_backends()
        self.sink = Views(settings.feeds, self._views_changed)
        self.agent: Agent = build_agent(
            settings,
            AgentParts(
                pools=MemoryPools(own), loads=SyntheticLoads(self.cluster),
                extra_feeds={"views": self.sink},
            ),
        ).agent  # fmt: skip
        self.watches: dict[str, tuple[str, frozenset[str]]] = {}
        self.imports_held = False  # every import, with at least one exporting cluster
        self.converged = False  # every import with every exporting cluster
        # The reconciler's recent steps (agent clock at the start, seconds taken, a view
        # changed): when a dead cluster's weight went to 0 late, whether no step ran at its
        # lease end, or steps ran and did not zero it, or they ran long.
        self.steps: deque[tuple[float, float, bool]] = deque(maxlen=STEPS_KEPT)
        step_views = self.agent.step_views

        def logged_step(now: float) -> bool:
            began = time.monotonic()
            changed = step_views(now)
            self.steps.append((now, time.monotonic() - began, changed))
            return changed

        self.agent.step_views = logged_step  # type: ignore[method-assign]
        # With FEDERATION_BENCH_PROFILE, the first agent runs under cProfile from its first
        # stats request to its second (the cold start, then the steady window: one file each).
        self.profile_to: Path | None = None
        self._profile: cProfile.Profile | None = None
        self._profiles = 0
        # The event loop's worst lateness since the last stats request: a process starved of
        # CPU (or blocked in a callback) runs its timers late, an await that hangs does not.
        self.loop_lag_max = 0.0

    def say(self, doc: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
        sys.stdout.flush()

    def _views_changed(self) -> None:
        views = self.sink.views
        if not self.converged and len(views) >= self.expected:
            if not self.imports_held:
                self.imports_held = True
                self.say({"event": "imports_held", "at": time.time()})
            # In ``shared`` an import is there with its first exporter: converged is the last.
            backends = sum(len(v.desired.exporting_clusters) for v in views.values())
            if backends >= self.expected_backends:
                self.converged = True
                self.say({"event": "converged", "at": time.time()})
        self._check_watches()

    def _holds(self, kind: str, clusters: frozenset[str]) -> bool:
        views = self.sink.views.values()
        if kind in ("drained", "zero"):
            return all(v.weights[c].weight == 0 for v in views for c in clusters & v.weights.keys())
        if kind == "stale":
            return self._holds("drained", clusters) and all(
                not _fresh(v) for v in views if clusters & v.weights.keys()
            )
        if kind == "restored":
            if len(self.sink.views) < self.expected or not all(_fresh(v) for v in views):
                return False
            now = self.agent.now()
            live = set(self.agent.live_members(now)) & clusters
            return next(self._zero_without_news(clusters, live, now), None) is None
        raise ValueError(f"unknown watch {kind!r}")

    def _zero_without_news(
        self, clusters: frozenset[str], live: set[str], now: float
    ) -> Iterator[tuple[str, str]]:
        """(pool, cut-off cluster) of each import weighing that cluster 0 for want of news."""
        for v in self.sink.views.values():
            for c in clusters & v.weights.keys():
                if v.weights[c].weight == 0 and not self._rightly_zero(v, c, live, now):
                    yield v.key.name, c

    def why_not_restored(self, clusters: frozenset[str]) -> dict[str, Any]:
        """The parts of "restored" that do not hold (for a heal that did not converge)."""
        views = list(self.sink.views.values())
        unfresh = [v for v in views if not _fresh(v)]
        now = self.agent.now()
        members_live = set(self.agent.live_members(now))
        live = members_live & clusters
        unheard = list(self._zero_without_news(clusters, live, now))
        fresh_msgs = [c.message for v in unfresh[:1] for c in v.conditions if c.type == FRESH]
        counts = self.agent.counts
        stale = sorted(set(self.layout.clusters) - members_live)
        mono = time.monotonic()
        beliefs = self.agent.beliefs
        return {
            "stale_members": stale,
            # For a few of them: seconds since anything of theirs was heard on the live path
            # (the payload unchecked; not kept for the agent itself), since one was applied
            # (an agent applies its own beats too: its own entry says whether it is late), and
            # the beat sequence held.
            "stale_detail": {
                m: {
                    "live_heard_ago": round(mono - t, 1)
                    if (t := self.agent.live_heard.get(m)) is not None
                    else None,
                    "applied_ago": round(now - h, 1)
                    if (h := beliefs.last_heard(m)) is not None
                    else None,
                    "beat_sequence": beliefs.beats[m].sequence if m in beliefs.beats else None,
                }
                for m in stale[:5]
            },
            "counts": counts.as_dict() | {"rejected_by": dict(counts.rejected)},
            "missing_imports": max(0, self.expected - len(views)),
            "not_fresh": len(unfresh),
            "not_fresh_example": fresh_msgs[0] if fresh_msgs else None,
            "zero_without_news": len(unheard),
            "zero_without_news_example": unheard[:3],
            "cut_off_live": len(live),
        }

    def _rightly_zero(self, view: ImportView, cluster: str, live: set[str], now: float) -> bool:
        """A cut-off backend at 0 by the policy's choice, not for want of news: this importer
        exports the pool itself and serves it (its own backend above 0), and ``cluster`` is
        live with its load of the pool received within the lease (the cut lasted longer than a
        lease — until the others saw every cut-off lease run out — so that is news from after
        the heal)."""
        own = view.weights.get(self.cluster)
        if own is None or own.weight == 0 or cluster not in live:
            return False
        seen = self.agent.beliefs.report_seen_at(cluster, view.key.namespace, view.key.name)
        return seen is not None and now - seen < self.agent.settings.lease

    def _check_watches(self) -> None:
        for wid, (kind, clusters) in list(self.watches.items()):
            if self._holds(kind, clusters):
                del self.watches[wid]
                heard = [h for c in clusters if (h := self.agent.beliefs.last_heard(c))]
                last = max(heard, default=None)
                weighs = any(clusters & v.weights.keys() for v in self.sink.views.values())
                self.say({"event": "watch", "id": wid, "at": time.time(), "last_heard": last,
                          "agent_now": self.agent.now(), "weighs": weighs,
                          "steps_since_lease": self._steps_since(last)})  # fmt: skip

    def _steps_since(self, heard: float | None) -> list[list[float]] | None:
        """The steps from a second before ``heard``'s lease ran out: [start after the lease
        end, seconds taken, 1 if a view changed], the first 30."""
        if heard is None:
            return None
        end = heard + self.agent.settings.lease
        return [[round(t - end, 3), round(took, 3), float(changed)]
                for t, took, changed in self.steps if t >= end - 1.0][:30]  # fmt: skip

    def _next_profile(self) -> None:
        if self.profile_to is None or self._profiles >= 2:
            return
        if self._profile is not None:
            self._profile.disable()
            names = ("cold", "steady")
            path = self.profile_to / f"{self.cluster}-{names[self._profiles]}.prof"
            self._profile.dump_stats(path)
            self._profiles += 1
        if self._profiles < 2:
            # CPU time, not wall time: on a saturated machine a process waits for a core
            # mid-function, and wall time would charge those waits to whatever was running.
            self._profile = cProfile.Profile(time.process_time)
            self._profile.enable()

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await asyncio.sleep(LAG_TICK)
            self.loop_lag_max = max(self.loop_lag_max, loop.time() - began - LAG_TICK)

    def stats(self, wid: str) -> dict[str, Any]:
        self._next_profile()
        lag, self.loop_lag_max = self.loop_lag_max, 0.0
        paced_lateness, paced_gap = self.agent.pacing()
        counts = self.agent.counts
        received = counts.applied + counts.duplicates + counts.stale + sum(counts.rejected.values())
        return {
            "event": "stats", "id": wid, "at": time.time(), "cpu_s": time.process_time(),
            "rss_mib": _rss_mib(), "received": received, "applied": counts.applied,
            "published": sum(counts.published.values()), "writes": self.sink.writes,
            "published_by": dict(counts.published), "publish_failures": counts.publish_failures,
            "uncoalesced_writes": self.sink.uncoalesced_writes,
            "recomputed": self.agent.reconciler.book.recomputed,
            "kept_lone": self.agent.reconciler.book.kept_lone, "imports": len(self.sink.views),
            "lease_lapses": self.agent.lease_lapses,
            "exports_known": len(self.agent.beliefs.live_exports()),
            "inbound_pending": self.agent.intake.pending,
            "loop_lag_max_s": round(lag, 3),
            "paced_lateness_s": round(paced_lateness, 3), "paced_gap_s": round(paced_gap, 3),
        }  # fmt: skip

    def short_by_exporter(self) -> dict[str, int]:
        """For a run that did not converge: per exporting cluster, how many of the imports it
        should back this agent holds no weight of (cheap enough once, at the deadline)."""
        held = Counter(c for v in self.sink.views.values() for c in v.weights)
        wanted = Counter(c for c in self.layout.clusters for _ in self.layout.exported_by(c))
        return {c: n - held[c] for c, n in wanted.items() if n > held[c]}

    async def _say_intake(self, wid: str) -> None:
        """For a run that did not converge: this agent's consumer in its inbound stream, and per
        exporter it falls short of, the sequence of the newest export set the stream holds from
        it and of the one this agent applied (None: none)."""
        bus = self.agent.bus
        assert isinstance(bus, NatsBus)
        inbound = bus.address.inbound
        out: dict[str, Any] = {"event": "intake", "id": wid}
        short = sorted(self.short_by_exporter())[:10]
        beliefs = self.agent.beliefs
        # Local first (the driver waits 30 s for the answer; JetStream is slow at the deadline).
        out["sets_applied"] = {c: beliefs.export_set_sequence(c) for c in short}
        try:
            async with asyncio.timeout(20):
                info = await bus.js.consumer_info(inbound, consumer_name(self.cluster))
                out |= {
                    "num_pending": info.num_pending, "num_ack_pending": info.num_ack_pending,
                    "delivered": info.delivered.stream_seq,
                    "ack_floor": info.ack_floor.stream_seq,
                }  # fmt: skip
                sets: dict[str, Any] = {}
                out["sets_in_stream"] = sets
                for c in short[:3]:
                    subject = messages.export_set_subject(bus.address.clusterset, c)
                    raw = await bus.js.get_last_msg(inbound, subject)
                    sets[c] = (raw.seq, messages.sequence_of(messages.decode(raw.data or b"")))
        except Exception as exc:
            out["error"] = repr(exc)[:200]
        self.say(out)

    async def _say_when_ready(self) -> None:
        """When the agent's start-up (streams, consumer, catch-up) is over."""
        await self.agent.ready.wait()
        self.say({"event": "ready", "at": time.time(), "steps": self.agent.startup_s})

    async def serve(self) -> None:
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.say({"event": "loaded"})
        task: asyncio.Task[None] | None = None
        ready: asyncio.Task[None] | None = None
        lag = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        asks: set[asyncio.Task[None]] = set()  # answers that need the bus
        try:
            while line := await reader.readline():
                cmd = orjson.loads(line)
                if cmd["cmd"] == "go" and task is None:
                    self._next_profile()
                    task = asyncio.create_task(self.agent.run(), name=f"agent-{self.cluster}")
                    ready = asyncio.create_task(self._say_when_ready())
                elif cmd["cmd"] == "watch":
                    self.watches[cmd["id"]] = (cmd["kind"], frozenset(cmd["clusters"]))
                    self._check_watches()
                elif cmd["cmd"] == "stats":
                    self.say(self.stats(cmd["id"]))
                elif cmd["cmd"] == "why":
                    why = self.why_not_restored(frozenset(cmd["clusters"]))
                    self.say({"event": "why", "id": cmd["id"], **why})
                elif cmd["cmd"] == "tasks":
                    self.say({"event": "tasks", "id": cmd["id"], "waiting_in": _waiting_in()})
                elif cmd["cmd"] == "short":
                    self.say({"event": "short", "id": cmd["id"], "by": self.short_by_exporter()})
                elif cmd["cmd"] == "intake":
                    asked = asyncio.create_task(self._say_intake(cmd["id"]))
                    asks.add(asked)
                    asked.add_done_callback(asks.discard)
                if task is not None and task.done():
                    task.result()  # an agent that stopped by itself is a failed run
        finally:  # stdin closed: the driver is done with us
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag
            if ready is not None:
                ready.cancel()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _waiting_in() -> dict[str, str]:
    """Where each of this process's tasks waits: the innermost frame of its await chain, after
    the innermost of our own (is a member that publishes nothing stuck in one await, or merely
    late? ``wait_for`` alone would not say whose)."""
    where = {}
    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        frames = []
        while coro is not None and getattr(coro, "cr_frame", None) is not None:
            frames.append(coro.cr_frame)
            coro = coro.cr_await
        ours = [f for f in frames if f"{os.sep}federation{os.sep}" in f.f_code.co_filename]
        shown = ours[-1:] + frames[-1:]
        if shown:
            text = [f"{Path(f.f_code.co_filename).name}:{f.f_lineno} {f.f_code.co_name}"
                    for f in dict.fromkeys(shown)]  # fmt: skip
            where[task.get_name()] = " > ".join(text)
    return dict(sorted(where.items()))


def main() -> None:
    spec = orjson.loads(sys.argv[1])
    child = Child(spec)
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir and spec["cluster"] == spec["clusters"][0]:
        child.profile_to = Path(profile_dir)
    asyncio.run(child.serve())


if __name__ == "__main__":
    main()
