"""Small commands: ``status``, ``weights``, ``keygen``, ``haproxy-config``, ``schemas``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from federation import schemas
from federation.cli import main
from federation.cli.output import env, fail, print_json, print_view
from federation.settings import FeedSettings


@main.command("haproxy-config")
@click.option("--cluster", required=True, envvar=env("CLUSTER"), help="This cluster's name.")
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
    envvar=env("HAPROXY_BACKEND"),
    help="The backend naming rule (the same as the agent's).",
)
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="The entry listener.")
def haproxy_config(cluster: str, pools: tuple[str, ...], haproxy_backend: str, bind: str) -> None:
    """Print the haproxy.cfg frontend and backends the agent's HAProxy feed programs."""
    from federation.model.haproxy_config import snippet_for
    from federation.settings import SettingsError

    try:
        FeedSettings(haproxy_backend=haproxy_backend)
        click.echo(snippet_for(pools, cluster=cluster, rule=haproxy_backend, bind=bind), nl=False)
    except (SettingsError, ValueError) as exc:
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
        fail("weights", f"{loads_file}: {exc}", 2)
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
        print_json(doc)
    else:
        print_view(weights_table(loads.pool, here, result))


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
        fail("status", exc, 1)
    if as_json:
        print_json(doc)
    else:
        print_view(status_view(doc))


@main.command("schemas")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bus-schemas"), show_default=True
)
def write_schemas(out: Path) -> None:
    """Write JSON Schema, AsyncAPI and example payloads of the bus events."""
    for path in schemas.write(out):
        click.echo(str(path))
