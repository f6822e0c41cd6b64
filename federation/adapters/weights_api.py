"""The agent's HTTP port: ``GET /v1/weights`` (JSON, all imports) for gateways that poll, and
``GET /metrics`` (Prometheus) when metrics are given.

It is an ImportSink: the agent hands it every new set of views; requests read the latest.
Listens on loopback by default; in a pod, set the host to ``0.0.0.0`` (and keep it off the
public Service).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import orjson
from aiohttp import web

from federation.adapters.http_serving import start_http
from federation.model.pools import PoolKey
from federation.model.views import ImportView, weights_document


class WeightsApi:
    def __init__(
        self,
        cluster: str,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics: Callable[[], bytes] | None = None,
    ) -> None:
        self.cluster = cluster
        self.metrics = metrics
        self.host = host
        self.port = port
        self._body = orjson.dumps({"cluster": cluster, "updated_at": None, "imports": {}})
        self._runner: web.AppRunner | None = None

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        doc = {
            "cluster": self.cluster,
            "updated_at": time.time(),
            "imports": weights_document(views),
        }
        self._body = orjson.dumps(doc)

    async def _weights(self, _: web.Request) -> web.Response:
        return web.Response(body=self._body, content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="metrics are not enabled\n")
        return web.Response(body=self.metrics(), content_type="text/plain", charset="utf-8")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/weights", self._weights)
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.port = await start_http(app, self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/weights"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
