"""Escalating retries: a network call gets the settings' backoff, then fails loudly — or, for
start-up, goes on at the last delay until it works."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from federation.model.failures import explain

log = logging.getLogger(__name__)
T = TypeVar("T")


async def with_backoff(
    what: str,
    call: Callable[[], Awaitable[T]],
    backoff: Sequence[float],
    *,
    attempt_timeout: float,
    forever: bool = False,
) -> T:
    """Run ``call`` under ``attempt_timeout``; on failure wait the next backoff delay, try again.

    After the last delay the error propagates (the caller decides whether that is fatal), unless
    ``forever``: then it is tried again at the last delay until it works. Each wait is jittered
    (0.5-1.5x), so a hundred agents started at once do not retry in lockstep against the
    JetStream meta layer they all overloaded together.
    """
    delays = itertools.chain(backoff, itertools.repeat(backoff[-1])) if forever else iter(
        [*backoff, None]
    )  # fmt: skip
    for attempt, delay in enumerate(delays, start=1):
        try:
            async with asyncio.timeout(attempt_timeout):
                return await call()
        except Exception as exc:  # any failure of the call; cancellation still propagates
            if delay is None:
                log.error("%s failed after %d attempts: %s", what, attempt, explain(exc))
                raise
            wait = delay * random.uniform(0.5, 1.5)
            log.warning(
                "%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, explain(exc), wait
            )
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
