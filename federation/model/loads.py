"""Load samples: one reading of a pool's Endpoint Picker, and when it is worth publishing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from federation.model.weights import BackendLoad, backend_load

# EPP pool metrics, per signal: the classic name first, then the llm-d router's.
SIGNALS: Final = {
    "ready_pods": ("inference_pool_ready_pods", "llm_d_epp_ready_endpoints"),
    "kv_cache_utilization": (
        "inference_pool_average_kv_cache_utilization",
        "llm_d_epp_average_kv_cache_utilization",
    ),
    "queue_size": ("inference_pool_average_queue_size", "llm_d_epp_average_queue_size"),
    "running_requests": (
        "inference_pool_average_running_requests",
        "llm_d_epp_average_running_requests",
    ),
    "flow_control_saturation": ("inference_extension_flow_control_pool_saturation",),
}
# EPP counters (summed over their series: per objective and target model), whose rates the agent
# publishes: requests that reached the pool, and those completed (the duration histogram's count).
COUNTERS: Final = {
    "requests_total": ("inference_objective_request_total", "inference_model_request_total"),
    "completions_total": (
        "inference_objective_request_duration_seconds_count",
        "inference_model_request_duration_seconds_count",
    ),
}
COUNTER_NAMES: Final = frozenset(name for names in COUNTERS.values() for name in names)
METRIC_NAMES: Final = (
    frozenset(name for names in SIGNALS.values() for name in names) | COUNTER_NAMES
)
RATE_CHANGE: Final = 0.05  # of capacity: a rate move worth a report before the keepalive
QUEUE_LIMIT: Final = 5.0  # average queue per pod that counts as saturated (EPP's critical level)


class InvalidMetrics(ValueError):
    """Metrics that cannot describe a pool's load (missing, NaN, negative, out of range)."""


@dataclass(frozen=True, kw_only=True)
class LoadSample:
    observed_at: float  # wall-clock seconds
    ready_pods: int = 0
    kv_cache_utilization: float = 0.0
    queue_size: float = 0.0
    running_requests: float = 0.0
    saturation: float = 0.0
    epp_status: str = "ok"
    arrival_rate: float | None = None  # requests/s; None until two counter readings exist
    completion_rate: float | None = None
    demand_rate: float | None = None  # measured at this cluster's gateway, where one can count
    capacity_rate: float | None = None  # requests/s when full (``rates.CapacityMeter``)
    requests_total: float | None = None  # the EPP's counters, as read (rates come from them)
    completions_total: float | None = None

    def as_backend_load(self, now: float) -> BackendLoad:
        return backend_load(
            ready_pods=self.ready_pods, saturation=self.saturation,
            kv_cache=self.kv_cache_utilization, status=self.epp_status, age=now - self.observed_at,
            queue_size=self.queue_size, demand_rate=self.demand_rate,
            arrival_rate=self.arrival_rate, completion_rate=self.completion_rate,
            capacity_rate=self.capacity_rate, sampled_at=self.observed_at,
        )  # fmt: skip


def worth_publishing(
    previous: LoadSample | None,
    current: LoadSample,
    *,
    last_published_at: float | None,
    now: float,
    threshold: float,
    keepalive: float,
) -> bool:
    """Publish on a material change, or as a keepalive so peers' leases stay renewed."""
    if previous is None or last_published_at is None:
        return True
    if now - last_published_at >= keepalive:
        return True
    if (previous.ready_pods, previous.epp_status) != (current.ready_pods, current.epp_status):
        return True
    deltas = [
        abs(previous.saturation - current.saturation),
        abs(previous.kv_cache_utilization - current.kv_cache_utilization),
        # The queue, as saturation counts it (a queue under a fuller KV cache moves no
        # saturation, and the spill plan still weighs it as backlog).
        abs(previous.queue_size - current.queue_size) / QUEUE_LIMIT,
    ]
    if max(deltas) >= threshold:
        return True
    # A rate moved by RATE_CHANGE of the pool's capacity (its utilization would move that much),
    # or appeared or vanished: what the spill plan reads changed. Coarser than the gauges: rates
    # over a few seconds of Poisson arrivals move by several percent on their own.
    scale = current.capacity_rate or previous.capacity_rate
    for before, now_ in (
        (previous.arrival_rate, current.arrival_rate),
        (previous.completion_rate, current.completion_rate),
        (previous.demand_rate, current.demand_rate),
        (previous.capacity_rate, current.capacity_rate),
    ):
        if (before is None) != (now_ is None):
            return True
        moved = before is not None and now_ is not None and abs(before - now_)
        if moved and moved / max(scale or 0.0, before or 0.0, now_ or 0.0, 1e-9) >= RATE_CHANGE:
            return True
    return False


def sample_from_metrics(
    values: Mapping[str, float], *, observed_at: float, queue_limit: float = QUEUE_LIMIT
) -> LoadSample:
    """Reduce one pool's EPP metrics (by metric name) to a load sample.

    Either metric family is accepted. Saturation is the strongest of KV-cache utilization, queue
    depth against ``queue_limit`` and flow-control saturation. No ready pods reads as the EPP's
    503 (``no-endpoints``); full flow-control saturation as its 429 (``shedding``).
    """
    found: dict[str, float] = {}
    for signal, names in SIGNALS.items():
        for name in names:
            if name in values:
                value = values[name]
                if not math.isfinite(value) or value < 0:
                    raise InvalidMetrics(f"{name} = {value!r}")
                found[signal] = value
                break
    if "ready_pods" not in found:
        raise InvalidMetrics(
            "no ready-pods metric (inference_pool_ready_pods or llm_d_epp_ready_endpoints)"
        )
    for ratio in ("kv_cache_utilization", "flow_control_saturation"):
        if found.get(ratio, 0.0) > 1.0:
            raise InvalidMetrics(f"{ratio} = {found[ratio]} is above 1")
    ready = int(found["ready_pods"])
    kv = found.get("kv_cache_utilization", 0.0)
    queue = found.get("queue_size", 0.0)
    flow = found.get("flow_control_saturation", 0.0)
    saturation = max(kv, min(1.0, queue / queue_limit), flow)
    status = "no-endpoints" if ready == 0 else "shedding" if flow >= 1.0 else "ok"
    counters: dict[str, float | None] = {}
    for counter, names in COUNTERS.items():
        reading = next((values[n] for n in names if n in values), None)
        if reading is not None and (not math.isfinite(reading) or reading < 0):
            raise InvalidMetrics(f"{counter} = {reading!r}")
        counters[counter] = reading
    return LoadSample(
        observed_at=observed_at,
        ready_pods=ready,
        kv_cache_utilization=kv,
        queue_size=queue,
        running_requests=found.get("running_requests", 0.0),
        saturation=saturation,
        epp_status=status,
        **counters,
    )
