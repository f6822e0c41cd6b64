"""A NATS login kept in a file (a mounted Secret): an nkey seed or an operator-mode ``.creds``.

nats-py reads the file at every connection, but learns who it logs in as (the public key, the
user JWT) once per client. So when the file changes to a new identity (a rotation: the servers
accept the old and the new one for a while), the bus is told to log in again with a new client;
nothing restarts. A broken file keeps the current login (logged and counted).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from federation.adapters.watched_files import Watched
from federation.model.failures import explain

log = logging.getLogger(__name__)


class LoginFile:
    def __init__(
        self,
        path: Path,
        identify: Callable[[Path], str],
        renew: Callable[[], Awaitable[None]],
        *,
        what: str = "login",
        every: float = 10.0,
    ) -> None:
        self._file = Watched(path, reload_every=0.0)
        self._identify = identify
        self._renew = renew
        self.what = what
        self.every = every
        self.changes = 0
        self.errors = 0
        self.identity = identify(path)  # a broken file at start is a configuration error
        self._file.changed()
        self._retry = False  # the last login with a new identity failed: try it again

    async def check(self) -> bool:
        """Log in again when the file holds a new, valid identity; a broken file keeps the old."""
        if not self._file.changed() and not self._retry:
            return False
        try:
            identity = self._identify(self._file.path)
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.error(
                "NATS %s file unusable, keeping the current login: %s", self.what, explain(exc)
            )
            return False
        if identity == self.identity:
            self._retry = False
            return False
        self._retry = True  # until the new login is in
        await self._renew()
        self._retry = False
        self.identity = identity
        self.changes += 1
        log.info("NATS %s changed to %s; logged in again", self.what, identity)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception as exc:  # the servers may not accept the new login yet: next round
                self.errors += 1
                log.warning(
                    "NATS login with the new %s failed, retrying: %s", self.what, explain(exc)
                )
