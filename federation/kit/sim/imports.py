"""An in-memory ImportSink: the imports a simulated cluster holds, for the demo and tests."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from federation.model.pools import PoolKey
from federation.model.views import ImportView


class MemoryImports:
    def __init__(self) -> None:
        self.views: dict[PoolKey, ImportView] = {}
        self.applied = asyncio.Event()

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        self.views = dict(views)
        self.applied.set()
