"""Files that configuration is re-read from when they change (keys, bundles, passwords)."""

from __future__ import annotations

import time
from pathlib import Path


class Watched:
    """A file re-read when its modification time or size changes."""

    def __init__(self, path: Path, reload_every: float) -> None:
        self.path = path
        self.reload_every = reload_every
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0

    def changed(self) -> bool:
        now = time.monotonic()
        if self._stamp is not None and now - self._checked < self.reload_every:
            return False
        self._checked = now
        try:
            st = self.path.stat()
        except OSError:
            return False  # keep what we have; a missing file is logged by the caller's load
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        return True
