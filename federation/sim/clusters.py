"""A simulated cluster's InferencePools: an in-memory PoolSource the demo and tests can edit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

from federation.model.pools import LocalPool, PoolKey


class SimPools:
    """Holds pools and yields the full set to a watcher after every change."""

    def __init__(self, pools: Iterable[LocalPool] = ()) -> None:
        self._pools = {p.key: p for p in pools}
        self._version = 0
        self._changed = asyncio.Condition()

    def snapshot(self) -> dict[PoolKey, LocalPool]:
        return dict(self._pools)

    async def put(self, pool: LocalPool) -> None:
        self._pools[pool.key] = pool
        await self._bump()

    async def remove(self, key: PoolKey) -> None:
        self._pools.pop(key, None)
        await self._bump()

    async def _bump(self) -> None:
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def watch(self) -> AsyncIterator[Mapping[PoolKey, LocalPool]]:
        seen = -1
        while True:
            async with self._changed:
                while self._version == seen:
                    await self._changed.wait()
                seen = self._version
                snapshot = self.snapshot()
            yield snapshot
