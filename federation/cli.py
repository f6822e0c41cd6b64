"""Command line: argv → options → run. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console

from federation import __version__, schemas
from federation.settings import FeedSettings


def _logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@click.group()
@click.version_option(__version__, prog_name="federation")
def main() -> None:
    """Hub-less multi-cluster InferencePools over NATS JetStream."""


@main.command()
@click.option("--clusters", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option(
    "--pools",
    default=4,
    show_default=True,
    type=click.IntRange(1, 8),
    help="InferencePools per cluster.",
)
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1, 86400),
    help="Seconds to run after the agents start.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Run silently, then print one JSON snapshot to stdout."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the JetStream stores here (default: a temporary directory).",
)
@click.option(
    "--kill",
    "kill_cluster",
    default=None,
    metavar="CLUSTER",
    help="Chaos: kill this cluster's nats-server and agent...",
)
@click.option(
    "--at",
    "kill_at",
    default=None,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="...this many seconds after the agents start.",
)
@click.option(
    "--revive-at",
    default=None,
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="...and bring it back at this time.",
)
@click.option(
    "--trace-file",
    type=click.Path(path_type=Path),
    default=None,
    help="Write every finished span as a JSON line to this file.",
)
@click.option(
    "--dump-objects",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR",
    help="At the end, write every InferencePool and InferencePoolImport of every cluster as "
    "JSON to DIR/<cluster>/<kind>/<namespace>.<name>.json.",
)
@click.option(
    "--secure",
    is_flag=True,
    help="Per-cluster NATS users with least-privilege permissions, and signed events.",
)
@click.option(
    "--spoof",
    is_flag=True,
    help="With --secure: a rogue client with us-east's login impersonates eu-west and forges "
    "signatures; the snapshot counts the rejections.",
)
@click.option(
    "--traffic/--no-traffic",
    default=None,
    help="Real requests through a real HAProxy per cluster, programmed by its agent "
    "[default: on when haproxy is on PATH].",
)
@click.option("--burst", "burst_cluster", default=None, metavar="CLUSTER", help="With traffic: "
              "this cluster's demand jumps [default: the first cluster].")  # fmt: skip
@click.option("--burst-at", default=15.0, show_default=True, type=click.FloatRange(0),
              metavar="S", help="...this many seconds after the agents start...")  # fmt: skip
@click.option("--burst-for", default=20.0, show_default=True, type=click.FloatRange(0),
              metavar="S", help="...for this long...")  # fmt: skip
@click.option("--burst-factor", default=3.0, show_default=True, type=click.FloatRange(0.1, 100),
              metavar="F", help="...to this multiple of its usual rate (1: no burst).")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True)
def demo(
    clusters: int,
    pools: int,
    duration: float,
    as_json: bool,
    data_dir: Path | None,
    kill_cluster: str | None,
    kill_at: float | None,
    revive_at: float | None,
    trace_file: Path | None,
    dump_objects: Path | None,
    secure: bool,
    spoof: bool,
    traffic: bool | None,
    burst_cluster: str | None,
    burst_at: float,
    burst_for: float,
    burst_factor: float,
    verbose: bool,
) -> None:
    """Federate N simulated clusters over an embedded NATS supercluster."""
    import shutil

    from federation.kit.sim.demo import DemoOptions, TrafficOptions
    from federation.kit.sim.layouts import cluster_names
    from federation.kit.sim.running import Chaos, run_demo
    from federation.kit.sim.traffic import Burst

    _logging(verbose, quiet=as_json)
    chaos = None
    if kill_cluster is not None or kill_at is not None or revive_at is not None:
        if kill_cluster not in cluster_names(clusters) or kill_at is None:
            raise click.UsageError(
                f"--kill needs one of {', '.join(cluster_names(clusters))} and --at SECONDS"
            )
        if revive_at is not None and revive_at <= kill_at:
            raise click.UsageError("--revive-at must come after --at")
        chaos = Chaos(kill_cluster, kill_at, revive_at)
    if spoof and not secure:
        raise click.UsageError("--spoof needs --secure")
    if spoof and clusters < 2:
        raise click.UsageError("--spoof needs at least 2 clusters")
    names = cluster_names(clusters)
    has_haproxy = shutil.which("haproxy") is not None
    if traffic is None:  # on by default where it can run; asked for by --burst
        traffic = has_haproxy or burst_cluster is not None
    if traffic and not has_haproxy:
        raise click.UsageError(
            "the traffic demo (--traffic, --burst) needs HAProxy >= 2.5 on PATH "
            "(Debian/Ubuntu: apt-get install haproxy); --no-traffic runs without it"
        )
    if burst_cluster is not None and (not traffic or burst_cluster not in names):
        raise click.UsageError(f"--burst needs the traffic demo and one of {', '.join(names)}")
    traffic_options = None
    if traffic:
        burst = Burst(burst_cluster or names[0], burst_at, burst_for, burst_factor)
        traffic_options = TrafficOptions(burst=burst if burst_factor != 1 else None)
    options = DemoOptions(
        clusters=clusters,
        pools=pools,
        data_dir=data_dir,
        trace_file=trace_file,
        secure=secure,
        traffic=traffic_options,
    )
    console = None if as_json else Console(stderr=False)
    snapshot = asyncio.run(
        run_demo(
            options,
            duration=duration,
            console=console,
            chaos=chaos,
            dump_to=dump_objects,
            spoof=spoof,
        )
    )
    if as_json:
        sys.stdout.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode() + "\n")


def _env(name: str) -> str:
    return f"FEDERATION_{name}"


F = TypeVar("F", bound=Callable[..., Any])


def _file_option(flag: str, help_text: str) -> Callable[[F], F]:
    """An optional file flag, also read from ``FEDERATION_<FLAG>``."""
    return click.option(
        flag,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar=_env(flag.removeprefix("--").upper().replace("-", "_")),
        help=help_text,
    )


@main.command()
@click.option("--clusterset", required=True, envvar=_env("CLUSTERSET"), help="The ClusterSet.")
@click.option("--cluster", required=True, envvar=_env("CLUSTER"), help="This cluster's name.")
@click.option(
    "--members",
    required=True,
    envvar=_env("MEMBERS"),
    help="Every cluster of the ClusterSet, comma-separated (this one included).",
)
@click.option("--nats-url", required=True, envvar=_env("NATS_URL"), help="This cluster's NATS.")
@click.option(
    "--nats-cluster",
    default="",
    envvar=_env("NATS_CLUSTER"),
    help="The NATS cluster this cluster's streams live in (default: the cluster name).",
)
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG", help="Default: in-cluster.")
@click.option(
    "--kube-url",
    default=None,
    envvar=_env("KUBE_URL"),
    help="An API server without credentials (tests and emulators only).",
)
@click.option(
    "--namespaces",
    default="",
    envvar=_env("NAMESPACES"),
    help="Watch only these namespaces (comma-separated; default: all).",
)
@click.option(
    "--controller-name", default=None, envvar=_env("CONTROLLER_NAME"), help="DOMAIN/PATH."
)
@click.option("--http-host", default="0.0.0.0", show_default=True, envvar=_env("HTTP_HOST"))
@click.option(
    "--http-port",
    default=9464,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar=_env("HTTP_PORT"),
    help="/metrics, /v1/status, /v1/weights, /healthz, /readyz",
)
@click.option(
    "--lease",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    envvar=_env("LEASE"),
    help="Seconds of silence after which a peer weighs 0.",
)
@click.option(
    "--grace",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0.2),
    envvar=_env("GRACE"),
    help="Seconds of silence after which a peer's exports go.",
)
@click.option(
    "--trace-file",
    type=click.Path(path_type=Path),
    default=None,
    envvar=_env("TRACE_FILE"),
    help="Also write finished spans as JSON lines here.",
)
@_file_option("--signing-key", "This cluster's Ed25519 key: sign every event.")
@_file_option("--trust-bundle", "Peers' public keys: reject unsigned/forged events.")
@click.option("--nats-user", default=None, envvar=_env("NATS_USER"))
@_file_option("--nats-password-file", "Re-read when it changes: a rotation needs no restart.")
@_file_option("--nats-nkey", "Log in with this nkey user seed (re-read: a new key, a new login).")
@_file_option("--nats-ca", "TLS: the CA that signed the NATS servers' certificates.")
@_file_option("--nats-cert", "TLS: this agent's client certificate (re-read).")
@_file_option("--nats-key", "TLS: the client certificate's key.")
@click.option(
    "--haproxy-socket",
    default=None,
    metavar="PATH|tcp://HOST:PORT",
    envvar=_env("HAPROXY_SOCKET"),
    help="Feed HAProxy: program one backend per import through its runtime API "
    "(stats socket, level admin). See `federation haproxy-config`.",
)
@click.option(
    "--haproxy-backend",
    default=FeedSettings.haproxy_backend,
    show_default=True,
    envvar=_env("HAPROXY_BACKEND"),
    help="The HAProxy backend of an import ({namespace}, {name}).",
)
@click.option(
    "--haproxy-drain",
    default=FeedSettings.haproxy_drain,
    show_default=True,
    type=click.FloatRange(0),
    envvar=_env("HAPROXY_DRAIN"),
    help="Seconds a withdrawn or dead backend's server stays at weight 0 before it is deleted.",
)
@click.option(
    "--envoy-eds-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    envvar=_env("ENVOY_EDS_DIR"),
    help="Feed Envoy: write one EDS DiscoveryResponse per import here (path_config_source).",
)
@click.option(
    "--envoy-mode",
    default=FeedSettings.envoy_mode,
    show_default=True,
    type=click.Choice(["parent", "endpoint"]),
    envvar=_env("ENVOY_MODE"),
    help="EDS endpoints: the exporters' parent Gateways, or their EPPs.",
)
@click.option(
    "--annotation-interval",
    default=FeedSettings.annotation_interval,
    show_default=True,
    type=click.FloatRange(0),
    envvar=_env("ANNOTATION_INTERVAL"),
    help="At most one weights-annotation write per import per this many seconds.",
)
@click.option(
    "--annotation-threshold",
    default=FeedSettings.annotation_threshold,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    envvar=_env("ANNOTATION_THRESHOLD"),
    help="...and only for a weight move this large (of 1,000,000); a backend starting or "
    "stopping is written at once.",
)
@click.option(
    "--shutdown-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1),
    envvar=_env("SHUTDOWN_TIMEOUT"),
)
@click.option("-v", "--verbose", is_flag=True)
def agent(
    clusterset: str,
    cluster: str,
    members: str,
    nats_url: str,
    nats_cluster: str,
    kubeconfig: str | None,
    kube_url: str | None,
    namespaces: str,
    controller_name: str | None,
    http_host: str,
    http_port: int,
    lease: float,
    grace: float,
    trace_file: Path | None,
    signing_key: Path | None,
    trust_bundle: Path | None,
    nats_user: str | None,
    nats_password_file: Path | None,
    nats_nkey: Path | None,
    nats_ca: Path | None,
    nats_cert: Path | None,
    nats_key: Path | None,
    haproxy_socket: str | None,
    haproxy_backend: str,
    haproxy_drain: float,
    envoy_eds_dir: Path | None,
    envoy_mode: str,
    annotation_interval: float,
    annotation_threshold: int,
    shutdown_timeout: float,
    verbose: bool,
) -> None:
    """Run this cluster's federation agent until SIGTERM (production)."""
    from federation.app.process import ProcessOptions, run_agent
    from federation.settings import DEFAULT_CONTROLLER_NAME, Settings, SettingsError

    _logging(verbose)
    logging.getLogger("federation").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        settings = Settings(
            clusterset=clusterset,
            cluster=cluster,
            members=tuple(m.strip() for m in members.split(",") if m.strip()),
            nats_url=nats_url,
            nats_cluster=nats_cluster,
            lease=lease,
            grace=grace,
            controller_name=controller_name or DEFAULT_CONTROLLER_NAME,
            feeds=FeedSettings(
                haproxy_socket=haproxy_socket,
                haproxy_backend=haproxy_backend,
                haproxy_drain=haproxy_drain,
                envoy_eds_dir=envoy_eds_dir,
                envoy_mode=envoy_mode,
                annotation_interval=annotation_interval,
                annotation_threshold=annotation_threshold,
            ),
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    options = ProcessOptions(
        kube_url=kube_url,
        kubeconfig=kubeconfig,
        namespaces=tuple(n.strip() for n in namespaces.split(",") if n.strip()),
        http_host=http_host,
        http_port=http_port,
        trace_file=trace_file,
        shutdown_timeout=shutdown_timeout,
        signing_key=signing_key,
        trust_bundle=trust_bundle,
        nats_user=nats_user,
        nats_password_file=nats_password_file,
        nats_nkey=nats_nkey,
        nats_ca=nats_ca,
        nats_cert=nats_cert,
        nats_key=nats_key,
    )
    if (signing_key is None) != (trust_bundle is None):
        raise click.UsageError("--signing-key and --trust-bundle go together")
    if (nats_cert is None) != (nats_key is None) or (nats_cert and not nats_ca):
        raise click.UsageError("--nats-cert and --nats-key go together, with --nats-ca")
    if nats_nkey and (nats_user or nats_password_file):
        raise click.UsageError("log in with --nats-nkey or with --nats-user/--nats-password-file")
    if nats_nkey:
        from federation.adapters.nkey_file import public_key

        try:
            public_key(nats_nkey)
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"--nats-nkey: {exc}") from None
    sys.exit(asyncio.run(run_agent(settings, options)))


