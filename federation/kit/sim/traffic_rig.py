"""One simulated cluster's traffic: its model servers, its HAProxy gateway and its clients."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from federation.kit.nats_servers import free_port
from federation.kit.sim.gateways import HAProxyGateway
from federation.kit.sim.layouts import NAMESPACE
from federation.kit.sim.loads import LoadModel
from federation.kit.sim.model_servers import Capacity, ModelServers
from federation.kit.sim.traffic import Burst, Generator, Traffic, here_backend
from federation.model.pools import LocalPool, PoolKey, is_exported
from federation.runtime.stopping import stop_task

TRAFFIC_POOL = PoolKey(NAMESPACE, "llama-3-70b")  # every cluster has it; two export it
STOP_TIMEOUT = 10.0


@dataclass(frozen=True, kw_only=True)
class TrafficOptions:
    """Real requests: an HAProxy per cluster, model servers with finite capacity, clients."""

    pool: PoolKey = TRAFFIC_POOL
    rate: float = 8.0  # requests per second per cluster (half of a pool's capacity)
    rates: Mapping[str, float] = field(default_factory=dict)  # per cluster, instead of rate
    capacity: Capacity = field(default_factory=Capacity)
    slo: float = 1.0  # seconds: an answer later than this misses the SLO
    burst: Burst | None = None
    drain: float = 5.0  # the HAProxy feed's drain time (production default 30 s)


class TrafficRig:
    def __init__(self, cluster: str, options: TrafficOptions) -> None:
        self.cluster = cluster
        self.options = options
        self.servers: ModelServers | None = None
        self.gateway: HAProxyGateway | None = None
        self.traffic: Traffic | None = None
        self.clients: Generator | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(
        self, load: LoadModel, local: list[LocalPool], imports: list[PoolKey], directory: Path
    ) -> int:
        """Model servers (whose state the EPP reports) and HAProxy; returns the Gateway's port."""
        t = self.options
        self.servers = ModelServers(self.cluster, {p.key: t.capacity for p in local})
        await self.servers.start()
        for pool in self.servers.pools.values():
            load.follow(pool.key, pool.sample)
        gateway_port = free_port()
        self.gateway = HAProxyGateway(
            self.cluster, directory, gateway_port=gateway_port, entry_port=free_port(),
            local_pools=[p.key for p in local], imports=imports,
            model_servers_port=self.servers.port,
        )  # fmt: skip
        await self.gateway.start()
        exported_here = any(p.key == t.pool and is_exported(p) for p in local)
        here = here_backend(self.cluster, exported_here)
        self.traffic = Traffic(self.cluster, t.pool, here, slo=t.slo)
        return gateway_port

    def start_clients(self, started: float) -> None:
        """Requests to this cluster's HAProxy; timelines count from ``started``."""
        t = self.options
        if self.gateway is None or self.traffic is None:
            return
        url = f"{self.gateway.entry_url}/{t.pool.namespace}/{t.pool.name}/v1/completions"
        self.clients = Generator(
            self.traffic, url, rate=t.rates.get(self.cluster, t.rate), started=started,
            burst=t.burst, seed=zlib.crc32(self.cluster.encode()),
        )  # fmt: skip
        self._task = asyncio.create_task(self.clients.run(), name=f"traffic-{self.cluster}")

    async def stop(self) -> None:
        """The cluster died (or the demo ends): its clients, gateway and servers with it."""
        if self._task is not None:
            await stop_task(self._task, within=STOP_TIMEOUT)
            self._task = None
        if self.gateway is not None:
            await self.gateway.stop()
        if self.servers is not None:
            await self.servers.stop()

    async def revive(self, started: float) -> None:
        if self.servers is None or self.gateway is None:
            return
        await self.servers.start(self.servers.port)
        await self.gateway.start()
        self.start_clients(started)
