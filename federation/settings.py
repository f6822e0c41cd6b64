"""Agent settings: parsed once from flags and environment, frozen afterwards."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from federation.messages import is_label

DEFAULT_CONTROLLER_NAME = "inference-federation.io/agent"
WEIGHTS_MODES = ("capacity", "static", "local-only")


class SettingsError(ValueError):
    """A setting that cannot work; the CLI prints it and exits 2."""


HAPROXY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")  # what HAProxy accepts as a proxy name


def tcp_address(address: str) -> tuple[str, int] | None:
    """``tcp://HOST:PORT`` → (host, port); None for a UNIX socket path; ValueError otherwise."""
    if not address.startswith("tcp://"):
        return None
    host, sep, port = address.removeprefix("tcp://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"HAProxy runtime address {address!r}: tcp://HOST:PORT or a socket path")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, kw_only=True)
class FeedSettings:
    """Which gateways the agent feeds, and how (README "Feeding the gateways")."""

    # HAProxy's runtime API (stats socket, level admin): a UNIX socket path or tcp://HOST:PORT.
    haproxy_socket: str | None = None
    # One HAProxy backend per import; {namespace} and {name} are the import's.
    haproxy_backend: str = "fed_{namespace}_{name}"
    haproxy_drain: float = 30.0  # seconds a withdrawn or dead backend's server stays at weight 0
    envoy_eds_dir: Path | None = None  # one EDS DiscoveryResponse file per import
    envoy_mode: str = "parent"  # endpoints: the parent Gateways (parent) or the EPP (endpoint)
    # Gateway API objects: a Service + EndpointSlice per remote backend, and the backendRefs of
    # HTTPRoutes labelled inference-federation.io/route-weights=true (needs Kubernetes).
    gateway_api: bool = True
    # xDS: an ADS gRPC server (EDS, state of the world) on this port; None: none. 0: any port.
    xds_port: int | None = None
    xds_host: str = "127.0.0.1"
    # Mutual TLS for the xDS server (all three, or none): re-read when they change.
    xds_cert: Path | None = None
    xds_key: Path | None = None
    xds_client_ca: Path | None = None
    # The weights annotation on InferencePoolImports: at most one write per import per interval,
    # and only for a move of at least the threshold (a backend starting or stopping: at once).
    annotation_interval: float = 10.0
    annotation_threshold: int = 50_000  # of 1,000,000: 5 points

    def __post_init__(self) -> None:
        try:
            sample = self.haproxy_backend.format(namespace="ns", name="pool")
        except (KeyError, IndexError, ValueError) as exc:
            raise SettingsError(
                f"HAProxy backend rule {self.haproxy_backend!r} may use only {{namespace}} "
                f"and {{name}}: {exc}"
            ) from None
        if "{namespace}" not in self.haproxy_backend or "{name}" not in self.haproxy_backend:
            raise SettingsError(
                f"HAProxy backend rule {self.haproxy_backend!r} needs both {{namespace}} and "
                "{name}: two imports must never share a backend"
            )
        if not HAPROXY_NAME.fullmatch(sample):
            raise SettingsError(
                f"HAProxy backend rule {self.haproxy_backend!r} gives {sample!r}: HAProxy names "
                "allow only letters, digits and '_.:-'"
            )
        tls = (self.xds_cert, self.xds_key, self.xds_client_ca)
        if any(p is not None for p in tls) and not all(p is not None for p in tls):
            raise SettingsError("xDS TLS needs a certificate, its key and the clients' CA")
        if self.xds_port is not None and not 0 <= self.xds_port < 65536:
            raise SettingsError(f"xDS port {self.xds_port} is not a port")
        if self.haproxy_drain < 0 or self.annotation_interval < 0:
            raise SettingsError("drain and write intervals cannot be negative")
        if not 0 <= self.annotation_threshold <= 1_000_000:
            raise SettingsError("the annotation threshold is a weight: 0..1,000,000")
        if self.haproxy_socket is not None:
            try:
                tcp_address(self.haproxy_socket)
            except ValueError as exc:
                raise SettingsError(str(exc)) from None
        if self.envoy_mode not in ("parent", "endpoint"):
            raise SettingsError(f"Envoy mode {self.envoy_mode!r}: parent or endpoint")


LOAD_MESSAGES = ("digest", "per-pool")
EXPORT_MESSAGES = ("set", "per-pool")


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
    # How weights are made: "capacity" (the rate plan), or fixed "static" / "local-only".
    weights_mode: str = "capacity"
    # Beyond the whole set's capacity, the cluster with the fewest ready pods takes what the
    # others cannot hold when the rest have this many times its pods; 0: never (README "Weights").
    overflow_ratio: float = 2.0
    slow_start: float = 30.0  # seconds over which a newly healthy remote ramps up
    feed_resync: float = 5.0  # seconds after which every feed is given the views again
    max_clock_offset: float = 30.0  # a peer's clock further off than this raises an alert
    # How load travels: one digest per cluster ("digest"), or one report per pool ("per-pool",
    # what agents before digests send: for a rollback, or pinning a fleet mid-upgrade).
    load_messages: str = "digest"
    # How exports travel: one set of all of a cluster's exports ("set"), or one event per pool
    # ("per-pool", what agents before sets send: for a rollback, or pinning a fleet mid-upgrade).
    export_messages: str = "set"
    # One inbound stream per NATS cluster, shared by every agent placed there (see bus.py).
    shared_inbound: bool = False
    feeds: FeedSettings = field(default_factory=FeedSettings)

    def __post_init__(self) -> None:
        for what, value in (("clusterset", self.clusterset), ("cluster", self.cluster)):
            if not is_label(value):
                raise SettingsError(f"{what} {value!r} must be a DNS label (a-z, 0-9, '-')")
        for member in self.members:
            if not is_label(member):
                raise SettingsError(f"member {member!r} must be a DNS label")
        if self.cluster not in self.members:
            raise SettingsError(f"cluster {self.cluster!r} is not among members {self.members}")
        if self.shared_inbound and not is_label(self.placement_cluster):
            # It names the shared stream, FED_IN_<cs>_at_<nats-cluster>.
            raise SettingsError(
                f"NATS cluster {self.placement_cluster!r} must be a DNS label with --shared-inbound"
            )
        if not 0 < self.lease < self.grace:
            raise SettingsError(f"need 0 < lease ({self.lease}) < grace ({self.grace})")
        if not self.backoff:
            raise SettingsError("backoff needs at least one delay")
        if self.load_messages not in LOAD_MESSAGES:
            raise SettingsError(f"load messages {self.load_messages!r}: digest or per-pool")
        if self.export_messages not in EXPORT_MESSAGES:
            raise SettingsError(f"export messages {self.export_messages!r}: set or per-pool")
        if self.weights_mode not in WEIGHTS_MODES:
            raise SettingsError(
                f"weights mode {self.weights_mode!r}: one of {', '.join(WEIGHTS_MODES)}"
            )
        if not (math.isfinite(self.overflow_ratio) and self.overflow_ratio >= 0):
            raise SettingsError(
                f"overflow ratio {self.overflow_ratio}: a finite number >= 0 (0: off)"
            )
        if "/" not in self.controller_name:
            raise SettingsError(f"controller name {self.controller_name!r} must be DOMAIN/PATH")

    @property
    def placement_cluster(self) -> str:
        return self.nats_cluster or self.cluster


def split_list(value: str) -> tuple[str, ...]:
    """A comma-separated flag value, blanks dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True, kw_only=True)
class ProcessOptions:
    """How this process reaches its Kubernetes API and serves its HTTP port."""

    kube_url: str | None = None  # an API server without credentials (an emulator on loopback)
    kubeconfig: str | None = None  # else: the in-cluster service account
    namespaces: tuple[str, ...] = ()  # empty: all namespaces
    http_host: str = "0.0.0.0"
    http_port: int = 9464
    trace_file: Path | None = None
    shutdown_timeout: float = 10.0
    # Security (docs/SECURITY.md). Each file is re-read when it changes: no restart to rotate.
    signing_key: Path | None = None  # this cluster's Ed25519 key (PEM): sign what we publish
    trust_bundle: Path | None = None  # peers' public keys: verify what we receive
    nats_user: str | None = None
    nats_password_file: Path | None = None
    nats_nkey: Path | None = None  # an nkey user seed: the login by key instead of password
    nats_creds: Path | None = None  # operator mode: a user JWT + its seed (a .creds file)
    nats_ca: Path | None = None
    nats_cert: Path | None = None
    nats_key: Path | None = None
    # Secure unless told otherwise: without this, the agent needs signed events (a signing key
    # and a trust bundle) and a protected NATS login (TLS, an nkey or operator-mode creds).
    insecure: bool = False

    def missing_security(self) -> list[str]:
        """What a secure agent lacks (empty: nothing)."""
        missing = []
        if self.signing_key is None or self.trust_bundle is None:
            missing.append("--signing-key and --trust-bundle (signed events)")
        mutual_tls = self.nats_ca is not None and self.nats_cert is not None
        password_over_tls = self.nats_ca is not None and self.nats_password_file is not None
        key_login = self.nats_nkey is not None or self.nats_creds is not None
        if not (mutual_tls or password_over_tls or key_login):
            missing.append(
                "--nats-ca (TLS) or --nats-nkey / --nats-creds (a key login); with --nats-ca, "
                "a client certificate (--nats-cert/--nats-key) or a password (--nats-password-file)"
            )
        return missing

    def __post_init__(self) -> None:
        missing = self.missing_security()
        if missing and not self.insecure:
            raise SettingsError(
                "refusing to run without " + " and ".join(missing) + "; pass --insecure "
                "(FEDERATION_INSECURE=1) to run without them anyway (docs/SECURITY.md)"
            )
        if (self.signing_key is None) != (self.trust_bundle is None):
            raise SettingsError("--signing-key and --trust-bundle go together")
        if (self.nats_cert is None) != (self.nats_key is None) or (
            self.nats_cert and not self.nats_ca
        ):
            raise SettingsError("--nats-cert and --nats-key go together, with --nats-ca")
        logins = [self.nats_nkey, self.nats_creds, self.nats_user or self.nats_password_file]
        if sum(1 for login in logins if login) > 1:
            raise SettingsError(
                "log in with one of --nats-nkey, --nats-creds or --nats-user/--nats-password-file"
            )
