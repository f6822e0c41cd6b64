"""Stopping a task for sure, within a bound.

A single ``cancel()`` is not always enough: on Python 3.11 ``asyncio.wait_for`` can swallow a
cancellation that races its timeout (nats-py's fetch sits on one), and some client code catches
``CancelledError`` in flush/close paths and carries on. A TaskGroup cancels each child only once,
so a swallowed cancel would leave the agent running for ever. Hence two defences: every long-lived
loop calls :func:`raise_if_cancelling` on each turn, and :func:`stop_task` cancels again until the
task is done or the bound passes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_EVERY = 0.2  # seconds between repeated cancellations


async def stop_task(task: asyncio.Task[Any], *, within: float) -> bool:
    """Cancel ``task`` until it is done; False (and an error log) if it outlives ``within``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.error("task %s did not stop within %.1fs", task.get_name(), within)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_EVERY, remaining))
    return True


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that something below us swallowed (the task still records it)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
