"""The HAProxy feed against a real HAProxy (Debian's 2.6): servers programmed, not just weighted.

haproxy.cfg holds only empty backends, as ``federation haproxy-config`` prints them; the feed adds,
moves, weights, drains and deletes dynamic servers, and real HTTP requests follow.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from federation.adapters.haproxy import HAProxyError, HAProxyFeed, HAProxyRuntime
from federation.kit.nats_servers import free_port
from federation.kit.text_server import TextServer
from federation.messages import EndpointAddress, ParentGateway
from federation.model.haproxy_config import snippet
from federation.model.imports import DesiredImport
from federation.model.pools import PoolKey
from federation.model.views import ImportView
from federation.model.weights import BackendWeight
from tests.conftest import wait_for
from tests.model.factories import export, pool

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(
    HAPROXY is None, reason="haproxy not installed (.ci/run installs Debian's haproxy)"
)

KEY = PoolKey("llm", "llama-3-70b")
OTHER = PoolKey("llm", "static")  # its backend uses static-rr: HAProxy refuses dynamic servers
BACKEND = "fed_llm_llama-3-70b"
REMOTES = ("eu-west", "us-east")


def gateway(host: str, port: int) -> tuple[ParentGateway, ...]:
    address = EndpointAddress(host=host, port=port)
    return (ParentGateway(namespace="gw", name="g", addresses=(address,)),)


def view(
    weights: dict[str, int], ports: dict[str, int], key: PoolKey = KEY, host: str = "127.0.0.1"
) -> ImportView:
    remotes = tuple(b for b in weights if b != "local")
    desired = DesiredImport(
        key=key,
        exporting_clusters=remotes,
        has_local="local" in weights,
        exports=tuple(export(c, key.name, parents=gateway(host, ports.get(c, 1))) for c in remotes),
        local=pool(key.name, parents=gateway(host, ports.get("local", 1))),
    )
    return ImportView(desired, {k: BackendWeight(w, "test") for k, w in weights.items()})


class RecordingRuntime(HAProxyRuntime):
    """The real runtime API, keeping every command line sent (to look for injections)."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(socket_path)
        self.sent: list[str] = []

    async def command(self, line: str) -> str:
        self.sent.append(line)
        return await super().command(line)


@dataclass
class Rig:
    runtime: RecordingRuntime
    url: str
    ports: dict[str, int]  # each backend's gateway: a text server answering its own name
    cfg: Path
    tcp: str  # the same runtime API on a TCP listener
    proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        assert HAPROXY is not None
        self.proc = await asyncio.create_subprocess_exec(
            HAPROXY, "-db", "-f", str(self.cfg),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def answers() -> bool:
            assert self.proc is not None
            if self.proc.returncode is not None:
                pytest.fail(f"haproxy exited with {self.proc.returncode}")
            try:
                return "Name: HAProxy" in await self.runtime.command("show info")
            except OSError:
                return False

        await wait_for(answers, within=10, what="haproxy runtime API")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    servers = {n: TextServer(lambda _p, n=n: (200, n)) for n in ("local", *REMOTES)}
    for s in servers.values():
        await s.start()
    port, admin_port = free_port(), free_port()
    sock = tmp_path / "admin.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        f"global\n  stats socket {sock} mode 600 level admin\n"
        f"  stats socket ipv4@127.0.0.1:{admin_port} level admin\n"
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\n"
        + snippet([KEY], cluster="ap-south", bind=f"127.0.0.1:{port}")
        + "\nbackend fed_llm_static\n  balance static-rr\n"
        + "\nbackend fed_llm_manual\n  balance roundrobin\n  server manual 127.0.0.1:1 weight 1\n"
    )
    rig = Rig(
        RecordingRuntime(sock),
        f"http://127.0.0.1:{port}/llm/llama-3-70b/x",
        {n: s.port for n, s in servers.items()},
        cfg,
        f"tcp://127.0.0.1:{admin_port}",
    )
    await rig.start()
    try:
        yield rig
    finally:
        await rig.kill()
        for s in servers.values():
            await s.stop()


async def split(url: str, n: int) -> dict[str, float]:
    seen: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            async with http.get(url) as resp:
                seen[await resp.text() if resp.status == 200 else str(resp.status)] += 1
    return {k: v / n for k, v in seen.items()}


async def test_servers_are_added_weighted_drained_and_deleted_and_requests_follow(rig: Rig) -> None:
    clock = [0.0]
    feed = HAProxyFeed(rig.runtime, drain=30.0, clock=lambda: clock[0])
    await feed.apply(
        {KEY: view({"eu-west": 500_000, "local": 300_000, "us-east": 200_000}, rig.ports)}
    )
    servers = (await rig.runtime.servers())[BACKEND]
    assert set(servers) == {"eu-west", "local", "us-east"}
    assert not any(s.maintenance for s in servers.values())
    got = await split(rig.url, 400)
    for name, share in {"eu-west": 0.5, "local": 0.3, "us-east": 0.2}.items():
        assert abs(got.get(name, 0) - share) < 0.06, got

    # eu-west withdraws: drained at once (weight 0), deleted only after the drain time.
    await feed.apply({KEY: view({"local": 250_000, "us-east": 750_000}, rig.ports)})
    servers = (await rig.runtime.servers())[BACKEND]
    assert servers["eu-west"].weight == 0
    got = await split(rig.url, 300)
    assert "eu-west" not in got
    assert abs(got["us-east"] - 0.75) < 0.07, got
    clock[0] = 31.0
    await feed.apply({KEY: view({"local": 250_000, "us-east": 750_000}, rig.ports)})
    assert set((await rig.runtime.servers())[BACKEND]) == {"local", "us-east"}

    # A new exporter is added; a moved gateway is followed.
    moved = dict(rig.ports, **{"us-east": rig.ports["eu-west"]})
    await feed.apply({KEY: view({"eu-west": 500_000, "us-east": 500_000}, moved)})
    servers = (await rig.runtime.servers())[BACKEND]
    assert servers["us-east"].port == rig.ports["eu-west"]
    assert servers["local"].weight == 0  # local left the import: draining
    assert (await split(rig.url, 50)) == {"eu-west": 1.0}


