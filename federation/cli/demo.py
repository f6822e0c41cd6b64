"""``federation demo``: simulated clusters on one machine (the kit, imported when run)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from federation.cli import main
from federation.cli.output import print_json, run_until_signalled, setup_logging
from federation.settings import WEIGHTS_MODES


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
    help="At the end, write every InferencePool, InferencePoolImport, HTTPRoute, Service and "
    "EndpointSlice of every cluster as JSON to DIR/<cluster>/<Kind>/<namespace>.<name>.json.",
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
@click.option(
    "--skew",
    "skews",
    multiple=True,
    metavar="CLUSTER=SECONDS",
    help="Run this cluster's agent and EPP scraper on a clock this far off (repeatable; "
    "negative: behind).",
)
@click.option(
    "--weights-mode",
    default="capacity",
    show_default=True,
    type=click.Choice(WEIGHTS_MODES),
    help="The agents' weights: the capacity plan, or a fixed baseline (compare them with "
    "--traffic on the same requests).",
)
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
    skews: tuple[str, ...],
    weights_mode: str,
    verbose: bool,
) -> None:
    """Federate N simulated clusters over an embedded NATS supercluster."""
    import shutil

    from federation.kit.sim.planning import DemoRequest, plan_demo
    from federation.kit.sim.running import run_demo

    setup_logging(verbose, quiet=as_json)
    request = DemoRequest(
        clusters=clusters, pools=pools, data_dir=data_dir, trace_file=trace_file,
        kill_cluster=kill_cluster, kill_at=kill_at, revive_at=revive_at, secure=secure,
        spoof=spoof, traffic=traffic, burst_cluster=burst_cluster, burst_at=burst_at,
        burst_for=burst_for, burst_factor=burst_factor, skews=skews, weights_mode=weights_mode,
    )  # fmt: skip
    try:
        options, chaos = plan_demo(request, has_haproxy=shutil.which("haproxy") is not None)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    console = None if as_json else Console(stderr=False)
    snapshot = run_until_signalled(
        run_demo(
            options, duration=duration, console=console, chaos=chaos, dump_to=dump_objects,
            spoof=spoof,
        )
    )  # fmt: skip
    if as_json:
        print_json(snapshot)
