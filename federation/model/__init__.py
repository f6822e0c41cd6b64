"""The pure core: exports, beliefs about peers, desired imports, conflicts and weights.

Nothing here does I/O, awaits, or reads a clock: every function that depends on time takes ``now``
(wall-clock seconds) as an argument, so the same code serves the live agent, tests and replay.
"""
