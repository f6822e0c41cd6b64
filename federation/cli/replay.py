"""``federation replay``: the events of the streams, or what a cluster believed at a moment."""

from __future__ import annotations

from pathlib import Path

import click

from federation.cli import main
from federation.cli.output import (
    fail,
    print_json,
    print_json_line,
    print_view,
    run_until_signalled,
    setup_logging,
)


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
    type=click.Choice(["export", "exports", "load", "digest", "beat", "invalid"]),
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
    from federation.app.replay import ReplayError, ReplayRequest, ReplayUsage, replay
    from federation.kit.stores import serve_store_copy
    from federation.tables import replay_table, state_table

    setup_logging(False, quiet=True)
    request = ReplayRequest(
        nats_url=nats_url, data_dir=data_dir, clusterset=clusterset, since=since, until=until,
        clusters=clusters, pools=pools, types=types, state_at=state_at, as_cluster=as_cluster,
        lease=lease, grace=grace, slow_start=slow_start,
    )  # fmt: skip
    try:
        kind, result = run_until_signalled(replay(request, serve_store_copy))
    except ReplayUsage as exc:
        raise click.UsageError(str(exc)) from None
    except (ReplayError, OSError) as exc:
        fail("replay", exc, 2)
    if kind == "events":
        if as_json:
            for r in result:
                print_json_line(r)
        else:
            print_view(replay_table(result))
    elif as_json:
        print_json(result)
    else:
        print_view(state_table(result))
