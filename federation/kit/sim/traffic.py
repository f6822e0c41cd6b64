"""Simulated clients: Poisson request streams to a cluster's HAProxy entry, and what came back.

Each cluster's generator sends requests for one pool to its own gateway at ``rate`` per second
(times ``burst.factor`` during its burst), and records every answer: status, latency against
the SLO, and which backend served it — the ``X-Served-By`` cluster, named as in the weights
(``local`` when it is this cluster's own unexported pool). The demo's snapshot and live view
read :meth:`Traffic.document`; the timeline has one entry per second since the agents started.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from federation.kit.sim.model_servers import SERVED_BY
from federation.model.pools import LOCAL_BACKEND, PoolKey

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Burst:
    cluster: str
    at: float  # seconds after the agents start
    duration: float
    factor: float


@dataclass
class Traffic:
    """One cluster's requests and their outcomes."""

    cluster: str
    key: PoolKey
    here: str  # this cluster's backend name in the import: ``local`` or the cluster's own
    slo: float
    requests: int = 0
    ok: int = 0
    errors: int = 0
    within_slo: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    served_by: Counter[str] = field(default_factory=Counter)
    timeline: dict[int, Counter[str]] = field(default_factory=dict)
    failed_at: Counter[int] = field(default_factory=Counter)  # errors by the second they were sent

    def backend(self, served_by: str) -> str:
        return self.here if served_by == self.cluster else served_by

    def record(self, second: int, status: int, served_by: str | None, latency: float) -> None:
        self.requests += 1
        self.statuses[status] += 1
        if status != 200 or served_by is None:
            self.errors += 1
            self.failed_at[second] += 1
            return
        self.ok += 1
        if latency <= self.slo:
            self.within_slo += 1
        backend = self.backend(served_by)
        self.served_by[backend] += 1
        self.timeline.setdefault(second, Counter())[backend] += 1

    def rate_by_backend(self, now_second: int, window: int = 5) -> dict[str, float]:
        """Requests per second served by each backend over the last ``window`` whole seconds."""
        total: Counter[str] = Counter()
        for s in range(max(0, now_second - window), now_second):
            total.update(self.timeline.get(s, Counter()))
        return {b: n / window for b, n in sorted(total.items())}

    def document(self, last_second: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "slo_attainment": round(self.within_slo / self.requests, 4) if self.requests else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "served_by": dict(sorted(self.served_by.items())),
            "timeline": [
                {"t": s, "served_by": dict(sorted(self.timeline.get(s, Counter()).items()))}
                for s in range(last_second + 1)
            ],
        }


class Generator:
    """Poisson arrivals to ``url`` at ``rate`` req/s, each answer recorded in ``traffic``."""

    def __init__(
        self,
        traffic: Traffic,
        url: str,
        *,
        rate: float,
        started: float,
        burst: Burst | None = None,
        seed: int = 0,
    ) -> None:
        self.traffic = traffic
        self.url = url
        self.rate = rate
        self.started = started
        self.burst = burst if burst is not None and burst.cluster == traffic.cluster else None
        self.rng = random.Random(seed)
        self._inflight: set[asyncio.Task[None]] = set()

    def rate_at(self, t: float) -> float:
        b = self.burst
        if b is not None and b.at <= t < b.at + b.duration:
            return self.rate * b.factor
        return self.rate

    async def run(self) -> None:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        ) as http:
            try:
                while True:
                    t = time.monotonic() - self.started
                    # The next arrival of a Poisson process (an arrival schedule, not a settle).
                    await asyncio.sleep(self.rng.expovariate(self.rate_at(t)))
                    task = asyncio.create_task(self._one(http))
                    self._inflight.add(task)
                    task.add_done_callback(self._inflight.discard)
            finally:
                for task in list(self._inflight):
                    task.cancel()
                for task in list(self._inflight):
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _one(self, http: aiohttp.ClientSession) -> None:
        sent = time.monotonic()
        second = int(sent - self.started)
        try:
            async with http.get(self.url) as resp:
                await resp.read()
                status, served_by = resp.status, resp.headers.get(SERVED_BY)
        except (aiohttp.ClientError, TimeoutError):
            status, served_by = 599, None  # no answer at all
        self.traffic.record(second, status, served_by, time.monotonic() - sent)


def here_backend(cluster: str, exported_here: bool) -> str:
    return cluster if exported_here else LOCAL_BACKEND
