"""Prometheus metrics of one agent, served on its HTTP port at ``/metrics``.

Most figures are read from the agent's own state at scrape time (a custom collector), so there
is no second set of books to drift from the first: event counts by outcome and reason, weights
per import and backend, lease age per peer, consumer pending. Only the propagation lag is
observed as events are applied, into a histogram per peer.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from federation.model.beliefs import Beliefs
from federation.model.counts import EventCounts
from federation.model.gaps import SourceGaps
from federation.model.pools import PoolKey
from federation.model.views import ImportView

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class AgentState(Protocol):
    """What the collector reads; the runtime's Agent provides it."""

    @property
    def name(self) -> str: ...

    @property
    def views(self) -> Mapping[PoolKey, ImportView]: ...

    @property
    def counts(self) -> EventCounts: ...

    @property
    def beliefs(self) -> Beliefs: ...

    @property
    def gaps(self) -> SourceGaps: ...

    @property
    def pending(self) -> int: ...

    @property
    def insecure(self) -> bool: ...

    def clock_offsets(self) -> Mapping[str, float]:
        """Per peer: seconds its clock is ahead of ours (estimated)."""
        ...

    def feed_health(self) -> Mapping[str, tuple[bool, int]]:
        """Per gateway feed: (healthy, failures so far)."""
        ...

    def pacing(self) -> tuple[float, float]:
        """The event loop's recent lateness and the reconcile gap it makes, in seconds."""
        ...

    @property
    def lease_lapses(self) -> int:
        """Exporting peers (once heard) whose lease a weight step found run out, so far."""
        ...

    @property
    def live_acks_missed(self) -> int:
        """Live events whose stream ack was not taken within the request timeout, so far."""
        ...


class _StateCollector(Collector):
    def __init__(
        self, agent: AgentState, wall: Callable[[], float], max_clock_offset: float
    ) -> None:
        self.agent = agent
        self.wall = wall
        self.max_clock_offset = max_clock_offset

    def collect(self) -> Iterator[Metric]:
        a, c = self.agent, self.agent.counts
        received = CounterMetricFamily(
            "federation_events_received", "Events received, by outcome", labels=["outcome"]
        )
        for outcome, value in (
            ("applied", c.applied),
            ("duplicate", c.duplicates),
            ("stale", c.stale),
            ("rejected", sum(c.rejected.values())),
            ("superseded", c.superseded),
            ("dropped", c.dropped),
        ):
            received.add_metric([outcome], value)
        yield received
        rejected = CounterMetricFamily(
            "federation_events_rejected", "Events rejected, by reason", labels=["reason"]
        )
        for reason, value in sorted(c.rejected.items()):
            rejected.add_metric([reason], value)
        yield rejected
        published = CounterMetricFamily(
            "federation_events_published", "Events published, by type", labels=["type"]
        )
        for kind, value in sorted(c.published.items()):
            published.add_metric([kind], value)
        yield published
        yield CounterMetricFamily(
            "federation_publish_failures", "Failed publishes", value=c.publish_failures
        )
        yield CounterMetricFamily(
            "federation_sources_restarted",
            "Stalled inbound stream sources re-attached",
            value=c.sources_restarted,
        )
        repaired = CounterMetricFamily(
            "federation_streams_repaired",
            "Streams and the consumer recreated after their store was lost",
            labels=["stream"],
        )
        for stream, value in sorted(c.streams_repaired.items()):
            repaired.add_metric([stream], value)
        yield repaired
        gaps = CounterMetricFamily(
            "federation_sequence_gaps",
            "Peers' exports that never reached this cluster (gaps in their export counts)",
            labels=["peer"],
        )
        for peer in sorted(set(a.gaps.last) | set(a.gaps.missed)):  # every peer heard from
            gaps.add_metric([peer], a.gaps.missed[peer])
        yield gaps
        lateness, gap = a.pacing()
        yield GaugeMetricFamily(
            "federation_event_loop_lateness_seconds",
            "How late a 0.25 s timer of the agent fires (recent worst, halving every 5 s)",
            value=lateness,
        )
        yield GaugeMetricFamily(
            "federation_reconcile_gap_seconds",
            "The least time between two event-woken weight steps (stretched by a late loop)",
            value=gap,
        )
        yield CounterMetricFamily(
            "federation_peer_lease_lapses",
            "Exporting peers whose lease a weight step found run out (each weighs 0 until heard)",
            value=a.lease_lapses,
        )
        yield CounterMetricFamily(
            "federation_live_acks_missed",
            "Live events (beats, digests, load reports) sent without waiting whose stream ack was "
            "not taken within the request timeout (refused, no stream, lost, or this agent's "
            "loop too late): peers most likely heard them; replay may lack them",
            value=a.live_acks_missed,
        )
        yield GaugeMetricFamily(
            "federation_consumer_pending",
            "Messages waiting behind the last one delivered",
            value=a.pending,
        )
        now = self.wall()
        lease = GaugeMetricFamily(
            "federation_peer_lease_age_seconds",
            "Seconds since each peer was last heard",
            labels=["peer"],
        )
        for peer, heard in sorted(a.beliefs.heard_at.items()):
            lease.add_metric([peer], max(0.0, now - heard))
        yield lease
        weight = GaugeMetricFamily(
            "federation_import_weight",
            "Weight (0..1e6) per import and backend",
            labels=["import", "backend"],
        )
        for key, view in sorted(a.views.items()):
            for backend, w in view.weights.items():
                weight.add_metric([str(key), backend], w.weight)
        yield weight
        offsets = GaugeMetricFamily(
            "federation_peer_clock_offset_seconds",
            "Each peer's clock against this one (estimated; ages never use it)",
            labels=["peer"],
        )
        for peer, offset in sorted(a.clock_offsets().items()):
            offsets.add_metric([peer], offset)
        yield offsets
        yield GaugeMetricFamily(
            "federation_clock_offset_limit_seconds",
            "The offset beyond which FederationPeerClockSkew alerts (--max-clock-offset)",
            value=self.max_clock_offset,
        )
        yield GaugeMetricFamily(
            "federation_insecure",
            "1 when the agent runs without signed events or a protected NATS login (--insecure)",
            value=1 if a.insecure else 0,
        )
        health = a.feed_health()
        failures = CounterMetricFamily(
            "federation_feed_failures",
            "Failed applies of the views to a gateway feed (retried with backoff)",
            labels=["feed"],
        )
        healthy = GaugeMetricFamily(
            "federation_feed_healthy",
            "1 when the feed took the latest views, 0 while it is failing",
            labels=["feed"],
        )
        for feed, (ok, failed) in sorted(health.items()):
            failures.add_metric([feed], failed)
            healthy.add_metric([feed], 1 if ok else 0)
        yield failures
        yield healthy


