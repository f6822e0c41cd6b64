"""Load samples: one reading of a pool's Endpoint Picker, and when it is worth publishing."""

from __future__ import annotations

from dataclasses import dataclass

from federation.model.weights import BackendLoad, clamp01


@dataclass(frozen=True, kw_only=True)
class LoadSample:
    observed_at: float  # wall-clock seconds
    ready_pods: int = 0
    kv_cache_utilization: float = 0.0
    queue_size: float = 0.0
    running_requests: float = 0.0
    saturation: float = 0.0
    epp_status: str = "ok"

    def as_backend_load(self, now: float) -> BackendLoad:
        return BackendLoad(
            ready_pods=max(0, self.ready_pods),
            saturation=clamp01(max(self.saturation, self.kv_cache_utilization)),
            status=self.epp_status,
            age=max(0.0, now - self.observed_at),
        )


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
    deltas = (
        abs(previous.saturation - current.saturation),
        abs(previous.kv_cache_utilization - current.kv_cache_utilization),
    )
    return max(deltas) >= threshold