@main.command("haproxy-config")
@click.option("--cluster", required=True, envvar=_env("CLUSTER"), help="This cluster's name.")
@click.option(
    "--pool",
    "pools",
    multiple=True,
    required=True,
    metavar="NAMESPACE/NAME",
    help="An imported pool (repeatable).",
)
@click.option(
    "--haproxy-backend",
    default=FeedSettings.haproxy_backend,
    show_default=True,
    envvar=_env("HAPROXY_BACKEND"),
    help="The backend naming rule (the same as the agent's).",
)
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="The entry listener.")
def haproxy_config(cluster: str, pools: tuple[str, ...], haproxy_backend: str, bind: str) -> None:
    """Print the haproxy.cfg frontend and backends the agent's HAProxy feed programs."""
    from federation.messages import is_label, is_subdomain
    from federation.model.haproxy_config import snippet
    from federation.model.pools import PoolKey
    from federation.settings import SettingsError

    if not is_label(cluster):
        raise click.UsageError(f"cluster {cluster!r} must be a DNS label")
    try:
        FeedSettings(haproxy_backend=haproxy_backend)
        keys = [PoolKey(*p.split("/", 1)) for p in pools if p.count("/") == 1]
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    if len(keys) != len(pools) or not all(
        is_label(k.namespace) and is_subdomain(k.name) for k in keys
    ):
        raise click.UsageError("--pool takes NAMESPACE/NAME")
    try:
        click.echo(snippet(keys, cluster=cluster, rule=haproxy_backend, bind=bind), nl=False)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--nats-nkey",
    "nkey",
    is_flag=True,
    help="Write a NATS nkey user seed instead; print its public key for the servers' config.",
)
def keygen(key_file: Path, nkey: bool) -> None:
    """Write a new Ed25519 signing key (mode 0600) and print its public key for trust bundles."""
    from federation.adapters.nkey_file import create_user_seed
    from federation.adapters.signing import generate_key

    if key_file.exists():
        raise click.UsageError(f"{key_file} exists; refusing to overwrite a key")
    click.echo(create_user_seed(key_file) if nkey else generate_key(key_file))