class _KubeCollector(Collector):
    """The kube adapter's operations (writes, conflicts, errors) and refused imports."""

    def __init__(self, kube: KubeState) -> None:
        self.kube = kube

    def collect(self) -> Iterator[Metric]:
        ops = CounterMetricFamily(
            "federation_kube_operations",
            "Kubernetes API operations of the agent, by kind (writes, conflicts, errors)",
            labels=["operation"],
        )
        for operation, value in sorted(self.kube.counts.items()):
            ops.add_metric([operation], value)
        yield ops
        refused = GaugeMetricFamily(
            "federation_imports_refused",
            "Imports this cluster could not materialize, by reason (e.g. NamespaceMissing)",
            labels=["reason"],
        )
        for reason, value in sorted(Counter(self.kube.refused.values()).items()):
            refused.add_metric([reason], value)
        yield refused


class _FeedCollector(Collector):
    """What feeds with their own counters did (Gateway API writes and repairs, xDS ACKs...)."""

    def __init__(self, counts: Mapping[str, Counter[str]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        ops = CounterMetricFamily(
            "federation_feed_operations",
            "Operations of a gateway feed, by kind (writes, repairs, conflicts, NACKs, ...)",
            labels=["feed", "operation"],
        )
        for feed, counts in sorted(self.counts.items()):
            for operation, value in sorted(counts.items()):
                ops.add_metric([feed, operation], value)
        yield ops


class KubeState(Protocol):
    counts: Counter[str]
    refused: dict[PoolKey, str]


class AgentMetrics:
    """The registry of one agent. Built before the agent (which reports lags to
    :meth:`observe_lag`), then told which agent to read with :meth:`watch`."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        kube: KubeState | None = None,
        max_clock_offset: float = 30.0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.wall = wall
        self.max_clock_offset = max_clock_offset
        if kube is not None:
            self.registry.register(_KubeCollector(kube))
        self.lag = Histogram(
            "federation_propagation_lag_seconds",
            "Publish (peer clock) to applied (this clock), per peer",
            ["peer"],
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self._lag_of: dict[str, Histogram] = {}  # per peer (members only: bounded)

    def count_feeds(self, counts: Mapping[str, Counter[str]]) -> None:
        """Expose these feeds' counters as ``federation_feed_operations_total``."""
        if counts:
            self.registry.register(_FeedCollector(counts))

    def watch(self, agent: AgentState) -> None:
        self.registry.register(_StateCollector(agent, self.wall, self.max_clock_offset))

    def observe_lag(self, peer: str, seconds: float) -> None:
        # (Once per event received: the labelled child is looked up once per peer, not each time.)
        child = self._lag_of.get(peer)
        if child is None:
            child = self._lag_of[peer] = self.lag.labels(peer)
        child.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
