"""The ``voicefsm`` command: the only place that prints for the user and decides exit codes."""

from __future__ import annotations

from typing import Annotated

import typer

from voicefsm import __version__

app = typer.Typer(
    name="voicefsm",
    help="Phone conversations as statecharts: serve, chat with, validate, draw and test flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"voicefsm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """voicefsm: phone conversations as statecharts."""


def main() -> None:
    """Entry point of the ``voicefsm`` console script."""
    app()
