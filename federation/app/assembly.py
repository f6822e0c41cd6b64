"""The one assembly of an agent: settings plus injected parts → the agent and everything around it.

The production process (``app.process``), the demo and every benchmark build their agents here,
so they cannot drift apart: the same bus, the same feeds in the same order (the gateways' fast
feeds first, Kubernetes writes last), the same metrics and HTTP port. What differs between them
is injected through :class:`AgentParts`: where pools and load come from (informers and the EPP
scraper in production, simulations elsewhere), the Kubernetes client, extra feeds and services,
the signer and verifier, the tracer and the clock.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from opentelemetry import trace

from federation.adapters.agent_http import AgentHttp, WeightsBoard
from federation.adapters.bus import BusAddress, NatsBus
from federation.adapters.haproxy import HAProxyFeed, HAProxyRuntime
from federation.adapters.kube import Kube
from federation.adapters.kube_cluster import KubeCluster
from federation.adapters.kube_gateway_api import GatewayApiFeed
from federation.adapters.metrics import AgentMetrics
from federation.runtime.agent import Agent
from federation.runtime.ports import (
    Bus,
    ImportSink,
    LoadSource,
    PoolSource,
    Service,
    Signer,
    Verifier,
)
from federation.settings import Settings


def nats_bus(settings: Settings, connect_options: Mapping[str, object] | None = None) -> NatsBus:
    """The agent's bus for ``settings``."""
    return NatsBus(
        BusAddress(
            url=settings.nats_url,
            clusterset=settings.clusterset,
            cluster=settings.cluster,
            placement_cluster=settings.placement_cluster,
            members=settings.members,
            history_per_subject=settings.history_per_subject,
            request_timeout=settings.request_timeout,
            shared_inbound=settings.shared_inbound,
        ),
        connect_options=connect_options,
    )


@dataclass(frozen=True, kw_only=True)
class HttpPort:
    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (tests, the demo)


@dataclass(frozen=True, kw_only=True)
class AgentParts:
    """What the surroundings give an agent.

    ``kube`` is the cluster's API client: with it the agent watches pools through informers
    (unless ``pools`` is given), writes InferencePoolImports and the pools' ``Exported`` status.
    ``loads`` reads each pool's EPP. ``extra_feeds`` run after the gateway feeds and before the
    Kubernetes writes.
    """

    loads: LoadSource
    kube: Kube | None = None
    pools: PoolSource | None = None
    namespaces: tuple[str, ...] = ()  # informers' namespaces; empty: all
    bus: Bus | None = None  # default: this cluster's NATS, from the settings
    connect_options: Mapping[str, object] = field(default_factory=dict)
    extra_feeds: Mapping[str, ImportSink] = field(default_factory=dict)
    services: Mapping[str, Service] = field(default_factory=dict)
    signer: Signer | None = None
    verifier: Verifier | None = None
    tracer: trace.Tracer | None = None
    wall: Callable[[], float] = time.time
    http: HttpPort | None = None  # None: no HTTP port (benchmarks)
    lag_observers: tuple[Callable[[str, float], None], ...] = ()  # (peer, seconds), beside metrics
    insecure: bool = False  # no signed events or no protected login: said in status and metrics


@dataclass
class Assembly:
    """An agent and what was built around it; :meth:`start_http` then ``agent.run()``."""

    agent: Agent
    metrics: AgentMetrics
    weights: WeightsBoard
    http: AgentHttp | None
    kube: KubeCluster | None
    feeds: dict[str, ImportSink]

    async def start_http(self) -> None:
        if self.http is not None:
            await self.http.start()

    async def close(self) -> None:
        """Release the HTTP port and the clients (after the agent's task has stopped)."""
        if self.http is not None:
            with contextlib.suppress(Exception):
                await self.http.stop()
        if self.kube is not None:
            with contextlib.suppress(Exception):
                await self.kube.close()


@dataclass
class GatewayFeeds:
    """The gateway feeds the settings ask for, fastest first."""

    sinks: dict[str, ImportSink]
    services: dict[str, Service]  # the feeds that run a server beside the agent's tasks
    counts: dict[str, Counter[str]]  # the feeds that count their operations