async def test_a_restarted_haproxy_is_programmed_again_in_full(rig: Rig) -> None:
    feed = HAProxyFeed(rig.runtime)
    views = {KEY: view({"eu-west": 600_000, "local": 400_000}, rig.ports)}
    await feed.apply(views)
    await rig.kill()
    with pytest.raises(
        OSError, match=r"No such file|refused"
    ):  # the socket is gone: the agent's feed retries with backoff
        await feed.apply(views)
    await rig.start()
    assert (await rig.runtime.servers()).get(BACKEND, {}) == {}  # dynamic servers are lost
    await feed.apply(views)  # the agent's next retry or resync: the same views
    assert set((await rig.runtime.servers())[BACKEND]) == {"eu-west", "local"}
    got = await split(rig.url, 200)
    assert abs(got["eu-west"] - 0.6) < 0.08, got


async def test_hostile_names_and_addresses_never_reach_a_command(rig: Rig) -> None:
    feed = HAProxyFeed(rig.runtime)
    hostile = view({"eu-west": 500_000, "us-east": 500_000, "local": 0}, rig.ports)
    bad_exports = (
        export("eu-west", KEY.name, parents=gateway("1.2.3.4 check; del server x/y", 80)),
        export("us-east", KEY.name, parents=gateway("fe80::1%x weight 256 backup", 443)),
    )
    desired = DesiredImport(
        key=KEY, exporting_clusters=REMOTES, has_local=True, exports=bad_exports,
        local=pool(KEY.name),  # no parent Gateway at all
    )  # fmt: skip
    weights = dict(hostile.weights) | {"x; shutdown sessions": BackendWeight(1, "evil")}
    await feed.apply({KEY: ImportView(desired, weights)})
    assert (await rig.runtime.servers()).get(BACKEND, {}) == {}
    assert not [c for c in rig.runtime.sent if "shutdown" in c or "del server x" in c]
    assert not [c for c in rig.runtime.sent if "backup" in c]
    left = feed.notes()["left_out"]
    assert isinstance(left, dict)
    reasons = left[str(KEY)]
    assert "is not an IP address" in reasons["eu-west"]
    assert "is not an IP address" in reasons["us-east"]
    assert "no parent Gateway" in reasons["local"]
    assert reasons["x; shutdown sessions"] == "not a valid HAProxy server name"
    with pytest.raises(HAProxyError, match="separator"):
        await rig.runtime.command("show info; shutdown frontend x")


async def test_a_refused_command_raises_and_the_other_imports_are_still_programmed(
    rig: Rig,
) -> None:
    feed = HAProxyFeed(rig.runtime)
    missing = PoolKey("llm", "not-in-cfg")
    views = {
        OTHER: view({"eu-west": 1_000_000}, rig.ports, key=OTHER),
        KEY: view({"eu-west": 1_000_000}, rig.ports),
        missing: view({"eu-west": 1_000_000}, rig.ports, key=missing),
    }
    with pytest.raises(HAProxyError, match="dynamic"):
        await feed.apply(views)
    assert set((await rig.runtime.servers())[BACKEND]) == {"eu-west"}
    assert feed.notes()["missing_backends"] == ["fed_llm_not-in-cfg"]


async def test_the_runtime_api_is_reached_over_tcp_too(rig: Rig) -> None:
    feed = HAProxyFeed(HAProxyRuntime(rig.tcp))
    await feed.apply({KEY: view({"eu-west": 1_000_000}, rig.ports)})
    assert set((await rig.runtime.servers())[BACKEND]) == {"eu-west"}
    with pytest.raises(ValueError, match="tcp://HOST:PORT"):
        HAProxyRuntime("tcp://no-port")


async def test_servers_the_feed_does_not_own_are_left_alone(rig: Rig) -> None:
    clock = [0.0]
    feed = HAProxyFeed(rig.runtime, drain=5.0, clock=lambda: clock[0], members=REMOTES)
    manual = PoolKey("llm", "manual")
    await feed.apply({manual: view({"eu-west": 1_000_000}, rig.ports, key=manual)})
    assert set((await rig.runtime.servers())["fed_llm_manual"]) == {"manual", "eu-west"}
    await feed.apply({})  # the import goes: its servers drain, then are deleted...
    clock[0] = 6.0
    await feed.apply({})
    assert set((await rig.runtime.servers())["fed_llm_manual"]) == {"manual"}  # ...not others


async def test_the_import_backends_request_counter_is_the_demand(rig: Rig) -> None:
    """Every request local clients send for the pool counts, wherever it is then sent."""
    feed = HAProxyFeed(rig.runtime)
    await feed.apply({KEY: view({"eu-west": 500_000, "local": 500_000}, rig.ports)})
    before = await feed.offered([KEY, PoolKey("llm", "not-configured")])
    assert set(before) == {KEY}  # a pool without a backend has no counter
    await split(rig.url, 37)
    after = await feed.offered([KEY])
    assert after[KEY] - before[KEY] == 37
