"""The agent's HTTP port: ``GET /v1/weights`` (JSON, all imports) for gateways that poll, and,
when given, ``GET /metrics`` (Prometheus) and ``GET /v1/status`` (what ``federation status`` shows).

The weights come from a :class:`WeightsBoard`, the ImportSink the agent hands every new set of
views; requests read the latest.
Listens on loopback by default; in a pod, set the host to ``0.0.0.0`` (and keep it off the
public Service).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from federation.adapters.http_serving import start_http
from federation.model.pools import PoolKey
from federation.model.views import ImportView, weights_document


class WeightsBoard:
    """The ``/v1/weights`` document: an ImportSink the agent feeds, which the HTTP port reads.

    Taking new views is cheap (they are kept); the document is rendered when someone asks for
    it, once per set of views: thousands of imports stepping their smoothing are not rendered
    to JSON at every step that nobody reads.
    """

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._views: Mapping[PoolKey, ImportView] = {}
        self._updated_at: float | None = None
        self._body: bytes | None = None

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        self._views, self._updated_at, self._body = dict(views), time.time(), None

    @property
    def body(self) -> bytes:
        if self._body is None:
            doc = {
                "cluster": self.cluster,
                "updated_at": self._updated_at,
                "imports": weights_document(self._views),
            }
            self._body = orjson.dumps(doc)
        return self._body


class AgentHttp:
    def __init__(
        self,
        board: WeightsBoard,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        metrics: Callable[[], bytes] | None = None,
        status: Callable[[], dict[str, Any]] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.board = board
        self.ready = ready
        self.metrics = metrics
        self.status = status
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def _weights(self, _: web.Request) -> web.Response:
        return web.Response(body=self.board.body, content_type="application/json")

    async def _metrics(self, _: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="metrics are not enabled\n")
        return web.Response(body=self.metrics(), content_type="text/plain", charset="utf-8")

    async def _status(self, _: web.Request) -> web.Response:
        if self.status is None:
            return web.Response(status=404, text="status is not enabled\n")
        return web.Response(body=orjson.dumps(self.status()), content_type="application/json")

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        """Ready once caught up with the bus (a Deployment's readiness probe)."""
        if self.ready is not None and not self.ready():
            return web.Response(status=503, text="catching up\n")
        return web.Response(text="ready\n")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/v1/weights", self._weights)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v1/status", self._status)
        self._runner, self.port = await start_http(app, self.host, self.port)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """Where gateways poll the weights."""
        return f"{self.base_url}/v1/weights"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class AgentUnreachable(RuntimeError):
    pass


async def fetch_status(base_url: str, within: float = 5.0) -> dict[str, Any]:
    """``GET <base_url>/v1/status`` of a running agent, for ``federation status``."""
    url = base_url.rstrip("/") + "/v1/status"
    try:
        async with (
            asyncio.timeout(within),
            aiohttp.ClientSession() as http,
            http.get(url) as resp,
        ):
            if resp.status != 200:
                raise AgentUnreachable(f"{url} answered {resp.status}")
            doc: dict[str, Any] = orjson.loads(await resp.read())
            return doc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AgentUnreachable(f"{url}: {exc or type(exc).__name__}") from None
