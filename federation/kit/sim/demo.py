"""The embedded demo: N simulated clusters federating over a real NATS supercluster.

Each simulated cluster gets its own nats-server (one NATS cluster per Kubernetes cluster, joined
by gateways), its own emulated Kubernetes API server on loopback holding its InferencePools and
EPP Services, simulated EPP load, and its own production :class:`~federation.runtime.agent.Agent`
connected only to that server and that API, through the same kube adapter as in production. Only
the API server (an emulator: none can be installed here) and the EPPs are simulated; the bus path
and the Kubernetes client path are the real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from federation.adapters.epp import EppScraper
from federation.adapters.kube import Kube, url_client
from federation.adapters.kube_cluster import KubeCluster
from federation.adapters.tracing import TracerProvider, setup_tracing
from federation.app.assembly import AgentParts, Assembly, HttpPort, build_agent
from federation.app.replay import DEMO_MANIFEST
from federation.kit.kube_emulator import EmulatedApiServer
from federation.kit.kube_kinds import (
    IMPORT_KIND,
    POOL_KIND,
    ROUTE_KIND,
    SERVICE_KIND,
    SLICE_KIND,
    new_emulator,
)
from federation.kit.nats_servers import Supercluster, free_port
from federation.kit.sim.epp import SimEpp
from federation.kit.sim.gateways import HAProxyGateway
from federation.kit.sim.imports import MemoryImports
from federation.kit.sim.kube_pools import EmulatedPools
from federation.kit.sim.layouts import NAMESPACE, cluster_names, demo_layout, expected_imports
from federation.kit.sim.loads import LoadModel
from federation.kit.sim.model_servers import ModelServers
from federation.kit.sim.security import SECURITY_REASONS, Security
from federation.kit.sim.traffic import Generator, Traffic
from federation.kit.sim.traffic_rig import TrafficOptions, TrafficRig
from federation.model.pools import PoolKey, is_exported
from federation.model.status_objects import DEFAULT_CONTROLLER
from federation.model.views import imports_document
from federation.runtime.agent import Agent
from federation.runtime.stopping import stop_task
from federation.settings import FeedSettings, Settings

STOP_TIMEOUT = 10.0
MANIFEST = DEMO_MANIFEST  # in --data-dir: the demo's clusterset, members and timers
CONVERGENCE_POLL = 0.02  # seconds between convergence checks; the figure's resolution


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    clusters: int = 3
    pools: int = 4
    clusterset: str = "demo"
    data_dir: Path | None = None  # keep the JetStream stores here (default: a temp dir)
    load_interval: float = 1.0
    beat_interval: float = 1.0
    lease: float = 10.0
    grace: float = 60.0  # shortened from the production 5 min so a dead peer leaves in-demo
    slow_start: float = 10.0  # shortened from the production 30 s so recovery is visible
    trace_file: Path | None = None  # finished spans as JSON lines
    # Events kept per subject. With --data-dir the demo keeps enough for `federation replay` to
    # rebuild any moment of the run (production keeps 8; raise it there for the same purpose).
    history_per_subject: int | None = None
    secure: bool = False  # per-cluster NATS users with least privilege, signed events
    traffic: TrafficOptions | None = None
    # Clusters whose agent and EPP scraper run on a clock this many seconds off (chaos).
    skews: Mapping[str, float] = field(default_factory=dict)
    # Clusters whose agent sends one load report per pool, as agents before digests (mixed fleets).
    per_pool_loads: frozenset[str] = frozenset()
    per_pool_exports: frozenset[str] = frozenset()  # clusters whose agents send no export sets
    weights_mode: str = "capacity"  # or a fixed baseline: "static", "local-only"

    @property
    def history(self) -> int:
        if self.history_per_subject is not None:
            return self.history_per_subject
        return 10_000 if self.data_dir is not None else 8


@dataclass
class SimApi:
    """Where a simulated cluster's agent serves HTTP: any free port at its first start (bound
    at once, so no other server can take it meanwhile), the same one after a restart."""

    host: str
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Where gateways poll the weights."""
        return f"{self.base_url}/v1/weights"


