"""Without a tracer (nothing exports this process's spans), the hot paths make no spans and
live events go without headers; with one, one trace still runs from publish to apply."""

from __future__ import annotations

import time
from collections.abc import Mapping

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from federation import messages
from federation.adapters.bus import LiveDelivery
from federation.model.beliefs import Beliefs
from federation.model.counts import EventCounts
from federation.model.loads import LoadSample
from federation.model.pools import EXPORT_VALUE, LocalPool
from federation.runtime.consuming import consume_one
from federation.runtime.publishing import Publisher


class HeaderBus:
    """Keeps each publish as the live delivery a peer would hear, with its id and headers."""

    def __init__(self) -> None:
        self.sent: list[tuple[str | None, LiveDelivery]] = []

    async def publish(
        self, subject: str, payload: bytes, msg_id: str | None, headers: Mapping[str, str]
    ) -> bool:
        self.sent.append((msg_id, LiveDelivery(subject, payload, dict(headers))))
        return True


def _pool() -> LocalPool:
    return LocalPool(namespace="llm", name="chat", target_ports=(8000,), export=EXPORT_VALUE)


async def _publish(tracer: trace.Tracer | None) -> HeaderBus:
    bus = HeaderBus()
    pub = Publisher(
        bus=bus, clusterset="cs", cluster="a", wall=time.time, counts=EventCounts(),
        keepalive=3.0, tracer=tracer,
    )  # type: ignore[arg-type]  # fmt: skip
    await pub.sync_exports({_pool().key: _pool()})
    sample = LoadSample(observed_at=time.time(), ready_pods=2, saturation=0.4)
    await pub.publish_loads([(_pool(), sample)])
    return bus


async def _consume(delivery: LiveDelivery, tracer: trace.Tracer | None) -> messages.Event | None:
    return await consume_one(
        delivery, beliefs=Beliefs(), clusterset="cs", members=("a", "b"),
        counts=EventCounts(), wall=time.time, cluster="b", tracer=tracer,
    )  # fmt: skip


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> tuple[InMemorySpanExporter, trace.Tracer]:
    """An SDK tracer that keeps its spans, also returned by ``trace.get_tracer``: code that
    fell back on the global tracer would leave spans here."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: tracer)
    return exporter, tracer


async def test_untraced_live_events_go_bare_and_make_no_spans(
    recorded: tuple[InMemorySpanExporter, trace.Tracer],
) -> None:
    exporter, _ = recorded
    bus = await _publish(None)
    (export_id, export), (digest_id, digest) = bus.sent
    assert isinstance(messages.decode(export.data), messages.ExportSet)
    assert export_id is not None  # exports stay de-duplicated by the server
    assert messages.EXPORT_SEQ_HEADER in export.headers
    assert isinstance(messages.decode(digest.data), messages.LoadDigest)
    assert digest_id is None
    assert digest.headers == {}  # no HMSG for every peer to parse
    assert await _consume(digest, None) is not None
    assert exporter.get_finished_spans() == ()


async def test_traced_publish_and_apply_are_one_trace(
    recorded: tuple[InMemorySpanExporter, trace.Tracer],
) -> None:
    exporter, tracer = recorded
    bus = await _publish(tracer)
    _, digest = bus.sent[1]
    assert "traceparent" in digest.headers
    assert await _consume(digest, tracer) is not None
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish, process, apply = (
        spans["publish LoadDigest"],
        spans["process event"],
        spans["apply LoadDigest"],
    )
    assert publish.context.trace_id == process.context.trace_id == apply.context.trace_id
    assert process.parent is not None
    assert process.parent.span_id == publish.context.span_id
    assert apply.parent is not None
    assert apply.parent.span_id == process.context.span_id
