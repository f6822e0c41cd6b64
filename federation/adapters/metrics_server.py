"""A small HTTP server on loopback that serves text documents by path (simulated EPP metrics)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

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
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self._host, 0))  # bound here so the port is known without a race
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    def url(self, path: str) -> str:
        return f"http://{self._host}:{self.port}{path}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
