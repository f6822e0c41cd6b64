"""No orphans: `federation demo` stopped by SIGTERM (what `timeout` and CI runners send) takes its
servers and temporary stores with it; killed with SIGKILL, its servers still die with it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.faults]


def children(pid: int) -> dict[int, str]:
    """Direct children of ``pid`` and their command lines."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                out[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and ") Z " not in stat.read_text()  # a zombie is gone, but unreaped


async def start_demo() -> tuple[asyncio.subprocess.Process, dict[int, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "federation", "demo", "--duration", "120", "--json",
        "--no-traffic",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    servers: dict[int, str] = {}

    def three_servers() -> bool:
        servers.update({p: c for p, c in children(proc.pid).items() if "nats-server" in c})
        return len(servers) >= 3

    await wait_for(three_servers, within=30, what="the demo's three nats-servers")
    return proc, servers


async def test_sigterm_stops_every_server_and_removes_the_stores() -> None:
    proc, servers = await start_demo()
    config = next(iter(servers.values())).split("-c ", 1)[1].strip()
    store = Path(config).parents[1]  # <tmp>/federation-demo-XXXX/<cluster>/nats.conf
    assert store.name.startswith("federation-demo-")
    assert store.is_dir()
    proc.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 128 + signal.SIGTERM
    assert not [p for p in servers if alive(p)]
    assert not store.exists()


async def test_a_killed_demo_takes_its_servers_with_it() -> None:
    proc, servers = await start_demo()
    proc.kill()
    await proc.wait()
    await wait_for(lambda: not [p for p in servers if alive(p)], within=10,
                   what="the orphaned servers to die")  # fmt: skip
