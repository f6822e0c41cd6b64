"""Agent settings: parsed once from flags and environment, frozen afterwards."""

from __future__ import annotations

from dataclasses import dataclass, field

from federation.messages import is_label

DEFAULT_CONTROLLER_NAME = "inference-federation.io/agent"


class SettingsError(ValueError):
    """A setting that cannot work; the CLI prints it and exits 2."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    clusterset: str
    cluster: str
    members: tuple[str, ...]  # every cluster of the ClusterSet, this one included
    nats_url: str
    nats_cluster: str = ""  # the NATS cluster this cluster's streams live in; default: cluster
    controller_name: str = DEFAULT_CONTROLLER_NAME
    load_interval: float = 1.0  # seconds between EPP samples
    beat_interval: float = 2.0  # seconds between heartbeats
    reconcile_interval: float = 0.5  # seconds between periodic recomputations (ages move)
    lease: float = 10.0  # a peer silent this long weighs 0
    grace: float = 300.0  # a peer silent this long leaves exportingClusters
    request_timeout: float = 5.0  # every network await
    backoff: tuple[float, ...] = field(default=(0.2, 0.5, 1.0, 2.0, 5.0, 10.0))
    history_per_subject: int = 8  # export/load events kept per subject, for replay
    spill_threshold: float = 0.8  # local saturation at which traffic starts to spill
    slow_start: float = 30.0  # seconds over which a newly healthy remote ramps up

    def __post_init__(self) -> None:
        for what, value in (("clusterset", self.clusterset), ("cluster", self.cluster)):
            if not is_label(value):
                raise SettingsError(f"{what} {value!r} must be a DNS label (a-z, 0-9, '-')")
        for member in self.members:
            if not is_label(member):
                raise SettingsError(f"member {member!r} must be a DNS label")
        if self.cluster not in self.members:
            raise SettingsError(f"cluster {self.cluster!r} is not among members {self.members}")
        if not 0 < self.lease < self.grace:
            raise SettingsError(f"need 0 < lease ({self.lease}) < grace ({self.grace})")
        if not self.backoff:
            raise SettingsError("backoff needs at least one delay")
        if "/" not in self.controller_name:
            raise SettingsError(f"controller name {self.controller_name!r} must be DOMAIN/PATH")

    @property
    def placement_cluster(self) -> str:
        return self.nats_cluster or self.cluster