@dataclass
class SimCluster:
    name: str
    apiserver: EmulatedApiServer
    pools: EmulatedPools
    load: LoadModel
    epp: SimEpp
    scraper: EppScraper
    imports: MemoryImports  # the same views the kube adapter writes, kept for the snapshot
    api: SimApi
    built: Assembly | None = None
    task: asyncio.Task[None] | None = None
    rig: TrafficRig | None = None  # with traffic: its model servers, HAProxy and clients

    @property
    def gateway(self) -> HAProxyGateway | None:
        return self.rig.gateway if self.rig else None

    @property
    def traffic(self) -> Traffic | None:
        return self.rig.traffic if self.rig else None

    @property
    def servers(self) -> ModelServers | None:
        return self.rig.servers if self.rig else None

    @property
    def clients(self) -> Generator | None:
        return self.rig.clients if self.rig else None

    @property
    def agent(self) -> Agent | None:
        return self.built.agent if self.built else None

    @property
    def kube(self) -> KubeCluster | None:
        return self.built.kube if self.built else None

    def kube_imports(self) -> dict[PoolKey, tuple[str, ...]]:
        """Each InferencePoolImport in the API and the exporting clusters our entry lists."""
        out = {}
        for obj in self.apiserver.emulator.objects(IMPORT_KIND.plural):
            for entry in (obj.get("status") or {}).get("controllers") or []:
                if entry.get("name") == DEFAULT_CONTROLLER:
                    key = PoolKey(obj["metadata"]["namespace"], obj["metadata"]["name"])
                    out[key] = tuple(c["name"] for c in entry.get("exportingClusters") or [])
        return out


