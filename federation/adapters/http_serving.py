"""Small HTTP servers on loopback: the shared start-up, and a text server for simulated EPPs."""

from __future__ import annotations

import socket
from collections.abc import Callable

from aiohttp import web

# path -> (status, body); the renderer decides, so a simulation can inject faults.
Renderer = Callable[[str], tuple[int, str]]


async def start_http(app: web.Application, host: str, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``app``; binding the socket here tells us the port without a race."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])


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
