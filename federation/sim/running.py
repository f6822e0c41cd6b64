"""Running the demo: start the supercluster and agents, show or snapshot, and clean up."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from rich.console import Console
from rich.live import Live

from federation.sim.demo import Demo, DemoOptions
from federation.tables import demo_view

REFRESH = 0.25  # seconds between live-table redraws


async def run_demo(
    options: DemoOptions, *, duration: float, console: Console | None
) -> dict[str, Any]:
    """Run for ``duration`` seconds after the agents start; return the final snapshot.

    With a console, draw the live table meanwhile; without one, stay silent (``--json``).
    """
    demo = await Demo.start(options)
    try:
        demo.start_agents()
        started = time.monotonic()
        deadline = started + duration
        convergence = asyncio.create_task(demo.wait_converged(duration), name="convergence")
        try:
            if console is None:
                while time.monotonic() < deadline:
                    demo.check_agents()
                    await asyncio.sleep(min(REFRESH, max(0.0, deadline - time.monotonic())))
            else:
                with Live(console=console, refresh_per_second=4, transient=False) as live:
                    while time.monotonic() < deadline:
                        demo.check_agents()
                        live.update(demo_view(demo, time.monotonic() - started, duration))
                        await asyncio.sleep(REFRESH)
        finally:
            convergence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await convergence
        demo.check_agents()
        return demo.snapshot()
    finally:
        await demo.stop()
