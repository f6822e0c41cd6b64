import asyncio
import logging

import pytest

from federation.model.failures import explain
from federation.runtime.retrying import with_backoff


def test_a_failure_without_text_is_named_by_its_type() -> None:
    assert explain(TimeoutError()) == "TimeoutError"
    assert explain(ValueError("  ")) == "ValueError"
    assert explain(ValueError("bad port 0")) == "ValueError: bad port 0"


async def test_a_retried_timeout_says_what_timed_out(caplog: pytest.LogCaptureFixture) -> None:
    """The retry's log line names an attempt that timed out (asyncio's timeout has no text: the
    line read "ensure streams failed (attempt 1): ; retrying")."""

    async def hangs() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.WARNING), pytest.raises(TimeoutError):
        await with_backoff("ensure streams", hangs, [0.01], attempt_timeout=0.01)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("ensure streams failed (attempt 1): TimeoutError; retrying")
    assert lines[1] == "ensure streams failed after 2 attempts: TimeoutError"
