"""The agent's HTTP endpoint for gateways that poll: ``GET /v1/weights`` (JSON, all imports).

It is an ImportSink: the agent hands it every new set of views; requests read the latest.
Listens on loopback by default; in a pod, set the host to ``0.0.0.0`` (and keep it off the
public Service).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import orjson
from aiohttp import web

from federation.adapters.http_serving import start_http
from federation.model.pools import PoolKey
from federation.model.views import ImportView, weights_document


class WeightsApi:
    def __init__(self, cluster: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.cluster = cluster
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

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/weights", self._weights)
        self._runner, self.port = await start_http(app, self.host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1/weights"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
