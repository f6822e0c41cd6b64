"""A NATS nkey user seed kept in a file (a mounted Secret): this cluster's NATS login.

nats-py signs the server's nonce with the seed it reads from the file at every connection, but it
learns the *public* key once per client. So when the file changes to a new key (a rotation: the
servers list the old and the new public key for a while), the bus is told to log in again with a
new client; nothing restarts.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import nkeys

from federation.adapters.watched_files import Watched

log = logging.getLogger(__name__)


def create_user_seed(path: Path) -> str:
    """Write a new nkey user seed (mode 0600); return its public key (``U...``)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(seed + b"\n")
    return public_key(path)


def public_key(path: Path) -> str:
    """The public key of the user seed in ``path``; raises ``ValueError`` on anything else."""
    try:
        pair = nkeys.from_seed(bytearray(path.read_bytes().strip()))
        key = bytes(pair.public_key).decode()
    except (nkeys.NkeysError, ValueError, IndexError) as exc:
        raise ValueError(f"{path}: not an nkey seed ({type(exc).__name__})") from None
    if not key.startswith("U"):
        raise ValueError(f"{path}: an nkey seed, but not a user's")
    return key


class NkeyFile:
    def __init__(
        self, path: Path, renew: Callable[[], Awaitable[None]], every: float = 10.0
    ) -> None:
        self._file = Watched(path, reload_every=0.0)
        self._renew = renew
        self.every = every
        self.changes = 0
        self.errors = 0
        self.key = public_key(path)  # a broken file at start is a configuration error
        self._file.changed()

    async def check(self) -> bool:
        """Log in again when the file holds a new, valid key; a broken file keeps the old one."""
        if not self._file.changed():
            return False
        try:
            key = public_key(self._file.path)
        except (OSError, ValueError) as exc:
            self.errors += 1
            log.error("NATS nkey file unusable, keeping the current login: %s", exc)
            return False
        if key == self.key:
            return False
        await self._renew()
        self.key = key
        self.changes += 1
        log.info("NATS nkey changed to %s; logged in again", key)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.check()
            except Exception as exc:  # the servers may not know the new key yet: next round
                self.errors += 1
                log.warning("NATS login with the new nkey failed, retrying: %s", exc)
