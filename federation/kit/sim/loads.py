"""Simulated load: each pool's saturation follows a slow wave, with per-pool phase and size.

Deterministic from the pool's identity and the time since start, so runs are comparable. A test
or the demo can pin a pool's load (:meth:`LoadModel.pin`) or make its EPP fail
(:meth:`LoadModel.fail`).
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Callable

from federation.model.loads import LoadSample
from federation.model.pools import PoolKey


@dataclasses.dataclass(frozen=True)
class EppFault:
    """How a simulated EPP misbehaves: an HTTP status, or a body instead of its metrics."""

    status: int = 200
    body: str | None = None


class LoadModel:
    def __init__(self, cluster: str, period: float = 40.0) -> None:
        self.cluster = cluster
        self.period = period
        self._t0 = time.monotonic()
        self._pinned: dict[PoolKey, LoadSample] = {}
        self._followed: dict[PoolKey, Callable[[], LoadSample]] = {}
        self.faults: dict[PoolKey, EppFault] = {}

    def pin(self, key: PoolKey, sample: LoadSample | None) -> None:
        if sample is None:
            self._pinned.pop(key, None)
        else:
            self._pinned[key] = sample

    def follow(self, key: PoolKey, source: Callable[[], LoadSample]) -> None:
        """Report this pool's real state (its simulated model servers) instead of a wave."""
        self._followed[key] = source

    def fail(self, key: PoolKey, fault: EppFault | None) -> None:
        if fault is None:
            self.faults.pop(key, None)
        else:
            self.faults[key] = fault

    def sample(self, key: PoolKey) -> LoadSample:
        now = time.time()
        pinned = self._pinned.get(key)
        if pinned is not None:
            return dataclasses.replace(pinned, observed_at=now)
        followed = self._followed.get(key)
        if followed is not None:
            return followed()
        seed = zlib.crc32(f"{self.cluster}/{key}".encode())
        phase = (seed % 628) / 100
        pods = 2 + seed % 7
        elapsed = time.monotonic() - self._t0
        wave = 0.5 + 0.45 * math.sin(2 * math.pi * elapsed / self.period + phase)
        return LoadSample(
            observed_at=now,
            ready_pods=pods,
            kv_cache_utilization=round(wave, 3),
            queue_size=round(max(0.0, wave - 0.6) * 10, 2),
            running_requests=round(wave * 16, 2),
            saturation=round(wave, 3),
        )
