"""Finite, escalating retries: a network call gets the settings' backoff, then fails loudly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def with_backoff(
    what: str,
    call: Callable[[], Awaitable[T]],
    backoff: Sequence[float],
    *,
    attempt_timeout: float,
) -> T:
    """Run ``call`` under ``attempt_timeout``; on failure wait the next backoff delay, try again.

    After the last delay the error propagates: the caller decides whether that is fatal.
    """
    for attempt, delay in enumerate([*backoff, None], start=1):
        try:
            async with asyncio.timeout(attempt_timeout):
                return await call()
        except Exception as exc:  # any failure of the call; cancellation still propagates
            if delay is None:
                log.error("%s failed after %d attempts: %s", what, attempt, exc)
                raise
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
