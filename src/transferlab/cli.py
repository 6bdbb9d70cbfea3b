"""The ``transferlab`` command line (Typer + Rich).

User errors (bad config, unknown names, missing or corrupt data) print one line to stderr and exit with code 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

import transferlab
from transferlab.errors import TransferlabError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure and explain the transferability of evasion and poisoning attacks.")
console = Console()


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
    """--debug is read by main(), which decides how errors are shown."""


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


@app.command()
def run(
    config: str = typer.Argument(..., help="A preset name (see `transferlab presets`) or a YAML config file."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: runs/<config name>)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Local worker processes."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset path (e.g. the full MNIST folder)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    executor: Optional[str] = typer.Option(None, "--executor", help="inline, processes or dask."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (implies dask)."),
    force: bool = typer.Option(False, "--force", help="Discard a run of a different config in --out."),
) -> None:
    """Run (or resume) an experiment and write its report."""
    from transferlab.experiments.config import load_config
    from transferlab.experiments.runner import run_experiment

    from transferlab.report import build_report

    cfg = load_config(config, data_path=data, device=device)
    run_dir = run_experiment(cfg, out or Path("runs") / cfg.name, workers=workers, executor=executor,
                             scheduler=scheduler, force=force)
    console.print(f"report: {build_report(run_dir)}")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder.")) -> None:
    """Rebuild tables, figures and report.html of a run folder from its store alone."""
    from transferlab.report import build_report

    console.print(f"report: {build_report(run_dir)}")


@app.command()
def presets() -> None:
    """List the experiment presets shipped with transferlab."""
    from transferlab.experiments.config import preset_names, preset_text

    table = Table("preset", "description")
    for name in preset_names():
        first = next(line for line in preset_text(name).splitlines() if line.startswith("#"))
        table.add_row(name, first.lstrip("# "))
    console.print(table)


config_app = typer.Typer(help="Show experiment configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(preset: str = typer.Argument(..., help="Preset name.")) -> None:
    """Print a preset's YAML, to copy and edit."""
    from transferlab.experiments.config import preset_text

    print(preset_text(preset), end="")


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
