"""Running the demo: start the supercluster and agents, show or snapshot, and clean up."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from federation.kit.sim.demo import Demo, DemoOptions
from federation.kit.sim.demo_view import demo_view
from federation.kit.sim.security import spoof_drill

REFRESH = 0.25  # seconds between live-table redraws
PRINT_EVERY = 5.0  # seconds between snapshots when the output is not a terminal


@dataclass(frozen=True)
class Chaos:
    """Kill one cluster (its nats-server and agent) at ``at`` seconds, optionally revive it."""

    cluster: str
    at: float
    revive_at: float | None = None


async def _run_chaos(demo: Demo, chaos: Chaos, started: float) -> None:
    await asyncio.sleep(max(0.0, started + chaos.at - time.monotonic()))
    await demo.kill(chaos.cluster)
    if chaos.revive_at is not None:
        await asyncio.sleep(max(0.0, started + chaos.revive_at - time.monotonic()))
        await demo.revive(chaos.cluster)


async def _run_spoof(demo: Demo) -> None:
    """Once the clusters federate, attack with us-east's login (see ``sim/security.py``)."""
    await demo.wait_converged(60)
    assert demo.security is not None
    names = list(demo.clusters)
    await spoof_drill(demo.security, demo.supercluster.url(names[0]), names[0], names[1])


async def run_demo(
    options: DemoOptions,
    *,
    duration: float,
    console: Console | None,
    chaos: Chaos | None = None,
    dump_to: Path | None = None,
    spoof: bool = False,
) -> dict[str, Any]:
    """Run for ``duration`` seconds after the agents start; return the final snapshot.

    With a console, draw the live table meanwhile; without one, stay silent (``--json``).
    """
    demo = await Demo.start(options)
    try:
        await demo.start_agents()
        started = time.monotonic()
        deadline = started + duration
        convergence = asyncio.create_task(demo.wait_converged(duration), name="convergence")
        chaos_task = (
            asyncio.create_task(_run_chaos(demo, chaos, started), name="chaos") if chaos else None
        )
        spoof_task = asyncio.create_task(_run_spoof(demo), name="spoof") if spoof else None
        try:
            if console is None:
                while time.monotonic() < deadline:
                    demo.check_agents()
                    await asyncio.sleep(min(REFRESH, max(0.0, deadline - time.monotonic())))
            elif not console.is_terminal:  # a file or a CI log: a snapshot every few seconds
                printed = -math.inf
                while time.monotonic() < deadline:
                    demo.check_agents()
                    if time.monotonic() - printed >= PRINT_EVERY:
                        console.print(demo_view(demo, time.monotonic() - started, duration))
                        printed = time.monotonic()
                    await asyncio.sleep(REFRESH)
                console.print(demo_view(demo, time.monotonic() - started, duration))
            else:
                with Live(console=console, refresh_per_second=4, transient=False) as live:
                    while time.monotonic() < deadline:
                        demo.check_agents()
                        live.update(demo_view(demo, time.monotonic() - started, duration))
                        await asyncio.sleep(REFRESH)
        finally:
            for task in (convergence, chaos_task, spoof_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        for task in (chaos_task, spoof_task):
            if task is not None and task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"{task.get_name()} failed") from task.exception()
        demo.check_agents()
        if dump_to is not None:
            demo.dump_objects(dump_to)
        return demo.snapshot()
    finally:
        await demo.stop()
