"""A NATS password kept in a file (a mounted Secret), handed to the bus again when it changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from federation.adapters.watched_files import Watched
from federation.model.failures import explain

log = logging.getLogger(__name__)


class PasswordFile:
    def __init__(self, path: Path, apply: Callable[[str], None], every: float = 10.0) -> None:
        self._file = Watched(path, reload_every=0.0)
        self._apply = apply
        self.every = every
        self.changes = 0
        self.value = ""
        self.check()

    def check(self) -> bool:
        if not self._file.changed():
            return False
        try:
            value = self._file.path.read_text().strip()
        except OSError as exc:
            log.error("NATS password file unreadable, keeping the current one: %s", explain(exc))
            return False
        if not value or value == self.value:
            return False
        self.value = value
        self._apply(value)
        self.changes += 1
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if self.check():
                log.info("NATS password changed; used from the next connection on")
