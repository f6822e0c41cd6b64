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
@click.option(
    "--nats-creds",
    "creds",
    is_flag=True,
    help="Write a NATS operator-mode .creds file for --cluster instead (a user JWT with exactly "
    "a cluster's permissions, signed with --account-signing-key); print the user's public key.",
)
@click.option("--clusterset", default=None, help="With --nats-creds: the ClusterSet.")
@click.option("--cluster", default=None, help="With --nats-creds: the cluster the user is for.")
@click.option(
    "--account-signing-key",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="With --nats-creds: the account's seed or one of its signing keys (SA...).",
)
@click.option(
    "--account",
    default=None,
    help="With --nats-creds and a signing key: the account's public key (A...).",
)
@click.option(
    "--expires-in",
    type=click.FloatRange(min=1),
    default=None,
    help="With --nats-creds: seconds until the user JWT expires (default: never).",
)
def keygen(
    key_file: Path,
    nkey: bool,
    creds: bool,
    clusterset: str | None,
    cluster: str | None,
    account_signing_key: Path | None,
    account: str | None,
    expires_in: float | None,
) -> None:
    """Write a new Ed25519 signing key (mode 0600) and print its public key for trust bundles."""
    from federation.adapters.nkey_file import create_user_seed
    from federation.adapters.signing import generate_key

    if key_file.exists():
        raise click.UsageError(f"{key_file} exists; refusing to overwrite a key")
    if nkey and creds:
        raise click.UsageError("--nats-nkey or --nats-creds, not both")
    if creds:
        click.echo(_write_creds(key_file, clusterset, cluster, account_signing_key, account,
                                expires_in))  # fmt: skip
        return
    click.echo(create_user_seed(key_file) if nkey else generate_key(key_file))


def _write_creds(
    path: Path,
    clusterset: str | None,
    cluster: str | None,
    signing_key: Path | None,
    account: str | None,
    expires_in: float | None,
) -> str:
    from federation.adapters.nats_creds import cluster_user, creds_identity, write_creds
    from federation.messages import is_label

    if not (clusterset and cluster and signing_key):
        raise click.UsageError(
            "--nats-creds needs --clusterset, --cluster and --account-signing-key"
        )
    for flag, value in (("--clusterset", clusterset), ("--cluster", cluster)):
        if not is_label(value):
            raise click.UsageError(f"{flag} {value!r} is not a DNS label")
    try:
        token, seed = cluster_user(signing_key.read_bytes(), clusterset, cluster, account=account,
                                   expires_in=expires_in)  # fmt: skip
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    write_creds(path, token, seed)
    if account is None:
        click.echo("note: issued as the account whose key signed it; for a signing key's users, "
                   "pass --account (the servers refuse them otherwise)", err=True)  # fmt: skip
    return creds_identity(path).split("/")[0]


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