@main.command()
@click.option(
    "--loads",
    "loads_file",
    required=True,
    type=click.Path(path_type=Path),
    help="JSON file of per-backend load snapshots (format: README, 'Weights').",
)
@click.option(
    "--local",
    "local_cluster",
    default=None,
    help="The cluster asking; its own backend is preferred while it has headroom.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def weights(loads_file: Path, local_cluster: str | None, as_json: bool) -> None:
    """What would the gateway do? Weights and reasons from a file of load snapshots."""
    from federation.model.offline import here_of, offline_weights, parse_loads
    from federation.tables import weights_table

    try:
        loads = parse_loads(loads_file.read_bytes())
    except (OSError, ValueError) as exc:
        click.echo(f"federation weights: {loads_file}: {exc}", err=True)
        sys.exit(2)
    result = offline_weights(loads, local_cluster)
    here = here_of(loads, local_cluster)
    if as_json:
        doc = {
            "pool": loads.pool,
            "here": here,
            "weights": {
                name: {"weight": w.weight, "percent": w.percent, "reason": w.reason}
                for name, w in result.items()
            },
        }
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(weights_table(loads.pool, here, result))


@main.command()
@click.option("--url", required=True, help="The agent's HTTP address, e.g. http://127.0.0.1:9464")
@click.option("--json", "as_json", is_flag=True, help="Print the status document as JSON.")
def status(url: str, as_json: bool) -> None:
    """Per peer: lease age and state; per import: exporting clusters, weights and why."""
    from federation.adapters.agent_http import AgentUnreachable, fetch_status
    from federation.tables import status_view

    try:
        doc = asyncio.run(fetch_status(url))
    except AgentUnreachable as exc:
        click.echo(f"federation status: {exc}", err=True)
        sys.exit(1)
    if as_json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(status_view(doc))


@main.command()
@click.option("--nats", "nats_url", default=None, help="Read the live streams from this NATS URL.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Read JetStream stores on disk (e.g. what `demo --data-dir` kept), served from a copy.",
)
@click.option("--clusterset", default=None, help="Needed when several cluster sets are found.")
@click.option("--since", default=None, help="Only events stored at or after (ISO 8601 or epoch).")
@click.option("--until", default=None, help="Only events stored at or before.")
@click.option("--cluster", "clusters", multiple=True, help="Only events of this cluster (repeat).")
@click.option("--pool", "pools", multiple=True, metavar="NS/NAME", help="Only this pool (repeat).")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(["export", "load", "beat", "invalid"]),
    help="Only events of this type (repeat).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (one per event) / one document.")
