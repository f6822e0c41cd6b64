"""Simulated load: each pool's saturation follows a slow wave, with per-pool phase and size.

Deterministic from the pool's identity and the time since start, so runs are comparable. A test
or the demo can pin a pool's load with :meth:`SimLoad.override`.
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib

from federation.model.loads import LoadSample
from federation.model.pools import LocalPool, PoolKey


class SimLoad:
    def __init__(self, cluster: str, period: float = 40.0) -> None:
        self.cluster = cluster
        self.period = period
        self._t0 = asyncio.get_running_loop().time()
        self._overrides: dict[PoolKey, LoadSample] = {}

    def override(self, key: PoolKey, sample: LoadSample | None) -> None:
        if sample is None:
            self._overrides.pop(key, None)
        else:
            self._overrides[key] = sample

    async def sample(self, pool: LocalPool) -> LoadSample:
        now = time.time()
        pinned = self._overrides.get(pool.key)
        if pinned is not None:
            return LoadSample(**{**pinned.__dict__, "observed_at": now})
        seed = zlib.crc32(f"{self.cluster}/{pool.key}".encode())
        phase = (seed % 628) / 100
        pods = 2 + seed % 7
        elapsed = asyncio.get_running_loop().time() - self._t0
        saturation = 0.5 + 0.4 * math.sin(2 * math.pi * elapsed / self.period + phase)
        return LoadSample(
            observed_at=now,
            ready_pods=pods,
            kv_cache_utilization=round(saturation, 3),
            queue_size=round(max(0.0, saturation - 0.6) * 20, 2),
            running_requests=round(saturation * 16, 2),
            saturation=round(saturation, 3),
        )
