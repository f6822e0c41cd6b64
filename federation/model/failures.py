"""How a failure reads in a log line or a status field."""

from __future__ import annotations


def explain(exc: BaseException) -> str:
    """The exception's type and text: some have no text (asyncio's timeouts, nats-py errors
    raised without arguments), and "failed: " with nothing after it tells an operator nothing."""
    text = str(exc).strip()
    name = type(exc).__name__
    return f"{name}: {text}" if text else name
