"""A text server on loopback: simulated EPPs' metrics and stand-in gateways in tests."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from federation.adapters.http_serving import start_http

# path -> (status, body); the renderer decides, so a simulation can inject faults.
Renderer = Callable[[str], tuple[int, str]]


class TextServer:
    def __init__(self, render: Renderer, host: str = "127.0.0.1") -> None:
        self._render = render
        self._host = host
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        status, body = self._render(request.path)
        return web.Response(status=status, text=body, content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner, self.port = await start_http(app, self._host)

    def url(self, path: str) -> str:
        return f"http://{self._host}:{self.port}{path}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
