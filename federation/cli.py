"""Command line: argv → options → run. No logic lives here."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
import orjson
from rich.console import Console

from federation import __version__, schemas


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
    verbose: bool,
) -> None:
    """Federate N simulated clusters over an embedded NATS supercluster."""
    from federation.sim.demo import DemoOptions
    from federation.sim.layouts import cluster_names
    from federation.sim.running import Chaos, run_demo

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
    options = DemoOptions(clusters=clusters, pools=pools, data_dir=data_dir, trace_file=trace_file)
    console = None if as_json else Console(stderr=False)
    snapshot = asyncio.run(run_demo(options, duration=duration, console=console, chaos=chaos))
    if as_json:
        sys.stdout.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2).decode() + "\n")


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


@main.command("schemas")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bus-schemas"), show_default=True
)
def write_schemas(out: Path) -> None:
    """Write JSON Schema, AsyncAPI and example payloads of the bus events."""
    for path in schemas.write(out):
        click.echo(str(path))
