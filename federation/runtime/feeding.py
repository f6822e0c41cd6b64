"""Feeding the gateways: every sink of import views, each retried and resynced on its own.

A feed (the HTTP weights endpoint, HAProxy's runtime API, Envoy EDS files, the Kubernetes
objects) gets the full set of views whenever they change. One that fails — a socket gone, HAProxy
restarting, a full disk, the API server away — is retried on the settings' backoff sequence
(staying at its last step), counted and shown in ``federation status``; it never delays or stops
the others. Every feed is also given the current views every ``resync`` seconds even when nothing
changed, so a gateway that lost its state (HAProxy restarted with an empty backend) is put back
without waiting for the next weight change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federation.model.failures import explain
from federation.model.pools import PoolKey
from federation.model.views import ImportView
from federation.runtime.ports import ExplainingSink, ImportSink, RefusingSink

log = logging.getLogger(__name__)


@dataclass
class FeedState:
    """How one feed is doing: what ``status`` and ``/metrics`` show."""

    failures: int = 0  # failed applies, ever
    consecutive: int = 0  # failed applies since the last success
    last_error: str = ""
    last_ok_at: float | None = None  # loop time of the last success
    retry_at: float = 0.0  # loop time before which a failed feed is not tried again
    fed: bool = False  # has taken the newest views

    @property
    def healthy(self) -> bool:
        return self.last_ok_at is not None and self.consecutive == 0


class Feeds:
    """The named feeds of one agent, in the order given (fast gateway feeds first)."""

    def __init__(
        self,
        sinks: Mapping[str, ImportSink],
        *,
        backoff: Sequence[float],
        timeout: float,
        resync: float,
        clock: Callable[[], float],
        agent: str = "",
    ) -> None:
        self.sinks = dict(sinks)
        self.states = {name: FeedState() for name in self.sinks}
        self.backoff = tuple(backoff)
        self.timeout = timeout
        self.resync = resync
        self.clock = clock
        self.agent = agent

    def changed(self) -> None:
        """New views exist: every feed must take them."""
        for state in self.states.values():
            state.fed = False

    def due(self, name: str, now: float) -> bool:
        state = self.states[name]
        if now < state.retry_at:
            return False
        if not state.fed:
            return True
        return state.last_ok_at is None or now - state.last_ok_at >= self.resync

    async def feed(self, views: Mapping[PoolKey, ImportView]) -> bool:
        """Give the views to every feed that is due; True if every feed now holds them."""
        for name, sink in self.sinks.items():
            now = self.clock()
            if self.due(name, now):
                await self._apply(name, sink, views, now)
        return all(state.fed for state in self.states.values())

    async def _apply(
        self, name: str, sink: ImportSink, views: Mapping[PoolKey, ImportView], now: float
    ) -> None:
        state = self.states[name]
        try:
            async with asyncio.timeout(self.timeout):
                await sink.apply(views)
        except Exception as exc:  # one feed's outage must not stop the others or the agent
            state.failures += 1
            state.consecutive += 1
            state.last_error = explain(exc)[:500]
            delay = self.backoff[min(state.consecutive, len(self.backoff)) - 1]
            state.retry_at = now + delay
            log.warning(
                "agent %s: feed %s failed (%d in a row; retry in %.1fs): %s",
                self.agent, name, state.consecutive, delay, state.last_error,
            )  # fmt: skip
            return
        if state.consecutive:
            log.info("agent %s: feed %s recovered", self.agent, name)
        state.consecutive, state.fed, state.last_ok_at, state.retry_at = 0, True, now, 0.0

    def refused(self) -> dict[PoolKey, str]:
        """Imports some feed could not materialize, with why (they are not acknowledged)."""
        out: dict[PoolKey, str] = {}
        for sink in self.sinks.values():
            if isinstance(sink, RefusingSink):
                out.update(sink.refused)
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        doc: dict[str, dict[str, Any]] = {}
        for name, state in self.states.items():
            entry: dict[str, Any] = {
                "healthy": state.healthy,
                "failures": state.failures,
                "consecutive_failures": state.consecutive,
                "last_error": state.last_error or None,
                "last_ok_age_s": (
                    None if state.last_ok_at is None else round(now - state.last_ok_at, 3)
                ),
            }
            sink = self.sinks[name]
            if isinstance(sink, ExplainingSink):
                entry["notes"] = dict(sink.notes())
            doc[name] = entry
        return doc
