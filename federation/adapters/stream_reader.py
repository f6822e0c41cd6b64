"""Reading the federation streams for replay: from a live NATS, or from a copy of a JetStream
store served by an embedded nats-server.

Reading never changes what it reads: an ephemeral pull consumer with no acks and a short
inactivity threshold (the server removes it), and an offline store is copied before a standalone
nats-server opens it (a standalone server recovers a clustered server's streams from disk).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

FETCH_BATCH = 1000
UNAVAILABLE_RETRIES = 20


@dataclass(frozen=True)
class StoredMessage:
    stream: str
    sequence: int  # the stream's sequence number
    stored_at: float  # when the stream stored it (wall-clock seconds)
    subject: str
    data: bytes


class StreamReader:
    def __init__(self, url: str) -> None:
        self.url = url
        self._nc: Client | None = None

    async def __aenter__(self) -> StreamReader:
        self._nc = await nats.connect(
            self.url, name="federation-replay", allow_reconnect=False, connect_timeout=5
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def streams(self, prefix: str) -> list[str]:
        assert self._nc is not None
        js = self._nc.jetstream()
        names = await js.streams_info()
        return sorted(n for s in names if (n := s.config.name) and n.startswith(prefix))

    async def read(self, stream: str) -> list[StoredMessage]:
        """Every message the stream holds, in stream order."""
        assert self._nc is not None
        js = self._nc.jetstream()
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            return []
        if info.state.messages == 0:
            return []
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
        )
        sub = await js.pull_subscribe(">", stream=stream, config=config)
        out: list[StoredMessage] = []
        unavailable = 0
        try:
            while True:
                try:
                    batch = await sub.fetch(FETCH_BATCH, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    break
                except ServiceUnavailableError:
                    # A consumer just created in another NATS cluster: until its interest has
                    # crossed the gateway, pull requests get 503 "no responders". Seen on CI.
                    unavailable += 1
                    if unavailable > UNAVAILABLE_RETRIES:
                        raise
                    await asyncio.sleep(0.1 * unavailable)
                    continue
                for m in batch:
                    md = m.metadata
                    stamp = md.timestamp.timestamp() if md.timestamp else 0.0
                    out.append(StoredMessage(stream, md.sequence.stream, stamp, m.subject, m.data))
                if not batch or batch[-1].metadata.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out
