"""The EPP scraper: a LoadSource that reads each pool's Endpoint Picker metrics over HTTP.

The Prometheus text is parsed with ``prometheus_client``'s parser and reduced by the pure
:func:`~federation.model.loads.sample_from_metrics`. A bad endpoint never raises: an unreachable,
slow or failing EPP gives an ``unreachable`` sample, garbage or impossible values an ``invalid``
one, each logged and counted by reason in :attr:`EppScraper.failures`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from federation.model.loads import (
    COUNTER_NAMES,
    METRIC_NAMES,
    InvalidMetrics,
    LoadSample,
    sample_from_metrics,
)
from federation.model.pools import LocalPool

log = logging.getLogger(__name__)

MAX_METRICS_BYTES = 4 * 1024 * 1024  # an EPP's /metrics is kilobytes; more is hostile


def pool_metrics(text: str, pool: str) -> dict[str, float]:
    """The EPP pool metrics in ``text`` for ``pool`` (label ``name``; unlabelled series count).

    A counter is summed over its series (one per objective and target model)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in METRIC_NAMES and sample.labels.get("name", pool) == pool:
                value = float(sample.value)
                if sample.name in COUNTER_NAMES:
                    value += values.get(sample.name, 0.0)
                values[sample.name] = value
    return values


class EppScraper:
    def __init__(self, *, timeout: float = 2.0, wall: Callable[[], float] = time.time) -> None:
        self.timeout = timeout
        self.wall = wall
        self.failures: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _failed(self, pool: LocalPool, reason: str, status: str, detail: object) -> LoadSample:
        self.failures[reason] += 1
        log.warning("EPP of %s: %s: %s", pool.key, reason, detail)
        return LoadSample(observed_at=self.wall(), epp_status=status)

    async def sample(self, pool: LocalPool) -> LoadSample:
        if pool.metrics_url is None:
            return self._failed(pool, "no-endpoint", "unreachable", "no EPP metrics address")
        try:
            async with asyncio.timeout(self.timeout):
                async with self._http().get(pool.metrics_url) as resp:
                    if resp.status == 503:
                        return self._failed(pool, "http-503", "no-endpoints", "503")
                    if resp.status == 429:
                        return self._failed(pool, "http-429", "shedding", "429")
                    if resp.status != 200:
                        return self._failed(pool, "http-error", "unreachable", resp.status)
                    body = await resp.content.read(MAX_METRICS_BYTES + 1)
        except TimeoutError:
            return self._failed(pool, "timeout", "unreachable", f"no answer in {self.timeout}s")
        except aiohttp.ClientError as exc:
            return self._failed(pool, "unreachable", "unreachable", exc)
        if len(body) > MAX_METRICS_BYTES:
            return self._failed(pool, "oversized", "invalid", f"> {MAX_METRICS_BYTES} bytes")
        try:
            values = pool_metrics(body.decode("utf-8"), pool.name)
            return sample_from_metrics(values, observed_at=self.wall())
        except (ValueError, UnicodeDecodeError, InvalidMetrics) as exc:
            return self._failed(pool, "invalid-metrics", "invalid", exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
