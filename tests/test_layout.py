"""The product stands without the kit: `federation agent` imports no kit module or dependency."""

from __future__ import annotations

import subprocess
import sys

KIT = ("federation.kit", "kmock", "jsonpatch")


def test_the_agent_needs_no_kit_module_and_no_kit_dependency() -> None:
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['federation', 'agent', '--help']\n"
        "try:\n"
        "    runpy.run_module('federation', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({KIT!r}))\n"
        "print('LOADED', bad)\n"
        "import federation.app.process, federation.app.replay, federation.tables\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({KIT!r}))\n"
        "print('LOADED', bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "--haproxy-socket" in out  # the agent's help was printed
    assert out.count("LOADED []") == 2, out