@dataclass
class Demo:
    options: DemoOptions
    supercluster: Supercluster
    clusters: dict[str, SimCluster] = field(default_factory=dict)
    bus_ready_after_s: float | None = None
    agents_started_at: float | None = None
    converged_after_s: float | None = None
    _owned_dir: Path | None = None

    _owns_supercluster: bool = True
    _tracing: TracerProvider | None = None
    _traffic_dir: Path | None = None  # the HAProxies' configs, sockets and logs
    security: Security | None = None
    # Benchmarks' taps on every agent's propagation lag: (cluster, peer, seconds).
    lag_taps: list[Callable[[str, str, float], None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        options: DemoOptions,
        supercluster: Supercluster | None = None,
        security: Security | None = None,
    ) -> Demo:
        """Start a supercluster (or reuse a running one, e.g. a test's) and build the clusters.

        With ``options.secure``, a reused supercluster must have been started with
        ``security.server_config()``, and ``security`` must be given.
        """
        names = cluster_names(options.clusters)
        if options.secure and supercluster is not None and security is None:
            raise ValueError("a secure demo on a given supercluster needs its Security")
        if supercluster is not None:
            if list(supercluster.specs)[: len(names)] != names:
                raise ValueError(f"supercluster has {list(supercluster.specs)}, need {names}")
            demo = cls(options, supercluster, _owns_supercluster=False, security=security)
        else:
            owned = None
            base = options.data_dir
            if base is None:
                owned = base = Path(tempfile.mkdtemp(prefix="federation-demo-"))
            base.mkdir(parents=True, exist_ok=True)
            if options.secure and security is None:
                security = Security.create(options.clusterset, names, base / "security")
            extra = security.server_config() if security is not None else ""
            demo = cls(
                options, Supercluster(names, base, extra), _owned_dir=owned, security=security
            )
            try:
                demo.bus_ready_after_s = await demo.supercluster.start()
            except BaseException:
                demo.close()
                raise
        if options.trace_file is not None:
            demo._tracing = setup_tracing("federation-demo", options.trace_file, install=False)
        if options.data_dir is not None:  # what `federation replay --data-dir` needs to know
            (options.data_dir / MANIFEST).write_text(json.dumps(demo.manifest(), indent=2) + "\n")
        layout = demo_layout(names, options.pools)
        truth = expected_imports(layout)
        try:
            for i, name in enumerate(names):
                load = LoadModel(name)
                epp = SimEpp(load, llm_d=i % 2 == 1)
                await epp.start()
                apiserver = EmulatedApiServer(new_emulator((NAMESPACE,)))
                await apiserver.start()
                pools = EmulatedPools(apiserver.emulator, i)
                api = SimApi("127.0.0.1")
                scraper = EppScraper(wall=skewed_clock(options.skews.get(name, 0.0)))
                sim = SimCluster(name, apiserver, pools, load, epp, scraper, MemoryImports(), api)
                demo.clusters[name] = sim
                # Every pool has a parent (east-west) Gateway on loopback (Parent mode has real
                # addresses), every import a route marked for weights on the client-facing one;
                # only --traffic listens on them (HAProxy's two frontends).
                gateway_port, client_port = free_port(), free_port()
                if options.traffic is not None:
                    if demo._traffic_dir is None:
                        demo._traffic_dir = Path(tempfile.mkdtemp(prefix="federation-traffic-"))
                    sim.rig = TrafficRig(name, options.traffic)
                    gateway_port = await sim.rig.start(
                        load, layout[name], list(truth[name]), demo._traffic_dir / name
                    )
                    assert sim.rig.gateway is not None
                    client_port = sim.rig.gateway.entry_port
                for pool in layout[name]:
                    await pools.put(
                        dataclasses.replace(pool, metrics_url=epp.url(pool.key)), gateway_port
                    )
                for key in truth[name]:
                    await pools.put_route(key, client_port)
        except BaseException:
            await demo.stop()
            raise
        return demo

    def manifest(self) -> dict[str, Any]:
        o = self.options
        return {
            "clusterset": o.clusterset,
            "members": list(self.supercluster.specs)[: o.clusters],
            "lease": o.lease,
            "grace": o.grace,
            "slow_start": o.slow_start,
            "weights_mode": o.weights_mode,
            "overflow_ratio": Settings.overflow_ratio,  # the demo's agents run the default
        }

    def settings_for(self, cluster: str) -> Settings:
        o = self.options
        gateway = self.clusters[cluster].gateway
        feeds = FeedSettings()
        if gateway is not None and o.traffic is not None:
            feeds = FeedSettings(haproxy_socket=str(gateway.socket), haproxy_drain=o.traffic.drain)
        return Settings(
            feeds=feeds,
            clusterset=o.clusterset,
            cluster=cluster,
            members=tuple(self.clusters),
            nats_url=self.supercluster.url(cluster),
            load_interval=o.load_interval,
            beat_interval=o.beat_interval,
            lease=o.lease,
            grace=o.grace,
            slow_start=o.slow_start,
            history_per_subject=o.history,
            load_messages="per-pool" if cluster in o.per_pool_loads else "digest",
            export_messages="per-pool" if cluster in o.per_pool_exports else "set",
            weights_mode=o.weights_mode,
        )

    def parts_for(self, cluster: str) -> AgentParts:
        sim = self.clusters[cluster]
        security = self.security
        return AgentParts(
            kube=Kube(url_client(sim.apiserver.url)),
            loads=sim.scraper,
            connect_options=security.login(cluster) if security else {},
            extra_feeds={"snapshot": sim.imports},
            services={"tls-reload": security.tls(cluster)} if security else {},
            signer=security.signer(cluster) if security else None,
            verifier=security.verifier() if security else None,
            tracer=self._tracing.get_tracer("federation") if self._tracing else None,
            http=HttpPort(host=sim.api.host, port=sim.api.port),
            wall=skewed_clock(self.options.skews.get(cluster, 0.0)),
            insecure=security is None,  # a sandbox on loopback unless --secure
            lag_observers=tuple(partial(tap, cluster) for tap in self.lag_taps),
        )

    async def start_agent(self, cluster: str) -> None:
        sim = self.clusters[cluster]
        sim.built = build_agent(self.settings_for(cluster), self.parts_for(cluster))
        await sim.built.start_http()
        assert sim.built.http is not None
        sim.api.port = sim.built.http.port
        sim.task = asyncio.create_task(sim.built.agent.run(), name=f"agent-{cluster}")

    async def start_agents(self) -> None:
        self.agents_started_at = time.monotonic()
        for cluster in self.clusters:
            await self.start_agent(cluster)
        for sim in self.clusters.values():
            if sim.rig is not None:
                sim.rig.start_clients(self.agents_started_at)

    async def stop_agent(self, cluster: str) -> None:
        task = self.clusters[cluster].task
        if task is None:
            return
        if not await stop_task(task, within=STOP_TIMEOUT):
            raise RuntimeError(f"agent {cluster} did not stop within {STOP_TIMEOUT}s")
        self.clusters[cluster].task = None
        built = self.clusters[cluster].built
        if built is not None:
            await built.close()

    async def kill(self, cluster: str) -> None:
        """Chaos: SIGKILL the cluster's nats-server and stop its agent, as if the cluster died."""
        await self.stop_agent(cluster)
        rig = self.clusters[cluster].rig
        if rig is not None:
            await rig.stop()
        self.supercluster.kill_server(cluster)

    async def revive(self, cluster: str) -> None:
        """Bring a killed cluster back: its server on the same ports and store, then its agent."""
        self.supercluster.start_server(cluster)
        await self.supercluster.wait_ready([cluster])
        rig = self.clusters[cluster].rig
        if rig is not None and self.agents_started_at is not None:
            await rig.revive(self.agents_started_at)
        await self.start_agent(cluster)

    def check_agents(self) -> None:
        """Raise the error of any agent that died: a demo must not hide a crash."""
        for sim in self.clusters.values():
            if sim.task is not None and sim.task.done() and not sim.task.cancelled():
                exc = sim.task.exception()
                raise RuntimeError(f"agent {sim.name} stopped: {exc!r}") from exc

    def truth(self) -> dict[str, dict[PoolKey, tuple[tuple[str, ...], bool]]]:
        return expected_imports(
            {n: list(c.pools.snapshot().values()) for n, c in self.clusters.items()}
        )

    def converged(self) -> bool:
        """Every cluster's views *and* its InferencePoolImport objects match the truth."""
        truth = self.truth()
        for name, sim in self.clusters.items():
            held = {
                key: (view.desired.exporting_clusters, view.desired.has_local)
                for key, view in sim.imports.views.items()
            }
            if held != truth[name]:
                return False
            if sim.kube_imports() != {k: clusters for k, (clusters, _) in truth[name].items()}:
                return False
        return True

    def dump_objects(self, directory: Path) -> int:
        """Write every cluster's pools, imports, routes, Services and slices; return the count.

        ``DIR/<cluster>/<kind>/<namespace>.<name>.json``, each as the API returns it.
        """
        written = 0
        for name, sim in self.clusters.items():
            for kind in (POOL_KIND, IMPORT_KIND, ROUTE_KIND, SERVICE_KIND, SLICE_KIND):
                folder = directory / name / kind.kind
                folder.mkdir(parents=True, exist_ok=True)
                for obj in sim.apiserver.emulator.objects(kind.plural):
                    meta = obj["metadata"]
                    path = folder / f"{meta['namespace']}.{meta['name']}.json"
                    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
                    written += 1
        return written

    async def wait_converged(self, within: float) -> float | None:
        """Seconds from the agents' start until every cluster holds every import it should."""
        assert self.agents_started_at is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not self.converged():
                    self.check_agents()
                    await asyncio.sleep(CONVERGENCE_POLL)
                self.converged_after_s = time.monotonic() - self.agents_started_at
        return self.converged_after_s

    def snapshot(self) -> dict[str, Any]:
        return (
            {
                "clusterset": self.options.clusterset,
                "taken_at": round(time.time(), 3),
                "bus_ready_after_s": _round(self.bus_ready_after_s),
                "converged_after_s": _round(self.converged_after_s),
                "clusters": {name: cluster_snapshot(sim) for name, sim in self.clusters.items()},
                "events": {
                    name: (sim.agent.counts.as_dict() if sim.agent else {})
                    for name, sim in self.clusters.items()
                },
            }
            | (self.security_snapshot() if self.security is not None else {})
            | self.traffic_snapshot()
        )

    def seconds_since_start(self) -> int:
        return (
            0 if self.agents_started_at is None else int(time.monotonic() - self.agents_started_at)
        )

    def traffic_snapshot(self) -> dict[str, Any]:
        if self.options.traffic is None:
            return {}
        last = self.seconds_since_start() - 1  # whole seconds only
        return {
            "traffic": {
                name: sim.traffic.document(last)
                for name, sim in self.clusters.items()
                if sim.traffic is not None
            }
        }

    def security_snapshot(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            name: {
                "rejected": {
                    reason: n
                    for reason, n in sorted(
                        (sim.agent.counts.rejected if sim.agent else {}).items()
                    )
                    if reason in SECURITY_REASONS
                }
            }
            for name, sim in self.clusters.items()
        }
        out: dict[str, Any] = {"security": doc}
        if self.security is not None and self.security.drill:
            out["spoof_drill"] = self.security.drill
        return out

    async def stop(self) -> None:
        for cluster, sim in self.clusters.items():
            await self.stop_agent(cluster)  # first: an agent must not see its gateway vanish
            if sim.rig is not None:
                await sim.rig.stop()
            await sim.scraper.close()
            await sim.epp.stop()
            await sim.apiserver.stop()
        self.close()

    def close(self) -> None:
        if self._tracing is not None:
            self._tracing.shutdown()
        if self._owns_supercluster:
            self.supercluster.stop()
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
        if self._traffic_dir is not None:
            shutil.rmtree(self._traffic_dir, ignore_errors=True)


def skewed_clock(skew: float) -> Callable[[], float]:
    """The wall clock, ``skew`` seconds off (a cluster whose time sync broke)."""
    if not skew:
        return time.time
    return lambda: time.time() + skew


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cluster_snapshot(sim: SimCluster) -> dict[str, Any]:
    pools = sim.pools.snapshot()
    return {
        "alive": sim.task is not None and not sim.task.done(),
        "pools": sorted(str(k) for k in pools),
        "exports": sorted(str(k) for k, p in pools.items() if is_exported(p)),
        "imports": imports_document(sim.imports.views),
    }
