"""Command line: argv → options → one call into the product (``app``) or the kit. No logic, no
defaults of its own (they come from ``settings``), output formatting in ``cli.output``."""

from __future__ import annotations

import click

from federation import __version__


@click.group()
@click.version_option(__version__, prog_name="federation")
def main() -> None:
    """Hub-less multi-cluster InferencePools over NATS JetStream."""


# The commands register themselves on `main` (imported last, for that).
from federation.cli import agent, bench, demo, replay, tools  # noqa: E402

__all__ = ["agent", "bench", "demo", "main", "replay", "tools"]