def gateway_feeds(settings: Settings, weights: WeightsBoard) -> GatewayFeeds:
    """The gateway feeds the settings ask for. Envoy's are imported only when asked for: gRPC and
    Envoy's protos are 10 MiB of an agent's memory (BENCHMARKS.md, session 24)."""
    f = settings.feeds
    found = GatewayFeeds({"http": weights}, {}, {})
    if f.haproxy_socket is not None:
        found.sinks["haproxy"] = HAProxyFeed(
            HAProxyRuntime(f.haproxy_socket, timeout=settings.request_timeout),
            backend_rule=f.haproxy_backend,
            drain=f.haproxy_drain,
            members=settings.members,
        )
    if f.xds_port is not None:
        from federation.adapters.xds_server import XdsServer

        xds = XdsServer(
            f.xds_host,
            f.xds_port,
            "endpoint" if f.envoy_mode == "endpoint" else "parent",
            cert=f.xds_cert,
            key=f.xds_key,
            client_ca=f.xds_client_ca,
        )
        found.sinks["xds"] = found.services["xds"] = xds  # its gRPC server runs beside the agent
        found.counts["xds"] = xds.counts
    if f.envoy_eds_dir is not None:
        from federation.adapters.envoy_eds import EnvoyEdsFeed

        found.sinks["envoy-eds"] = EnvoyEdsFeed(
            f.envoy_eds_dir, "endpoint" if f.envoy_mode == "endpoint" else "parent"
        )
    return found


def build_agent(settings: Settings, parts: AgentParts) -> Assembly:
    kube = None
    if parts.kube is not None:
        kube = KubeCluster(
            parts.kube,
            controller=settings.controller_name,
            namespaces=parts.namespaces or None,
            backoff=settings.backoff,
            wall=parts.wall,
            annotation_interval=settings.feeds.annotation_interval,
            annotation_threshold=settings.feeds.annotation_threshold,
        )
    pools = parts.pools or kube
    if pools is None:
        raise ValueError("an agent needs a pool source: a Kubernetes client or `pools`")
    weights = WeightsBoard(settings.cluster)
    gateways = gateway_feeds(settings, weights)
    if clash := gateways.sinks.keys() & parts.extra_feeds.keys():
        raise ValueError(f"extra feeds named as the settings' gateway feeds: {sorted(clash)}")
    feeds = gateways.sinks | dict(parts.extra_feeds)
    services = dict(parts.services) | gateways.services
    counts = dict(gateways.counts)
    if kube is not None:
        feeds["kubernetes"] = kube  # last: API writes must not delay the gateways
        services["kube"] = kube
        if settings.feeds.gateway_api:  # after the imports: its objects are owned by them
            gateway_api = GatewayApiFeed(
                kube,
                own_cluster=settings.cluster,
                controller=settings.controller_name,
                namespaces=parts.namespaces or None,
                backoff=settings.backoff,
            )
            feeds["gateway-api"] = gateway_api
            services["gateway-api"] = gateway_api
            counts["gateway-api"] = gateway_api.counts
    metrics = AgentMetrics(parts.wall, kube=kube, max_clock_offset=settings.max_clock_offset)
    agent = Agent(
        settings,
        bus=parts.bus or nats_bus(settings, parts.connect_options),
        pools=pools,
        loads=parts.loads,
        feeds=feeds,
        export_status=kube,
        services=services,
        signer=parts.signer,
        verifier=parts.verifier,
        wall=parts.wall,
        tracer=parts.tracer,
        lag_observers=(metrics.observe_lag, *parts.lag_observers),
        insecure=parts.insecure,
        # HAProxy counts what local clients ask of each import backend: the plan's demand.
        demand=haproxy if isinstance(haproxy := feeds.get("haproxy"), HAProxyFeed) else None,
    )
    metrics.watch(agent)
    metrics.count_feeds(counts)
    http = None
    if parts.http is not None:
        http = AgentHttp(
            weights,
            parts.http.host,
            parts.http.port,
            metrics=metrics.render,
            status=agent.status,
            ready=agent.ready.is_set,
        )
    return Assembly(agent, metrics, weights, http, kube, feeds)
