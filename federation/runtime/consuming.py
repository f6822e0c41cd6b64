"""Consuming: checking each delivered event and applying it to this cluster's beliefs.

A delivery is acknowledged only after its effect is applied. A bad message (malformed, oversized,
unknown type, a subject that does not match its payload, an unknown cluster) is terminated, logged
and counted by reason: it can never succeed, so it must not be redelivered, and it never crashes
the agent or disturbs what was applied before it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection

from opentelemetry import propagate, trace

from federation import messages
from federation.messages import Event, InvalidEvent
from federation.model.beliefs import Beliefs, Outcome
from federation.model.counts import EventCounts
from federation.runtime.ports import Delivery, Verifier
from federation.runtime.publishing import messaging_attributes

log = logging.getLogger(__name__)

# Sequences are a hybrid of the publisher's clock (microseconds) and a counter, so a sequence
# far ahead of our clock can only be hostile: accepted, it would make every later honest event
# on that subject look stale. Clocks are assumed to agree within this much.
MAX_CLOCK_SKEW = 300.0
# Load reports and heartbeats are only worth anything while fresh (a lease is seconds), so one
# older than this is a replay, not news. Exports are full state that stays true for as long as it
# is the newest on its subject, so only their per-subject sequence guards them against replays.
MAX_REPORT_AGE = 600.0


def check(
    delivery: Delivery,
    clusterset: str,
    members: Collection[str],
    now: float,
    verifier: Verifier | None = None,
) -> Event:
    """The event in a delivery, or :class:`InvalidEvent` saying why it cannot be trusted."""
    event = messages.decode(delivery.data)
    expected = messages.subject_for(clusterset, event)
    if delivery.subject != expected:
        raise InvalidEvent(
            "subject-mismatch", f"payload belongs on {expected}, arrived on {delivery.subject}"
        )
    if event.cluster not in members:
        raise InvalidEvent("unknown-cluster", f"{event.cluster!r} is not a member")
    if messages.highest_sequence(event) > (now + MAX_CLOCK_SKEW) * 1_000_000:
        raise InvalidEvent(
            "future-sequence",
            f"sequence {messages.highest_sequence(event)} is ahead "
            f"of this clock by more than {MAX_CLOCK_SKEW:g}s",
        )
    exports = messages.ExportEvent | messages.ExportSet
    if not isinstance(event, exports) and event.published_at < now - MAX_REPORT_AGE:
        raise InvalidEvent(
            "expired", f"published {now - event.published_at:.0f}s ago (> {MAX_REPORT_AGE:g}s)"
        )
    if verifier is not None:
        reason = verifier.verify(delivery.subject, delivery.data, delivery.headers, event.cluster)
        if reason is not None:
            raise InvalidEvent(reason, f"signature check failed for cluster {event.cluster!r}")
    return event


async def consume_one(
    delivery: Delivery,
    *,
    beliefs: Beliefs,
    clusterset: str,
    members: Collection[str],
    counts: EventCounts,
    wall: Callable[[], float],
    cluster: str = "",
    tracer: trace.Tracer | None = None,
    verifier: Verifier | None = None,
    received_at: float | None = None,
) -> Event | None:
    """Apply one delivery; return the event when it changed the beliefs.

    ``received_at`` (default: now) is when it reached this cluster, on this cluster's clock.

    With a ``tracer``, traced as a CONSUMER span whose parent is the publisher's span (from
    ``traceparent``), with the apply as its child: one trace from the exporting cluster to this
    one. Without one (nothing exports this process's spans), no span at all: even the API's
    no-op spans cost a third of an event's handling, on every event from every peer.
    """
    with _consumer_span(tracer, delivery, cluster) as span:
        try:
            event = check(delivery, clusterset, members, wall(), verifier)
        except InvalidEvent as exc:
            counts.rejected[exc.reason] += 1
            if span is not None:
                span.set_attribute("federation.rejected", exc.reason)
            log.warning("rejected event on %s: %s", delivery.subject, exc)
            await delivery.term()
            return None
        at = wall() if received_at is None else received_at
        with _span(tracer, f"apply {type(event).__name__}") as applying:
            outcome = beliefs.apply(event, at)
            if applying is not None:
                applying.set_attribute("federation.outcome", outcome.value)
        await delivery.ack()
    if outcome is Outcome.APPLIED:
        counts.applied += 1
        return event
    if outcome is Outcome.DUPLICATE:
        counts.duplicates += 1
    else:
        counts.stale += 1
    return None


def _consumer_span(
    tracer: trace.Tracer | None, delivery: Delivery, cluster: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    if tracer is None:
        return contextlib.nullcontext()
    return tracer.start_as_current_span(
        "process event",
        context=propagate.extract(dict(delivery.headers)),
        kind=trace.SpanKind.CONSUMER,
        attributes=messaging_attributes(delivery.subject, delivery.data, cluster),
    )


def _span(
    tracer: trace.Tracer | None, name: str
) -> contextlib.AbstractContextManager[trace.Span | None]:
    return contextlib.nullcontext() if tracer is None else tracer.start_as_current_span(name)
