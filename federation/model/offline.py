"""Offline weights: the input format of ``federation weights`` and its evaluation.

The operator's question "what would the gateway do?" answered from a file of per-backend load
snapshots, with the same pure policy the agent runs (stateless: no smoothing history).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from federation.model.loads import QUEUE_LIMIT
from federation.model.pools import LOCAL_BACKEND
from federation.model.weights import BackendWeight, WeightPolicy, backend_load, compute_weights

Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0)]
# What an EPP's state can be ("ok" or one of ``weights.UNHEALTHY_STATUSES``); anything else is
# a typo to refuse.
EppStatus = Literal["ok", "unreachable", "no-endpoints", "shedding", "invalid"]


class BackendSnapshot(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One backend's load, as a load report would carry it, plus its age in seconds."""

    ready_pods: Annotated[int, msgspec.Meta(ge=0)]
    kv_cache_utilization: Ratio = 0.0
    queue_size: NonNegative = 0.0
    running_requests: NonNegative = 0.0
    saturation: Ratio = 0.0
    epp_status: EppStatus = "ok"
    age: NonNegative = 0.0
    # Rates in requests/s, as a report of this version carries them (all optional).
    arrival_rate: NonNegative | None = None
    completion_rate: NonNegative | None = None
    capacity_rate: NonNegative | None = None
    demand_rate: NonNegative | None = None  # as a gateway counts it; else arrival_rate stands in


class PolicyOverrides(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lease: Annotated[float, msgspec.Meta(gt=0)] | None = None
    spill_threshold: Ratio | None = None
    target_utilization: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    equalize_up_to: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    remote_cap: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    overflow_ratio: Annotated[float, msgspec.Meta(ge=0)] | None = None
    mode: Literal["capacity", "static", "local-only"] | None = None


class LoadsFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Strict on purpose: a typo in an operator's file must be an error, not a silent default."""

    backends: dict[str, BackendSnapshot]
    pool: str = ""
    policy: PolicyOverrides = msgspec.field(default_factory=PolicyOverrides)


def parse_loads(data: bytes) -> LoadsFile:
    """Parse and validate; raises ``ValueError`` with a readable message."""
    try:
        parsed = msgspec.json.decode(data, type=LoadsFile)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(str(exc)) from None
    if not parsed.backends:
        raise ValueError("`backends` is empty: name at least one cluster (or `local`)")
    return parsed


def policy_for(loads: LoadsFile) -> WeightPolicy:
    overrides = {k: v for k, v in msgspec.structs.asdict(loads.policy).items() if v is not None}
    return WeightPolicy(**overrides)


def here_of(loads: LoadsFile, local_cluster: str | None) -> str | None:
    """``local`` when the file has it, else the cluster named by ``--local`` if present."""
    if LOCAL_BACKEND in loads.backends:
        return LOCAL_BACKEND
    return local_cluster if local_cluster in loads.backends else None


def offline_weights(loads: LoadsFile, local_cluster: str | None) -> dict[str, BackendWeight]:
    # The agent's own reduction: saturation is the strongest of the given saturation, the
    # KV-cache utilization and the queue against its limit (the queue also counts as backlog).
    backends = {
        name: backend_load(
            ready_pods=b.ready_pods,
            saturation=max(b.saturation, min(1.0, b.queue_size / QUEUE_LIMIT)),
            kv_cache=b.kv_cache_utilization,
            status=b.epp_status,
            age=b.age,
            queue_size=b.queue_size,
            demand_rate=b.demand_rate,
            arrival_rate=b.arrival_rate,
            completion_rate=b.completion_rate,
            capacity_rate=b.capacity_rate,
        )
        for name, b in loads.backends.items()
    }
    return compute_weights(backends, policy_for(loads), here=here_of(loads, local_cluster))