@click.option("--state-at", default=None, help="Rebuild the imports and weights at this time...")
@click.option("--as", "as_cluster", default=None, help="...as this cluster computed them.")
@click.option("--lease", type=float, default=None, help="Default: the demo's, else 10 s.")
@click.option("--grace", type=float, default=None, help="Default: the demo's, else 300 s.")
@click.option("--slow-start", type=float, default=None, help="Default: the demo's, else 30 s.")
def replay(
    nats_url: str | None,
    data_dir: Path | None,
    clusterset: str | None,
    since: str | None,
    until: str | None,
    clusters: tuple[str, ...],
    pools: tuple[str, ...],
    types: tuple[str, ...],
    as_json: bool,
    state_at: str | None,
    as_cluster: str | None,
    lease: float | None,
    grace: float | None,
    slow_start: float | None,
) -> None:
    """Print the federation's events, or rebuild what a cluster computed at a moment."""
    from federation.app.replay import ReplayError, find_stores, load_streams
    from federation.kit.stores import serve_store_copy
    from federation.model.pools import PoolKey
    from federation.model.replay import ReplayFilter, iso_ms, parse_time, row, select
    from federation.model.replay import state_at as rebuild
    from federation.model.views import imports_document
    from federation.model.weights import WeightPolicy
    from federation.tables import replay_table, state_table

    _logging(False, quiet=True)
    if (nats_url is None) == (data_dir is None):
        raise click.UsageError("give exactly one of --nats URL and --data-dir DIR")
    if (state_at is None) != (as_cluster is None):
        raise click.UsageError("--state-at and --as go together")
    try:
        keys = frozenset(PoolKey(*p.split("/", 1)) for p in pools)
    except TypeError:
        raise click.UsageError("--pool takes NAMESPACE/NAME") from None
    try:
        window = ReplayFilter(
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
            clusters=frozenset(clusters),
            pools=keys,
            types=frozenset(types),
        )
        at = parse_time(state_at) if state_at else None
    except ValueError as exc:
        raise click.UsageError(f"bad time: {exc}") from None
    try:
        stores, manifest = find_stores(data_dir) if data_dir else ([], {})
        streams = asyncio.run(
            load_streams(
                nats_url=nats_url,
                stores=stores,
                manifest=manifest,
                clusterset=clusterset,
                serve_store_copy=serve_store_copy,
            )
        )
    except (ReplayError, OSError) as exc:
        click.echo(f"federation replay: {exc}", err=True)
        sys.exit(2)
    out = sys.stdout
    if at is None:
        rows = [row(s) for s in select((s for v in streams.outbound.values() for s in v), window)]
        if as_json:
            for r in rows:
                out.write(orjson.dumps(r).decode() + "\n")
        else:
            Console().print(replay_table(rows))
        return
    assert as_cluster is not None
    if as_cluster not in streams.inbound:
        click.echo(f"federation replay: no inbound stream of {as_cluster!r}", err=True)
        sys.exit(2)
    m = streams.manifest
    members = m.get("members") or sorted(set(streams.inbound) | set(streams.outbound))
    policy = WeightPolicy(
        lease=lease or m.get("lease", 10.0), slow_start=slow_start or m.get("slow_start", 30.0)
    )
    views = rebuild(
        streams.inbound[as_cluster],
        cluster=as_cluster,
        members=members,
        at=at,
        policy=policy,
        grace=grace or m.get("grace", 300.0),
    )
    doc = {
        "clusterset": streams.clusterset,
        "cluster": as_cluster,
        "at": iso_ms(at),
        "imports": imports_document(views),
    }
    if as_json:
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(state_table(doc))


