"""Local InferencePools as the model sees them, and whether each one is exported."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NamedTuple

from federation.messages import EndpointAddress, ParentGateway

EXPORT_ANNOTATION: Final = "inference.networking.x-k8s.io/export"
EXPORT_VALUE: Final = "ClusterSet"
LOCAL_BACKEND: Final = "local"  # the backend name of a same-named pool this cluster does not export


class PoolKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, kw_only=True)
class LocalPool:
    """One InferencePool of this cluster, reduced to what federation needs."""

    namespace: str
    name: str
    target_ports: tuple[int, ...]
    app_protocol: str = "http"
    model: str = ""
    epp: EndpointAddress | None = None
    parents: tuple[ParentGateway, ...] = ()
    export: str | None = None  # the export annotation's value, if present
    metrics_url: str | None = None  # the EPP's Prometheus endpoint, scraped for load
    # Why this pool cannot be exported as it stands: (status reason, message), e.g. no
    # endpointPickerRef or an EPP Service that does not resolve. None when it can be.
    invalid: tuple[str, str] | None = None

    @property
    def key(self) -> PoolKey:
        return PoolKey(self.namespace, self.name)


class ExportState(enum.Enum):
    EXPORTED = "Exported"
    NOT_REQUESTED = "NotRequested"
    NOT_SUPPORTED = "NotSupported"
    INVALID = "Invalid"


@dataclass(frozen=True)
class ExportDecision:
    state: ExportState
    message: str
    reason: str = ""  # the status reason; the state's name unless the pool is invalid

    def __post_init__(self) -> None:
        if not self.reason:
            object.__setattr__(self, "reason", self.state.value)


def export_decision(pool: LocalPool) -> ExportDecision:
    """What the export annotation asks for. Only ``ClusterSet`` is supported (upstream rule)."""
    value = pool.export
    if value is None:
        return ExportDecision(ExportState.NOT_REQUESTED, f"no {EXPORT_ANNOTATION} annotation")
    if value == EXPORT_VALUE and pool.invalid is not None:
        return ExportDecision(ExportState.INVALID, pool.invalid[1], pool.invalid[0])
    if value == EXPORT_VALUE:
        return ExportDecision(ExportState.EXPORTED, "exported to the ClusterSet")
    shown = value if len(value) <= 64 else value[:61] + "..."
    return ExportDecision(
        ExportState.NOT_SUPPORTED,
        f"{EXPORT_ANNOTATION}={shown!r} is not supported; the only supported value is "
        f"{EXPORT_VALUE!r}",
    )


def is_exported(pool: LocalPool) -> bool:
    return export_decision(pool).state is ExportState.EXPORTED
