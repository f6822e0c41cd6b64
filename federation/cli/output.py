"""How the CLI speaks: logging, JSON documents and rich tables on stdout, errors on stderr."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
import orjson
from rich.console import Console, RenderableType

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def env(name: str) -> str:
    """The environment variable of a flag: ``FEDERATION_<NAME>``."""
    return f"FEDERATION_{name}"


def file_option(flag: str, help_text: str) -> Callable[[F], F]:
    """An optional file flag, also read from ``FEDERATION_<FLAG>``."""
    return click.option(
        flag,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        envvar=env(flag.removeprefix("--").upper().replace("-", "_")),
        help=help_text,
    )


T = TypeVar("T")


def run_until_signalled(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, with SIGTERM handled like Ctrl-C: the command is cancelled, so its
    ``finally`` blocks stop the servers and children it started and remove its temporary files
    (what ``timeout``, CI runners and process managers send). Exits 143 after a SIGTERM."""

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        terminated: list[bool] = []

        def terminate() -> None:
            terminated.append(True)
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, terminate)
        try:
            return await coro
        except asyncio.CancelledError:
            if terminated:
                raise SystemExit(128 + signal.SIGTERM) from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def print_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_json_line(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc).decode() + "\n")


def print_view(view: RenderableType) -> None:
    Console().print(view)


def fail(command: str, message: object, code: int) -> NoReturn:
    click.echo(f"federation {command}: {message}", err=True)
    sys.exit(code)
