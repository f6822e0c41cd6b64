"""In-memory pool and load sources for agents without Kubernetes or EPPs (fast tests, the scale
benchmark): pools a test can change, loads it can set per pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping

from federation.model.loads import LoadSample
from federation.model.pools import LocalPool, PoolKey


class MemoryPools:
    """A PoolSource: the full set at start and after every :meth:`put` or :meth:`remove`."""

    def __init__(self, pools: Mapping[PoolKey, LocalPool] | None = None) -> None:
        self.pools = dict(pools or {})
        self._changed = asyncio.Event()

    def put(self, pool: LocalPool) -> None:
        self.pools[pool.key] = pool
        self._changed.set()

    def remove(self, key: PoolKey) -> None:
        self.pools.pop(key, None)
        self._changed.set()

    async def watch(self) -> AsyncIterator[Mapping[PoolKey, LocalPool]]:
        while True:
            self._changed.clear()
            yield dict(self.pools)
            await self._changed.wait()


class MemoryLoads:
    """A LoadSource: each pool's sample as set (default: 4 ready pods at 30 %)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self.samples: dict[PoolKey, LoadSample] = {}
        self.wall = wall  # the agent's clock: samples are stamped as its EPP scraper would

    def set(self, key: PoolKey, *, ready_pods: int = 4, saturation: float = 0.3,
            status: str = "ok") -> None:  # fmt: skip
        self.samples[key] = LoadSample(
            observed_at=0.0, ready_pods=ready_pods, kv_cache_utilization=saturation,
            saturation=saturation, epp_status=status,
        )  # fmt: skip

    async def sample(self, pool: LocalPool) -> LoadSample:
        base = self.samples.get(pool.key) or LoadSample(
            observed_at=0.0, ready_pods=4, kv_cache_utilization=0.3, saturation=0.3
        )
        return LoadSample(
            observed_at=self.wall(), ready_pods=base.ready_pods,
            kv_cache_utilization=base.kv_cache_utilization, queue_size=base.queue_size,
            running_requests=base.running_requests, saturation=base.saturation,
            epp_status=base.epp_status,
        )  # fmt: skip
