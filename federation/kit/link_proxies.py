"""A TCP proxy in front of one nats-server's gateway port that can cut chosen gateway links.

For fault tests and measurements on loopback, where links cannot be cut with the network: every
server advertises its proxy as its gateway address and every peer dials the proxies, so all
gateway traffic of the supercluster flows through them. A connecting server identifies itself in
its first protocol line after the INFO it receives (``CONNECT {"gateway": "<its cluster>", ...}``),
so the proxy knows which link each connection belongs to and can refuse and close exactly the
links between two clusters while every other link — and every client connection — stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
CONNECT_LIMIT = 64 * 1024  # a CONNECT line longer than this is not a gateway's


class GatewayProxy:
    def __init__(self, cluster: str, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.cluster = cluster  # whose gateway port this fronts
        self.upstream_port = upstream_port
        self.host = host
        self.port = 0
        self.blocked: set[str] = set()  # gateway names whose links to this server are cut
        self._server: asyncio.Server | None = None
        # open connections: id → (peer name, downstream writer, upstream writer)
        self._links: dict[int, tuple[str, asyncio.StreamWriter, asyncio.StreamWriter | None]] = {}
        self.refused = 0
        self._tasks: set[asyncio.Task[None]] = set()  # connection handlers, awaited on stop

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for _, down, up in list(self._links.values()):
            self._close(down, up)
        if self._tasks:  # closed sockets end their pipes; let the handlers finish
            await asyncio.wait(self._tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def block(self, peer: str) -> None:
        """Cut the link from ``peer``'s server: close it now and refuse it until unblocked."""
        self.blocked.add(peer)
        for name, down, up in list(self._links.values()):
            if name == peer:
                self._close(down, up)

    @staticmethod
    def _close(down: asyncio.StreamWriter, up: asyncio.StreamWriter | None) -> None:
        """Closing both sockets ends the connection's pipes (no task is cancelled)."""
        down.close()
        if up is not None:
            up.close()

    def unblock(self, peer: str) -> None:
        self.blocked.discard(peer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = id(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            writer.close()
            return
        self._links[link] = ("", writer, up_writer)
        downstream = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            peer, connect = await self._identify(reader, up_writer)
            self._links[link] = (peer or "", writer, up_writer)
            if peer is None or peer in self.blocked:
                self.refused += 1
                return
            up_writer.write(connect)
            await self._pipe(reader, up_writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._close(writer, up_writer)
            await asyncio.gather(downstream, return_exceptions=True)
            self._links.pop(link, None)

    async def _identify(
        self, reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> tuple[str | None, bytes]:
        """Forward lines up to the CONNECT; return the connecting gateway's name and that line."""
        seen = 0
        while seen < CONNECT_LIMIT:
            line = await reader.readuntil(b"\n")
            seen += len(line)
            if line.startswith(b"CONNECT "):
                try:
                    name = json.loads(line[8:]).get("gateway")
                except ValueError:
                    return None, line
                return (name if isinstance(name, str) else None), line
            up_writer.write(line)
        return None, b""

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
