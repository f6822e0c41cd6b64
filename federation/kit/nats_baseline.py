"""Raw nats-py paths for benchmarks: the baseline the federation's figures are compared with,
bulk publishing to pre-fill streams, and publishing on plain NATS. No federation logic here, on
purpose."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    Placement,
    StreamConfig,
    StreamSource,
)

from federation import messages


async def create_raw_streams(url: str, local: str, remote: str) -> None:
    """RAW_LOCAL and RAW_OUT in NATS cluster ``local``; RAW_IN in ``remote`` sourcing RAW_OUT."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name, subject in (("RAW_LOCAL", "raw.local"), ("RAW_OUT", "raw.out"),
                              ("RAW_FILL", "raw.fill")):  # fmt: skip
            await js.add_stream(
                StreamConfig(name=name, subjects=[subject], placement=Placement(cluster=local))
            )
        await js.add_stream(
            StreamConfig(
                name="RAW_IN",
                placement=Placement(cluster=remote),
                sources=[StreamSource(name="RAW_OUT")],
            )
        )
    finally:
        await nc.close()


async def publish_deliver_latencies(
    pub_url: str, sub_url: str, stream: str, subject: str, count: int, size: int
) -> list[float]:
    """Publish ``count`` messages one by one (each acked) and time each until delivered."""
    pub, sub_nc = await nats.connect(pub_url), await nats.connect(sub_url)
    try:
        js_pub, js_sub = pub.jetstream(), sub_nc.jetstream()
        sub = await js_sub.pull_subscribe(
            ">", stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT),
        )  # fmt: skip
        sent: dict[int, float] = {}
        got: list[float] = []

        async def consume() -> None:
            while len(got) < count:
                try:
                    batch = await sub.fetch(512, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    continue
                now = time.perf_counter()
                for m in batch:
                    got.append(now - sent[int(m.data[:12])])
                    await m.ack()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.2)  # the consumer's first fetch is waiting: a real agent's state
        filler = b" " * (size - 12)
        for i in range(count):
            sent[i] = time.perf_counter()
            await js_pub.publish(subject, b"%012d" % i + filler)
            await asyncio.sleep(0.002)
        async with asyncio.timeout(30):
            await task
        return got
    finally:
        await pub.close()
        await sub_nc.close()


async def fill_then_consume(url: str, count: int, size: int) -> float:
    """Fill RAW_FILL with ``count`` messages of ``size`` bytes; return the fetch + ack rate/s."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        payload = b"x" * size
        for start in range(0, count, 500):
            n = min(count, start + 500) - start
            await asyncio.gather(*(js.publish("raw.fill", payload) for _ in range(n)))
        sub = await js.pull_subscribe(
            "raw.fill", stream="RAW_FILL", config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        began, done = time.perf_counter(), 0
        while done < count:
            for m in await sub.fetch(512, timeout=5.0):
                await m.ack()
                done += 1
        return count / (time.perf_counter() - began)
    finally:
        await nc.close()


async def publish_events(url: str, clusterset: str, events: list[messages.Event]) -> None:
    """Publish events to their subjects, 500 in flight at a time, each acked by JetStream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for start in range(0, len(events), 500):
            chunk = events[start : start + 500]
            await asyncio.gather(
                *(
                    js.publish(messages.subject_for(clusterset, e), messages.encode(e))
                    for e in chunk
                )
            )
    finally:
        await nc.close()


PlainPublish = Callable[[Sequence[messages.Event]], Awaitable[None]]


@contextlib.asynccontextmanager
async def plain_publisher(url: str, clusterset: str) -> AsyncIterator[PlainPublish]:
    """A function publishing events to their subjects on plain NATS (no JetStream ack), flushed
    after each call: how live events travel."""
    nc = await nats.connect(url)

    async def publish(events: Sequence[messages.Event]) -> None:
        for e in events:
            await nc.publish(messages.subject_for(clusterset, e), messages.encode(e))
        await nc.flush()

    try:
        yield publish
    finally:
        await nc.close()


async def wait_stream_holds(url: str, stream: str, count: int, within: float) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(within):
            while (await js.stream_info(stream)).state.messages < count:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    finally:
        await nc.close()
