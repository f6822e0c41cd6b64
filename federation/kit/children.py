"""Child processes that never outlive their parent: nats-servers, HAProxies, store servers.

On Linux a child can ask the kernel for a signal when its parent dies (``PR_SET_PDEATHSIG``);
set between fork and exec, so a ``kill -9`` of the demo, a benchmark or a test run takes its
servers with it. Elsewhere this is a no-op (the SIGTERM/SIGINT handlers still clean up).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A ``preexec_fn``: SIGKILL this child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
