"""A rogue NATS client, for the security drill and tests: it logs in with whatever credentials it
was given (user, password, TLS context: nats-py's connect options) and publishes whatever it is
told to. Returns what the server said."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import nats
from nats.aio.client import Client

from federation.model.failures import explain


async def publish_as(
    url: str,
    login: Mapping[str, Any],
    subject: str,
    payload: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    within: float = 3.0,
) -> str | None:
    """Publish once with JetStream; None when stored, else the server's refusal or the error.
    A refused login is a refusal like any other: returned, not raised, so callers can poll."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    try:
        nc: Client = await nats.connect(
            url, error_cb=on_error, allow_reconnect=False, name="rogue", **dict(login)
        )
    except Exception as exc:  # e.g. "nats: 'Authorization Violation'"
        return explain(exc)
    try:
        try:
            await nc.jetstream().publish(
                subject, payload, headers=dict(headers or {}), timeout=within
            )
        except Exception as exc:  # a refused publish gets no ack: the server's error says why
            await asyncio.sleep(0)
            return errors[0] if errors else explain(exc)
        return None
    finally:
        await nc.close()
