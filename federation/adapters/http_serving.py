"""Starting an HTTP server: binding the socket first, so the port is known without a race."""

from __future__ import annotations

import socket

from aiohttp import web


async def start_http(app: web.Application, host: str, port: int = 0) -> tuple[web.AppRunner, int]:
    """Serve ``app``; binding the socket here tells us the port without a race."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    await web.SockSite(runner, sock).start()
    return runner, int(sock.getsockname()[1])