@main.command()
@click.argument("scenarios", nargs=-1, type=click.Choice(
    ["raw", "ingest", "propagation", "scale", "routing"]))  # fmt: skip
@click.option("--quick", is_flag=True, help="Smaller runs (scale 20 x 50); minutes, not tens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--scenario-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A routing scenario (JSON: clusters with slots, rate and bursts; see BENCHMARKS.md).",
)
def bench(
    scenarios: tuple[str, ...], quick: bool, as_json: bool, scenario_file: Path | None
) -> None:
    """Measure ingest, propagation, scale and routing quality against the raw NATS baseline."""
    from federation.kit.bench.routing import Scenario
    from federation.kit.bench.running import run_bench
    from federation.tables import bench_view

    _logging(False, quiet=True)
    routing = None
    if scenario_file is not None:
        try:
            routing = Scenario.from_json(scenario_file.read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise click.UsageError(f"{scenario_file}: {exc}") from None
    doc = asyncio.run(run_bench(list(scenarios), quick=quick, routing_scenario=routing))
    if as_json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        Console().print(bench_view(doc))


@main.command("schemas")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bus-schemas"), show_default=True
)
def write_schemas(out: Path) -> None:
    """Write JSON Schema, AsyncAPI and example payloads of the bus events."""
    for path in schemas.write(out):
        click.echo(str(path))
