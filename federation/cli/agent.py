"""``federation agent``: the production process, from flags and ``FEDERATION_*`` variables."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from federation.cli import main
from federation.cli.output import env, file_option, setup_logging
from federation.settings import (
    DEFAULT_CONTROLLER_NAME,
    EXPORT_MESSAGES,
    LOAD_MESSAGES,
    WEIGHTS_MODES,
    FeedSettings,
    ProcessOptions,
    Settings,
    SettingsError,
    split_list,
)


@main.command()
@click.option("--clusterset", required=True, envvar=env("CLUSTERSET"), help="The ClusterSet.")
@click.option("--cluster", required=True, envvar=env("CLUSTER"), help="This cluster's name.")
@click.option(
    "--members",
    required=True,
    envvar=env("MEMBERS"),
    help="Every cluster of the ClusterSet, comma-separated (this one included).",
)
@click.option("--nats-url", required=True, envvar=env("NATS_URL"), help="This cluster's NATS.")
@click.option(
    "--nats-cluster",
    default="",
    envvar=env("NATS_CLUSTER"),
    help="The NATS cluster this cluster's streams live in (default: the cluster name).",
)
@click.option("--kubeconfig", default=None, envvar="KUBECONFIG", help="Default: in-cluster.")
@click.option(
    "--kube-url",
    default=None,
    envvar=env("KUBE_URL"),
    help="An API server without credentials (tests and emulators only).",
)
@click.option(
    "--namespaces",
    default="",
    envvar=env("NAMESPACES"),
    help="Watch only these namespaces (comma-separated; default: all).",
)
@click.option("--controller-name", default=None, envvar=env("CONTROLLER_NAME"), help="DOMAIN/PATH.")
@click.option(
    "--http-host", default=ProcessOptions.http_host, show_default=True, envvar=env("HTTP_HOST")
)
@click.option(
    "--http-port",
    default=ProcessOptions.http_port,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar=env("HTTP_PORT"),
    help="/metrics, /v1/status, /v1/weights, /healthz, /readyz",
)
@click.option(
    "--lease",
    default=Settings.lease,
    show_default=True,
    type=click.FloatRange(0.1),
    envvar=env("LEASE"),
    help="Seconds of silence after which a peer weighs 0.",
)
@click.option(
    "--grace",
    default=Settings.grace,
    show_default=True,
    type=click.FloatRange(0.2),
    envvar=env("GRACE"),
    help="Seconds of silence after which a peer's exports go.",
)
@click.option(
    "--max-clock-offset",
    default=Settings.max_clock_offset,
    show_default=True,
    type=click.FloatRange(0),
    envvar=env("MAX_CLOCK_OFFSET"),
    help="Seconds a peer's clock may be off ours before the FederationPeerClockSkew alert "
    "(ages and leases never use peers' clocks).",
)
@click.option(
    "--trace-file",
    type=click.Path(path_type=Path),
    default=None,
    envvar=env("TRACE_FILE"),
    help="Also write finished spans as JSON lines here.",
)
@click.option(
    "--load-messages",
    default=Settings.load_messages,
    show_default=True,
    type=click.Choice(LOAD_MESSAGES),
    envvar=env("LOAD_MESSAGES"),
    help="Load as one digest per cluster, or one report per pool (as agents before digests did).",
)
@click.option(
    "--export-messages",
    default=Settings.export_messages,
    show_default=True,
    type=click.Choice(EXPORT_MESSAGES),
    envvar=env("EXPORT_MESSAGES"),
    help="Exports as one set per cluster, or one event per pool (as agents before sets did).",
)
@click.option(
    "--shared-inbound/--own-inbound",
    default=Settings.shared_inbound,
    show_default=True,
    envvar=env("SHARED_INBOUND"),
    help="Read exports from one inbound stream per NATS cluster, shared by every agent whose "
    "streams are placed there (each with its own consumer), instead of one per cluster: "
    "N x C stream sources instead of C x C when clusters share NATS clusters. Every agent of "
    "that NATS cluster must say the same.",
)
@file_option("--signing-key", "This cluster's Ed25519 key: sign every event.")
@file_option("--trust-bundle", "Peers' public keys: reject unsigned/forged events.")
@click.option("--nats-user", default=None, envvar=env("NATS_USER"))
@file_option("--nats-password-file", "Re-read when it changes: a rotation needs no restart.")
@file_option("--nats-nkey", "Log in with this nkey user seed (re-read: a new key, a new login).")
@file_option(
    "--nats-creds",
    "Operator mode: log in with this .creds file (user JWT + seed; re-read: a new one, a new "
    "login). `federation keygen --nats-creds` writes one.",
)
@file_option("--nats-ca", "TLS: the CA that signed the NATS servers' certificates.")
@file_option("--nats-cert", "TLS: this agent's client certificate (re-read).")
@file_option("--nats-key", "TLS: the client certificate's key.")
@click.option(
    "--haproxy-socket",
    default=None,
    metavar="PATH|tcp://HOST:PORT",
    envvar=env("HAPROXY_SOCKET"),
    help="Feed HAProxy: program one backend per import through its runtime API "
    "(stats socket, level admin). See `federation haproxy-config`.",
)
@click.option(
    "--haproxy-backend",
    default=FeedSettings.haproxy_backend,
    show_default=True,
    envvar=env("HAPROXY_BACKEND"),
    help="The HAProxy backend of an import ({namespace}, {name}).",
)
@click.option(
    "--haproxy-drain",
    default=FeedSettings.haproxy_drain,
    show_default=True,
    type=click.FloatRange(0),
    envvar=env("HAPROXY_DRAIN"),
    help="Seconds a withdrawn or dead backend's server stays at weight 0 before it is deleted.",
)
@click.option(
    "--envoy-eds-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    envvar=env("ENVOY_EDS_DIR"),
    help="Feed Envoy: write one EDS DiscoveryResponse per import here (path_config_source).",
)
@click.option(
    "--envoy-mode",
    default=FeedSettings.envoy_mode,
    show_default=True,
    type=click.Choice(["parent", "endpoint"]),
    envvar=env("ENVOY_MODE"),
    help="EDS endpoints: the exporters' parent Gateways, or their EPPs.",
)
@click.option(
    "--weights-mode",
    default=Settings.weights_mode,
    show_default=True,
    type=click.Choice(WEIGHTS_MODES),
    envvar=env("WEIGHTS_MODE"),
    help="How weights are made: the capacity plan, or fixed: static (equal over the backends "
    'that can serve) or local-only (here while it can serve). README "Weights".',
)
@click.option(
    "--overflow-ratio",
    default=Settings.overflow_ratio,
    show_default=True,
    type=click.FloatRange(min=0),
    envvar=env("OVERFLOW_RATIO"),
    help="Beyond the whole set's capacity, the cluster with the fewest ready pods takes what "
    "the others cannot hold when the rest have this many times its pods; 0: never. README "
    '"Weights".',
)
@click.option(
    "--gateway-api/--no-gateway-api",
    default=FeedSettings.gateway_api,
    show_default=True,
    envvar=env("GATEWAY_API"),
    help="Feed every Gateway API implementation: a Service + EndpointSlice per remote backend, "
    "and the backendRefs weights of HTTPRoutes labelled inference-federation.io/route-weights="
    "true.",
)
@click.option(
    "--xds-port",
    default=None,
    type=click.IntRange(0, 65535),
    envvar=env("XDS_PORT"),
    help="Feed Envoy over gRPC: an ADS server (EDS, state of the world) on this port (0: any).",
)
@click.option(
    "--xds-host",
    default=FeedSettings.xds_host,
    show_default=True,
    envvar=env("XDS_HOST"),
    help="The xDS server's address.",
)
@file_option("--xds-cert", "xDS mutual TLS: the server's certificate (re-read on change).")
@file_option("--xds-key", "xDS mutual TLS: its key.")
@file_option("--xds-client-ca", "xDS mutual TLS: the CA that signed the gateways' certificates.")
@click.option(
    "--annotation-interval",
    default=FeedSettings.annotation_interval,
    show_default=True,
    type=click.FloatRange(0),
    envvar=env("ANNOTATION_INTERVAL"),
    help="At most one weights-annotation write per import per this many seconds.",
)
@click.option(
    "--annotation-threshold",
    default=FeedSettings.annotation_threshold,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    envvar=env("ANNOTATION_THRESHOLD"),
    help="...and only for a weight move this large (of 1,000,000) or a backend starting or "
    "stopping to serve.",
)
@click.option(
    "--insecure",
    is_flag=True,
    envvar=env("INSECURE"),
    help="Run without signed events or a protected NATS login (refused otherwise): logged, "
    "exposed as federation_insecure 1 and shown in status.",
)
@click.option(
    "--shutdown-timeout",
    default=ProcessOptions.shutdown_timeout,
    show_default=True,
    type=click.FloatRange(0.1),
    envvar=env("SHUTDOWN_TIMEOUT"),
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
    max_clock_offset: float,
    trace_file: Path | None,
    load_messages: str,
    export_messages: str,
    shared_inbound: bool,
    signing_key: Path | None,
    trust_bundle: Path | None,
    nats_user: str | None,
    nats_password_file: Path | None,
    nats_nkey: Path | None,
    nats_creds: Path | None,
    nats_ca: Path | None,
    nats_cert: Path | None,
    nats_key: Path | None,
    haproxy_socket: str | None,
    haproxy_backend: str,
    haproxy_drain: float,
    envoy_eds_dir: Path | None,
    envoy_mode: str,
    weights_mode: str,
    overflow_ratio: float,
    gateway_api: bool,
    xds_port: int | None,
    xds_host: str,
    xds_cert: Path | None,
    xds_key: Path | None,
    xds_client_ca: Path | None,
    annotation_interval: float,
    annotation_threshold: int,
    insecure: bool,
    shutdown_timeout: float,
    verbose: bool,
) -> None:
    """Run this cluster's federation agent until SIGTERM (production)."""
    setup_logging(verbose)
    logging.getLogger("federation").setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        settings = Settings(
            clusterset=clusterset,
            cluster=cluster,
            members=split_list(members),
            nats_url=nats_url,
            nats_cluster=nats_cluster,
            lease=lease,
            grace=grace,
            max_clock_offset=max_clock_offset,
            load_messages=load_messages,
            export_messages=export_messages,
            shared_inbound=shared_inbound,
            weights_mode=weights_mode,
            overflow_ratio=overflow_ratio,
            controller_name=controller_name or DEFAULT_CONTROLLER_NAME,
            feeds=FeedSettings(
                haproxy_socket=haproxy_socket,
                haproxy_backend=haproxy_backend,
                haproxy_drain=haproxy_drain,
                envoy_eds_dir=envoy_eds_dir,
                envoy_mode=envoy_mode,
                gateway_api=gateway_api,
                xds_port=xds_port,
                xds_host=xds_host,
                xds_cert=xds_cert,
                xds_key=xds_key,
                xds_client_ca=xds_client_ca,
                annotation_interval=annotation_interval,
                annotation_threshold=annotation_threshold,
            ),
        )
        options = ProcessOptions(
            kube_url=kube_url,
            kubeconfig=kubeconfig,
            namespaces=split_list(namespaces),
            http_host=http_host,
            http_port=http_port,
            trace_file=trace_file,
            shutdown_timeout=shutdown_timeout,
            signing_key=signing_key,
            trust_bundle=trust_bundle,
            nats_user=nats_user,
            nats_password_file=nats_password_file,
            nats_nkey=nats_nkey,
            nats_creds=nats_creds,
            nats_ca=nats_ca,
            nats_cert=nats_cert,
            nats_key=nats_key,
            insecure=insecure,
        )
        from federation.app.process import preflight, run_agent

        preflight(options)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(asyncio.run(run_agent(settings, options)))
