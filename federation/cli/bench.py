"""``federation bench``: the benchmarks (the kit, imported when run)."""

from __future__ import annotations

import math
from pathlib import Path

import click

from federation.cli import main
from federation.cli.output import print_json, print_view, run_until_signalled, setup_logging


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value}: a finite number >= 0 (0: off)")
    return value


@main.command()
@click.argument("scenarios", nargs=-1, type=click.Choice(
    ["raw", "ingest", "propagation", "scale", "routing"]))  # fmt: skip
@click.option("--quick", is_flag=True, help="Smaller runs (scale 20 x 50); minutes, not tens.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--scenario-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Run this one routing scenario instead of the family (JSON: clusters with slots, rate "
    "and bursts; docs/examples/routing/ has examples).",
)
@click.option(
    "--family-seed", type=int, default=2026, show_default=True,
    help="Seed of the generated routing scenarios (the family: named + generated).",
)  # fmt: skip
@click.option(
    "--family-size", type=click.IntRange(0, 200), default=16, show_default=True,
    help="How many routing scenarios to generate beside the named ones.",
)  # fmt: skip
@click.option(
    "--demand-source", type=click.Choice(["epp", "gateway"]), default="epp", show_default=True,
    help="Where the simulated agents take a pool's demand from: the EPP's request counter, as "
    "the agent does today, or a gateway that counts what it is offered.",
)  # fmt: skip
@click.option(
    "--overflow-ratio", type=click.FloatRange(min=0), default=None, callback=_finite,
    help="Routing: the agents' --overflow-ratio (default: the agent's default; 0: no overflow).",
)  # fmt: skip
@click.option(
    "--clusters",
    type=click.IntRange(2, 500),
    default=None,
    help="Scale: clusters, one agent process each (default 100; --quick 20).",
)
@click.option(
    "--pools",
    type=click.IntRange(1, 1000),
    default=None,
    help="Scale: pools (per cluster with --shape own; default 100; --quick 50).",
)
@click.option(
    "--shape", type=click.Choice(["own", "shared"]), default="own", show_default=True,
    help="Scale: each cluster exports P pools of its own (own), or P pools are each exported "
    "by a random third of the clusters (shared).",
)  # fmt: skip
@click.option(
    "--inbound", type=click.Choice(["shared", "own"]), default="shared", show_default=True,
    help="Scale: the agents read exports from one inbound stream per NATS cluster (shared, "
    "as `federation agent --shared-inbound`: clusters here share 4 NATS clusters) or from one "
    "per cluster (own: C x C stream sources).",
)  # fmt: skip
@click.option(
    "--agents-nice", type=click.IntRange(0, 19), default=None,
    help="Scale: added to the agent processes' nice value (default 10). In production the NATS "
    "servers have CPUs of their own; here 100 agents at the servers' priority starve them in "
    "the cold start (JetStream acks beyond 5 s). 0: the servers' priority.",
)  # fmt: skip
def bench(
    scenarios: tuple[str, ...],
    quick: bool,
    as_json: bool,
    scenario_file: Path | None,
    family_seed: int,
    family_size: int,
    demand_source: str,
    overflow_ratio: float | None,
    clusters: int | None,
    pools: int | None,
    shape: str,
    inbound: str,
    agents_nice: int | None,
) -> None:
    """Measure ingest, propagation, scale and routing quality against the raw NATS baseline."""
    from federation.kit.bench.routing_scenarios import Scenario, scenario_family
    from federation.kit.bench.running import run_bench
    from federation.tables import bench_view

    setup_logging(False, quiet=True)
    if scenario_file is not None:
        try:
            family = [Scenario.from_json(scenario_file.read_text())]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise click.UsageError(f"{scenario_file}: {exc}") from None
    else:
        family = scenario_family(seed=family_seed, size=4 if quick else family_size)
    doc = run_until_signalled(
        run_bench(
            list(scenarios), quick=quick, routing=family, demand_source=demand_source,
            overflow_ratio=overflow_ratio, clusters=clusters, pools=pools, shape=shape,
            shared_inbound=inbound == "shared", agents_nice=agents_nice,
        )
    )  # fmt: skip
    if as_json:
        print_json(doc)
    else:
        print_view(bench_view(doc))
