"""Bus messages: the events federation agents exchange, their subjects, and their codec.

Every event carries *full state* (never a delta), so a consumer needs only the newest event per
subject. Schema evolution follows msgspec's rules: every Struct is frozen, keyword-only and tagged;
new fields get defaults; a field's type or a tag never changes; decoders never forbid unknown
fields. A breaking change is a new tag and a new subject version (``fed.v2``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec

SUBJECT_VERSION: Final = "v1"
# Far above any real event (a digest of MAX_DIGEST_POOLS pools is ~350 KiB; NATS's own default
# max_payload is 1 MiB); bigger payloads are hostile.
MAX_EVENT_BYTES: Final = 512 * 1024
MAX_DIGEST_POOLS: Final = 1000  # pools per digest; a cluster's further pools go one report each
MAX_SET_EXPORTS: Final = 1000  # exports per export set; a cluster with more sends one per pool
# The last token of an export set's subject, under the cluster's export subjects (so the
# permissions, stream subjects and sources that carry exports carry sets unchanged). Never a
# namespace: those are DNS labels, which have no "_".
EXPORT_SET_TOKEN: Final = "_set"

# A DNS-1123 label: what a cluster set, cluster or namespace name may be.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A DNS-1123 subdomain: what a pool (metadata.name) may be.
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


# Constrained numbers: the same JSON types, with the ranges a real EPP can produce. An event
# outside them is rejected on receipt ("schema"), never clamped into something plausible.
Count = Annotated[int, msgspec.Meta(ge=0)]
Ratio = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Amount = Annotated[float, msgspec.Meta(ge=0.0)]
Sequence = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class EndpointAddress(msgspec.Struct, frozen=True, kw_only=True):
    """A host and port that an importing gateway can reach (the EPP, or a parent gateway)."""

    host: str
    port: Port


class ParentGateway(msgspec.Struct, frozen=True, kw_only=True):
    """A Gateway that routes to the exported pool: what Parent mode forwards to."""

    namespace: str
    name: str
    addresses: tuple[EndpointAddress, ...] = ()


class ExportEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="export"):
    """The whole current export of one InferencePool, or its tombstone (``withdrawn``)."""

    cluster: str
    namespace: str
    name: str
    generation: Sequence  # per-pool, strictly increasing across the exporter's restarts
    exported_at: float  # wall-clock seconds of the first export: the conflict tie-breaker
    published_at: float
    target_ports: tuple[Port, ...] = ()
    app_protocol: str = "http"
    model: str = ""  # model identity; pools that serve different models must not merge
    epp: EndpointAddress | None = None
    parents: tuple[ParentGateway, ...] = ()
    withdrawn: bool = False


class ExportSet(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="exports"):
    """Every pool a cluster exports, in one event: each as its :class:`ExportEvent`.

    Published whenever any of them changes, so a peer (or a restarting agent) takes in a
    cluster's exports as one message, not one per pool: at 100 clusters of 100 pools that is
    100 messages for every agent to read instead of 10,000. Each entry reaches beliefs as the
    per-pool export it is, ordered by its own generation, so sets and per-pool exports (older
    agents, clusters beyond ``MAX_SET_EXPORTS``) mix on one per-pool ordering. Full state: a
    pool of this cluster that the set does not list is withdrawn as of the set's ``sequence``
    (a tombstone with that generation, so a later per-pool export still revives it).
    """

    cluster: str
    sequence: Sequence
    published_at: float
    exports: tuple[ExportEvent, ...] = ()


class LoadReport(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="load"):
    """The whole current load of one exported pool, as its Endpoint Picker reports it."""

    cluster: str
    namespace: str
    name: str
    sequence: Sequence
    observed_at: float
    published_at: float
    ready_pods: Count = 0
    kv_cache_utilization: Ratio = 0.0
    queue_size: Amount = 0.0  # average per pod
    running_requests: Amount = 0.0  # average per pod
    saturation: Ratio = 0.0  # the strongest saturation signal the EPP gave
    epp_status: str = "ok"  # ok | unreachable | no-endpoints | shedding | invalid
    # Rates (requests/s over the publisher's rate window), added with the rate plan; None from older
    # agents and whenever the counters behind them are not there yet (a first scrape, a reset).
    arrival_rate: Amount | None = None  # reaching the pool (the EPP's request counter)
    completion_rate: Amount | None = None  # completed by the pool (the EPP's duration count)
    demand_rate: Amount | None = None  # offered for the pool at this cluster's own gateway
    capacity_rate: Amount | None = (
        None  # the publisher's estimate of what the pool completes when full
    )


class PoolLoad(msgspec.Struct, frozen=True, kw_only=True):
    """One pool's load inside a :class:`LoadDigest`: a :class:`LoadReport` without the fields
    the digest carries once (cluster, sequence, publish time)."""

    namespace: str
    name: str
    observed_at: float
    ready_pods: Count = 0
    kv_cache_utilization: Ratio = 0.0
    queue_size: Amount = 0.0
    running_requests: Amount = 0.0
    saturation: Ratio = 0.0
    epp_status: str = "ok"
    arrival_rate: Amount | None = None
    completion_rate: Amount | None = None
    demand_rate: Amount | None = None
    capacity_rate: Amount | None = None


class LoadDigest(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="digest"):
    """The whole current load of *every* pool a cluster exports, in one event.

    One per cluster per report interval (on change, or at the keepalive), so a peer's inbound
    rate grows with clusters, not clusters x pools. Full state: a pool the digest does not list
    has no load from it. Each entry reaches beliefs as that pool's :class:`LoadReport`
    (:func:`report_of`), ordered by the digest's sequence, so per-pool reports (older agents,
    or pools beyond ``MAX_DIGEST_POOLS``) and digests mix on one per-pool ordering.
    """

    cluster: str
    sequence: Sequence
    published_at: float
    pools: tuple[PoolLoad, ...] = ()


def report_of(digest: LoadDigest, entry: PoolLoad) -> LoadReport:
    """One digest entry as its pool's report (the digest's sequence and publish time)."""
    fields: dict[str, Any] = msgspec.structs.asdict(entry)
    return LoadReport(
        cluster=digest.cluster, sequence=digest.sequence, published_at=digest.published_at,
        **fields,
    )  # fmt: skip


def entry_content(entry: PoolLoad) -> tuple[object, ...]:
    """What an entry says about its pool: its fields after ``observed_at``."""
    return msgspec.structs.astuple(entry)[3:]


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="beat"):
    """A cluster's agent is alive and connected; renews its lease at every peer."""

    cluster: str
    sequence: Sequence
    published_at: float
    exports: Count = 0
    agent_version: str = ""
    # Acknowledgements, from which exporters set their pools' ``Exported`` condition: per
    # exporting cluster, the newest export generation reflected in the imports this cluster has
    # applied, and that exporter's pools ("namespace/name") it has not accepted.
    accepted: dict[str, Sequence] = {}
    refused: dict[str, list[str]] = {}
    # This agent reads load digests (agents before them leave it out: False). A peer publishes
    # per-pool reports beside its digests while any member's newest beat says False.
    load_digests: bool = False
    # This agent reads export sets (agents before them leave it out: False). A peer publishes
    # per-pool exports beside its sets while any member's newest beat says False.
    export_sets: bool = False


