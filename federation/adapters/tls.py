"""TLS to NATS: a client context that picks up rotated certificates without a restart.

nats-py keeps the ``ssl.SSLContext`` it was given and uses it for every (re)connection, and a
context's certificate chain and trust store can be reloaded in place, so re-reading the files
when they change is enough: the next connection — a reconnect, or the one after the server drops
us because our old certificate expired — presents the new certificate.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from federation.model.failures import explain

log = logging.getLogger(__name__)


class ReloadingTls:
    def __init__(self, ca: Path, cert: Path | None = None, key: Path | None = None) -> None:
        self.ca, self.cert, self.key = ca, cert, key
        self.context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self.reloads = 0
        self._stamps = self._read_stamps()
        self._load()

    def _read_stamps(self) -> tuple[int, ...]:
        return tuple(p.stat().st_mtime_ns for p in (self.ca, self.cert, self.key) if p is not None)

    def _load(self) -> None:
        self.context.load_verify_locations(cafile=str(self.ca))
        if self.cert is not None:
            self.context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)

    def reload_if_changed(self) -> bool:
        try:
            stamps = self._read_stamps()
        except OSError as exc:
            log.error("TLS files unreadable, keeping the current ones: %s", explain(exc))
            return False
        if stamps == self._stamps:
            return False
        try:
            self._load()
        except (OSError, ssl.SSLError) as exc:  # half-written files: try again next time
            log.error("TLS reload failed, keeping the current certificates: %s", explain(exc))
            return False
        self._stamps = stamps
        self.reloads += 1
        log.info("TLS certificates reloaded")
        return True

    async def run(self, every: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.reload_if_changed()
