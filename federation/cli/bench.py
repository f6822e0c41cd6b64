"""``federation bench``: the benchmarks (the kit, imported when run)."""

from __future__ import annotations

from pathlib import Path

import click

from federation.cli import main
from federation.cli.output import print_json, print_view, run_until_signalled, setup_logging


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

    setup_logging(False, quiet=True)
    routing = None
    if scenario_file is not None:
        try:
            routing = Scenario.from_json(scenario_file.read_text())
        except (OSError, ValueError, TypeError) as exc:
            raise click.UsageError(f"{scenario_file}: {exc}") from None
    doc = run_until_signalled(run_bench(list(scenarios), quick=quick, routing_scenario=routing))
    if as_json:
        print_json(doc)
    else:
        print_view(bench_view(doc))
