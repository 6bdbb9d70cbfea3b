"""The ``transferlab`` command line (Typer + Rich).

User errors (bad config, unknown names, missing or corrupt data) print one line to stderr and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import transferlab
from transferlab.errors import TransferlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure and explain the transferability of evasion and poisoning attacks.")
console = Console()
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        console.print(f"transferlab {transferlab.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of errors."),
) -> None:
    _state["debug"] = debug


class Listable(str, Enum):
    models = "models"
    datasets = "datasets"


@app.command("list")
def list_(what: Listable = typer.Argument(..., help="models or datasets")) -> None:
    """List the registry models with their parameters, or the datasets."""
    if what is Listable.models:
        from transferlab.models import MODELS, describe

        table = Table("name", "class", "parameters", "description")
        for name, spec in MODELS.items():
            params = ", ".join(f"{k}={v}" for k, v in describe(name).items() if k not in ("device", "batch_size"))
            table.add_row(name, spec.factory.__name__, params, spec.description)
    else:
        from transferlab.datasets import DATASETS

        table = Table("name", "description")
        for name, text in DATASETS.items():
            table.add_row(name, text)
    console.print(table)


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr and exit code 2.

    Typer/Click handle usage errors (unknown option or choice: exit 2) themselves.
    """
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except TransferlabError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
