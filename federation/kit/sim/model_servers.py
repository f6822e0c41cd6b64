"""Simulated model servers: each pool a finite capacity behind one real HTTP endpoint per cluster.

A pool has ``pods * slots_per_pod`` slots; a request holds a slot for its service time, waits
in a queue of at most ``queue_limit`` when all are busy, and is refused with 429 beyond that
(what an EPP's flow control answers when it sheds). Every answer names the cluster that served
it (``X-Served-By``). The pool's EPP metrics are computed from this real state (ready pods,
running and queued requests per pod, slot utilization as KV-cache utilization), so the weights
the agents compute react to the traffic that actually arrives — including what peers spill in.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from federation.adapters.http_serving import start_http
from federation.model.haproxy_config import HOP_HEADER
from federation.model.loads import LoadSample
from federation.model.pools import PoolKey

SERVED_BY = "X-Served-By"


@dataclass(frozen=True, kw_only=True)
class Capacity:
    pods: int = 4
    slots_per_pod: int = 2
    service_time: float = 0.5  # seconds, mean (±20 % uniform jitter)
    queue_limit: int = 8

    @property
    def slots(self) -> int:
        return self.pods * self.slots_per_pod

    @property
    def rate(self) -> float:
        """Requests per second it can serve when busy."""
        return self.slots / self.service_time


@dataclass
class PoolServer:
    cluster: str
    key: PoolKey
    capacity: Capacity
    running: int = 0
    waiting: int = 0
    served: Counter[str] = field(default_factory=Counter)  # by the hop header: origin cluster
    refused: int = 0
    arrived: int = 0  # the EPP's request counter (refused ones included)
    completed: int = 0  # the EPP's completion counter
    max_hops: int = 0  # the most X-Federation-Hop values one request carried
    _slots: asyncio.Semaphore | None = None

    def sample(self) -> LoadSample:
        c = self.capacity
        return LoadSample(
            observed_at=time.time(),
            ready_pods=c.pods,
            kv_cache_utilization=round(min(1.0, self.running / c.slots), 3),
            queue_size=round(self.waiting / c.pods, 3),
            running_requests=round(self.running / c.pods, 3),
            saturation=round(min(1.0, self.running / c.slots), 3),
            requests_total=float(self.arrived),
            completions_total=float(self.completed),
        )

    async def serve(self, request: web.Request, rng: random.Random) -> web.Response:
        hops = request.headers.getall(HOP_HEADER, [])
        self.arrived += 1
        self.max_hops = max(self.max_hops, len(hops))
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.capacity.slots)
        if self.running >= self.capacity.slots and self.waiting >= self.capacity.queue_limit:
            self.refused += 1
            return web.Response(status=429, text="pool full\n", headers={SERVED_BY: self.cluster})
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            # The simulated inference itself, not a wait for a condition.
            await asyncio.sleep(self.capacity.service_time * rng.uniform(0.8, 1.2))
        finally:
            self.running -= 1
            self._slots.release()
        self.served[hops[0] if hops else self.cluster] += 1
        self.completed += 1
        return web.Response(text="ok\n", headers={SERVED_BY: self.cluster})


class ModelServers:
    """One cluster's model servers: ``/<namespace>/<pool>/...`` on one loopback port."""

    def __init__(self, cluster: str, pools: dict[PoolKey, Capacity], seed: int = 0) -> None:
        self.cluster = cluster
        self.pools = {k: PoolServer(cluster, k, c) for k, c in pools.items()}
        self.rng = random.Random(seed)
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        key = PoolKey(request.match_info["namespace"], request.match_info["name"])
        pool = self.pools.get(key)
        if pool is None:
            return web.Response(status=404, text="no such pool here\n")
        return await pool.serve(request, self.rng)

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{namespace}/{name}/{tail:.*}", self._handle)
        self._runner, self.port = await start_http(app, "127.0.0.1", port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
