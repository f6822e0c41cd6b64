"""Live events heard on plain NATS, waiting to be applied: the newest per subject only.

Every live event (a heartbeat, a load digest, a per-pool load report) is its publisher's full
state on its subject, so a newer one makes an older one not yet applied worthless. An agent that
falls behind therefore applies the newest state of each peer once, not a backlog: its work per
second is bounded by the number of subjects, whatever the rate they are published at.
"""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar


class _HasSubject(Protocol):
    @property
    def subject(self) -> str: ...


D = TypeVar("D", bound=_HasSubject)

MAX_SUBJECTS = 65_536  # waiting at once; beyond it a new subject is dropped (a hostile flood)


class LiveMailbox(Generic[D]):
    def __init__(self, max_subjects: int = MAX_SUBJECTS) -> None:
        self._waiting: dict[str, D] = {}
        self._new = asyncio.Event()
        self._max = max_subjects
        self.superseded = 0  # replaced by a newer one on their subject before they were taken
        self.dropped = 0  # refused because too many subjects were waiting

    def put(self, delivery: D) -> None:
        subject = delivery.subject
        if subject in self._waiting:
            self.superseded += 1
        elif len(self._waiting) >= self._max:
            self.dropped += 1
            return
        self._waiting[subject] = delivery
        self._new.set()

    def holds(self, subject: str) -> bool:
        """Whether an event on ``subject`` is waiting to be taken."""
        return subject in self._waiting

    async def take(self, wait: float) -> list[D]:
        """Everything waiting (oldest subject first), waiting at most ``wait`` for the first;
        with ``wait`` 0, only what is waiting now, without giving the loop a turn."""
        if not self._waiting:
            if wait <= 0:
                return []
            self._new.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._new.wait()
            except TimeoutError:
                return []
        taken = list(self._waiting.values())
        self._waiting.clear()
        return taken