Event = ExportEvent | ExportSet | LoadReport | LoadDigest | Heartbeat
EVENT_TYPES: Final = (ExportEvent, ExportSet, LoadReport, LoadDigest, Heartbeat)


class InvalidEvent(ValueError):
    """A payload that is not a valid event; ``reason`` is a short, countable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def encode_entry(entry: PoolLoad) -> bytes:
    """One digest entry as it is encoded inside its digest (to size a digest before sending)."""
    return _encoder.encode(entry)


def decode(payload: bytes) -> Event:
    """Decode one payload; raise :class:`InvalidEvent` with a countable reason otherwise."""
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidEvent("oversized", f"{len(payload)} bytes > {MAX_EVENT_BYTES}")
    try:
        event: Event = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        reason = (
            "unknown-type" if "Invalid value" in str(exc) and "$.type" in str(exc) else "schema"
        )
        raise InvalidEvent(reason, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent("malformed", str(exc)) from None
    _check_names(event)
    return event


def _check_names(event: Event) -> None:
    if not _LABEL.fullmatch(event.cluster):
        raise InvalidEvent("schema", f"cluster {event.cluster!r} is not a DNS label")
    if isinstance(event, ExportEvent | LoadReport):
        _check_pool((event.namespace, event.name))
    if isinstance(event, LoadDigest):
        _check_digest(event)
    if isinstance(event, ExportSet):
        _check_set(event)


# Pools whose names passed the checks below. A peer's digest lists the same pools at every
# report interval, and their regex checks were about a third of decoding it (BENCHMARKS.md,
# session 13); every agent also takes each pool's export in once per exporter (at 100 x 100,
# 10,000 exports each). Bounded (cleared when full: 20,000 names of at most 63 + 253
# characters, a few MiB), so hostile names cannot grow it; 100 clusters x 100 pools fit.
_VALID_POOLS: set[tuple[str, str]] = set()
_VALID_POOLS_MAX: Final = 20_000


def _check_pool(pool: tuple[str, str]) -> None:
    if pool not in _VALID_POOLS:
        _check_pool_names(*pool)
        if len(_VALID_POOLS) >= _VALID_POOLS_MAX:
            _VALID_POOLS.clear()
        _VALID_POOLS.add(pool)


def _check_digest(digest: LoadDigest) -> None:
    _check_listed([(p.namespace, p.name) for p in digest.pools], MAX_DIGEST_POOLS, "pools")


def _check_set(exports: ExportSet) -> None:
    for e in exports.exports:
        if e.cluster != exports.cluster:  # a set speaks for its own cluster only
            raise InvalidEvent("schema", f"export of {e.cluster!r} in {exports.cluster!r}'s set")
    _check_listed([(e.namespace, e.name) for e in exports.exports], MAX_SET_EXPORTS, "exports")


def _check_listed(pools: list[tuple[str, str]], most: int, what: str) -> None:
    """The pools one digest or set lists: at most ``most``, valid names, each once."""
    if len(pools) > most:
        raise InvalidEvent("schema", f"{len(pools)} {what} > {most}")
    seen: set[tuple[str, str]] = set()
    for pool in pools:
        _check_pool(pool)
        if pool in seen:
            raise InvalidEvent("schema", f"pool {pool[0]}/{pool[1]} listed twice")
        seen.add(pool)


def _check_pool_names(namespace: str, name: str) -> None:
    if not _LABEL.fullmatch(namespace):
        raise InvalidEvent("schema", f"namespace {namespace!r} is not a DNS label")
    if not _SUBDOMAIN.fullmatch(name):
        raise InvalidEvent("schema", f"pool name {name!r} is not a DNS subdomain")


def is_label(value: str) -> bool:
    return bool(_LABEL.fullmatch(value))


def is_subdomain(value: str) -> bool:
    return bool(_SUBDOMAIN.fullmatch(value))


# --- subjects -------------------------------------------------------------------------------


def token(name: str) -> str:
    """A Kubernetes name as one subject token: dots (legal in pool names) become ``~``."""
    return name.replace(".", "~")


def untoken(tok: str) -> str:
    return tok.replace("~", ".")


def prefix(clusterset: str) -> str:
    return f"fed.{SUBJECT_VERSION}.{clusterset}"


def export_subject(clusterset: str, cluster: str, namespace: str, name: str) -> str:
    return f"{prefix(clusterset)}.export.{cluster}.{namespace}.{token(name)}"


def export_set_subject(clusterset: str, cluster: str) -> str:
    return f"{prefix(clusterset)}.export.{cluster}.{EXPORT_SET_TOKEN}"


def load_subject(clusterset: str, cluster: str, namespace: str, name: str) -> str:
    return f"{prefix(clusterset)}.load.{cluster}.{namespace}.{token(name)}"


def digest_subject(clusterset: str, cluster: str) -> str:
    return f"{prefix(clusterset)}.digest.{cluster}"


def beat_subject(clusterset: str, cluster: str) -> str:
    return f"{prefix(clusterset)}.beat.{cluster}"


def exports_subject(clusterset: str, cluster: str = "*") -> str:
    """A member's export subjects (every member's with the default): the only ones sourced into
    inbound streams, since exports are full state that must survive partitions and restarts."""
    return f"{prefix(clusterset)}.export.{cluster}.>"


def live_subjects(clusterset: str) -> list[str]:
    """Every member's live subjects (wildcards): heartbeats, load digests and per-pool load
    reports. They are worth something only while fresh and each supersedes the last, so peers
    hear them on plain NATS, not through their inbound streams."""
    base = prefix(clusterset)
    return [f"{base}.beat.*", f"{base}.digest.*", f"{base}.load.>"]


def subject_cluster(subject: str) -> str:
    """The cluster token of a subject (``fed.v1.<cs>.<kind>.<cluster>...``), or "" (cluster
    names are Kubernetes labels: never tokenized)."""
    tokens = subject.split(".")
    return tokens[4] if len(tokens) > 4 else ""


def is_live_subject(clusterset: str, subject: str) -> bool:
    kind = subject[len(prefix(clusterset)) + 1 :].split(".", 1)[0]
    return subject.startswith(prefix(clusterset) + ".") and kind in ("beat", "digest", "load")


EXPORT_SEQ_HEADER: Final = "Fed-Export-Seq"  # "<epoch>.<n>": the publisher's n-th export


def export_seq_header(epoch: int, count: int) -> str:
    return f"{epoch}.{count}"


_EXPORT_SEQ = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})", re.ASCII)


def parse_export_seq(value: str | None) -> tuple[int, int] | None:
    """(epoch, count) from a ``Fed-Export-Seq`` header; None when absent or not two numbers.
    Never raises: a header is not covered by the signature, so anyone on the path may send one
    (ASCII digits only: ``str.isdigit`` accepts "²", which ``int`` refuses)."""
    matched = _EXPORT_SEQ.fullmatch(value or "")
    return None if matched is None else (int(matched[1]), int(matched[2]))


def subject_for(clusterset: str, event: Event) -> str:
    if isinstance(event, ExportEvent):
        return export_subject(clusterset, event.cluster, event.namespace, event.name)
    if isinstance(event, ExportSet):
        return export_set_subject(clusterset, event.cluster)
    if isinstance(event, LoadReport):
        return load_subject(clusterset, event.cluster, event.namespace, event.name)
    if isinstance(event, LoadDigest):
        return digest_subject(clusterset, event.cluster)
    return beat_subject(clusterset, event.cluster)


def own_subjects(clusterset: str, cluster: str) -> list[str]:
    """Every subject a cluster may publish on: the ones NATS permissions grant it."""
    base = prefix(clusterset)
    return [
        f"{base}.export.{cluster}.>",
        f"{base}.load.{cluster}.>",
        f"{base}.digest.{cluster}",
        f"{base}.beat.{cluster}",
    ]


def sequence_of(event: Event) -> int:
    return event.generation if isinstance(event, ExportEvent) else event.sequence


def highest_sequence(event: Event) -> int:
    """The highest sequence an event would set: a set's own, or one of its entries'."""
    if isinstance(event, ExportSet):
        return max(event.sequence, max((e.generation for e in event.exports), default=0))
    return sequence_of(event)


def msg_id(event: Event) -> str:
    """The ``Nats-Msg-Id``: one per (subject, sequence), so a re-sent event is de-duplicated."""
    if isinstance(event, ExportEvent | LoadReport):
        kind = "export" if isinstance(event, ExportEvent) else "load"
        return f"{kind}:{event.cluster}:{event.namespace}:{event.name}:{sequence_of(event)}"
    if isinstance(event, LoadDigest):
        return f"digest:{event.cluster}:{event.sequence}"
    if isinstance(event, ExportSet):
        return f"exports:{event.cluster}:{event.sequence}"
    return f"beat:{event.cluster}:{event.sequence}"
