"""A simulated cluster's gateway: a real HAProxy process, programmed by that cluster's agent.

Two listeners, as in a real cluster:

- the cluster's own **Gateway** (the parent Gateway of its pools, whose address the exports
  carry): serves each local pool from the local model servers, never anything else — the
  east-west entry point that peers' gateways forward to;
- the **entry** frontend for the cluster's clients, with one backend per imported pool exactly as
  ``federation haproxy-config`` prints it; the agent fills those backends with servers through the
  runtime API (``--haproxy-socket``), and nothing else does.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from pathlib import Path

from federation.kit.children import die_with_parent
from federation.model.haproxy_config import snippet
from federation.model.pools import PoolKey

START_TIMEOUT = 10.0


class HAProxyMissing(RuntimeError):
    pass


def haproxy_binary() -> str:
    found = shutil.which("haproxy")
    if found is None:
        raise HAProxyMissing(
            "the traffic demo needs HAProxy ≥ 2.5 on PATH (Debian/Ubuntu: apt-get install haproxy)"
        )
    return found


class HAProxyGateway:
    def __init__(
        self,
        cluster: str,
        directory: Path,
        *,
        gateway_port: int,
        entry_port: int,
        local_pools: Iterable[PoolKey],
        imports: Iterable[PoolKey],
        model_servers_port: int,
    ) -> None:
        self.cluster = cluster
        self.directory = directory
        self.gateway_port = gateway_port
        self.entry_port = entry_port
        self.local_pools = sorted(set(local_pools))
        self.imports = sorted(set(imports))
        self.model_servers_port = model_servers_port
        self.socket = directory / "admin.sock"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def entry_url(self) -> str:
        return f"http://127.0.0.1:{self.entry_port}"

    def config(self) -> str:
        gateway = [
            "frontend gateway  # this cluster's Gateway: serves its pools locally, never spills",
            f"  bind 127.0.0.1:{self.gateway_port}",
        ]
        backends: list[str] = []
        for key in self.local_pools:
            name = f"here_{key.namespace}_{key.name}"
            gateway.append(f"  use_backend {name} if {{ path_beg /{key.namespace}/{key.name}/ }}")
            backends += [
                "",
                f"backend {name}",
                f"  server pool 127.0.0.1:{self.model_servers_port}",
            ]
        head = [
            "global",
            f"  stats socket {self.socket} mode 600 level admin",
            "defaults",
            "  mode http",
            "  timeout connect 1s",
            "  timeout client 30s",
            "  timeout server 30s",
            "  timeout queue 5s",
            "",
        ]
        entry = snippet(self.imports, cluster=self.cluster, bind=f"127.0.0.1:{self.entry_port}")
        return "\n".join([*head, *gateway, *backends, "", entry])

    async def start(self) -> None:
        binary = haproxy_binary()
        self.directory.mkdir(parents=True, exist_ok=True)
        cfg = self.directory / "haproxy.cfg"
        cfg.write_text(self.config())
        self.socket.unlink(missing_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            binary, "-db", "-f", str(cfg),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(self.directory / "haproxy.log").open("ab"),
            preexec_fn=die_with_parent,
        )  # fmt: skip
        async with asyncio.timeout(START_TIMEOUT):
            while not await self._answers():
                if self.process.returncode is not None:
                    log = (self.directory / "haproxy.log").read_text()[-2000:]
                    raise RuntimeError(f"haproxy of {self.cluster} exited: {log}")
                await asyncio.sleep(0.02)

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.socket))
        except OSError:
            return False
        writer.write(b"show info\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
        return b"Pid:" in answer

    async def stop(self) -> None:
        """SIGKILL: a cluster's gateway dies with it (and a restart starts empty)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.kill()
        await self.process.wait()
        self.process = None
