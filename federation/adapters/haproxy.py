"""HAProxy feed: set server weights in a running HAProxy through its runtime API.

One HAProxy backend per import, one server per federation backend (a cluster name or ``local``).
HAProxy weights are integers 0..256, so each import's weights are rescaled to that range (the
largest to 256, every positive weight to at least 1, zero stays zero, which drains the server).
Only changed weights are sent; a failed command raises, and the agent retries on its next cycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from federation.model.pools import PoolKey
from federation.model.views import ImportView

HAPROXY_MAX_WEIGHT = 256


def haproxy_weights(weights: Mapping[str, int]) -> dict[str, int]:
    top = max(weights.values(), default=0)
    if top <= 0:
        return dict.fromkeys(weights, 0)
    return {
        k: (max(1, round(w * HAPROXY_MAX_WEIGHT / top)) if w > 0 else 0) for k, w in weights.items()
    }


def default_backend_name(key: PoolKey) -> str:
    return f"{key.namespace}_{key.name}".replace(".", "_")


class HAProxyError(RuntimeError):
    pass


class HAProxyFeed:
    def __init__(
        self,
        socket_path: str,
        *,
        backend_name: Callable[[PoolKey], str] = default_backend_name,
        timeout: float = 2.0,
    ) -> None:
        self.socket_path = socket_path
        self.backend_name = backend_name
        self.timeout = timeout
        self._sent: dict[tuple[str, str], int] = {}

    async def command(self, line: str) -> str:
        """One runtime-API command (or several joined by ';'); returns HAProxy's answer."""
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
            try:
                writer.write(line.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode(errors="replace")
            finally:
                writer.close()
                await writer.wait_closed()

    async def apply(self, views: Mapping[PoolKey, ImportView]) -> None:
        commands, pending = [], {}
        for key, view in sorted(views.items()):
            backend = self.backend_name(key)
            scaled = haproxy_weights({n: w.weight for n, w in view.weights.items()})
            for server, weight in sorted(scaled.items()):
                if self._sent.get((backend, server)) != weight:
                    commands.append(f"set weight {backend}/{server} {weight}")
                    pending[(backend, server)] = weight
        if not commands:
            return
        answer = await self.command("; ".join(commands))
        errors = [line for line in answer.splitlines() if line.strip()]
        if errors:
            raise HAProxyError(f"HAProxy refused weights: {'; '.join(errors)[:500]}")
        self._sent.update(pending)
