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
from transferlab.errors import ConfigError, TransferlabError

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
    out: Optional[str] = typer.Option(None, "--out", help="Run folder (default: runs/<config name>)."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes (at least 1)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset path (e.g. the full MNIST folder)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda."),
    executor: Optional[str] = typer.Option(None, "--executor", help="inline, processes or dask."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Dask scheduler address (implies dask)."),
    force: bool = typer.Option(False, "--force", help="Discard a run of a different config in --out."),
) -> None:
    """Run (or resume) an experiment and write its report."""
    from transferlab.experiments.config import load_config
    from transferlab.experiments.runner import run_experiment

    cfg = load_config(config, data_path=data, device=device)
    run_dir = run_experiment(cfg, out if out is not None else Path("runs") / cfg.name, workers=workers,
                             executor=executor, scheduler=scheduler, force=force)
    from transferlab.report import build_report  # matplotlib: loaded once there is a run to report

    console.print(f"report: {build_report(run_dir)}")


@app.command()
def audit(
    source: str = typer.Argument(..., help="A finished evasion run folder, or a preset / YAML config to train from."),
    target: str = typer.Option(..., "--target", help="The target model (a name of the run or registry)."),
    surrogates: Optional[str] = typer.Option(None, "--surrogates", help="Comma-separated candidate surrogates "
                                             "(default: the config's or the run's)."),
    eps: Optional[str] = typer.Option(None, "--eps", help="Comma-separated budgets > 0 (default: the config's)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset path (with a config)."),
    points: Optional[int] = typer.Option(None, "--points", help="Test points to predict on (with a config; "
                                         "default 300)."),
    repetition: int = typer.Option(0, "--repetition", help="Repetition of the run to audit."),
) -> None:
    """Predict, without attacking, how well each surrogate's attacks transfer to a target (S, R, V and the
    linearised transfer rate, Eq. 16), ranked; beside a run's measured rates when given a run folder."""
    import math

    from transferlab.audit import agreement, audit_config, audit_run, check_budgets, check_names

    # every option checked here, before a model is loaded or trained (the audit functions check the rest)
    budgets = check_budgets(eps, "--eps") if eps is not None else None
    names = check_names(surrogates, "--surrogates")
    if (Path(source) / "store.sqlite").is_file():
        if data is not None:
            raise ConfigError("--data goes with a config; a run folder is audited on the data it was run on")
        if points is not None:
            raise ConfigError("--points goes with a config; a run folder is audited on its own attacked points")
        rows = audit_run(source, target, repetition=repetition, eps=budgets, surrogates=names)
    else:
        from transferlab.experiments.config import load_config

        cfg = load_config(source, data_path=data)
        rows = audit_config(cfg, target, names, n_points=300 if points is None else points, repetition=repetition,
                            eps=budgets)
    table = Table("surrogate", "ε", "S", "R", "V", "predicted", "rank", "measured")
    fmt = lambda v: "" if not math.isfinite(v) else f"{v:.3g}"  # noqa: E731
    for row in sorted(rows, key=lambda r: (r.budget, r.rank, r.surrogate)):
        table.add_row(row.surrogate, f"{row.budget:g}", fmt(row.S), fmt(row.R), fmt(row.V),
                      "" if not math.isfinite(row.predicted) else f"{row.predicted:.3f}",
                      str(row.rank) if row.rank else "", fmt(row.measured))
    console.print(table)
    for note in dict.fromkeys(r.note for r in rows if r.note):  # each once, in order
        console.print(f"note: {note}", soft_wrap=True)
    if any(math.isfinite(r.measured) and math.isfinite(r.predicted) for r in rows):
        summary = Table("ε", "surrogates", "Spearman ρ (pred. vs measured)", "p", "mean abs. error")
        for a in agreement(rows):
            summary.add_row(f"{a['budget']:g}", str(a["n_surrogates"]), fmt(a["spearman_rho"]), fmt(a["spearman_p"]),
                            fmt(a["mae"]))
        console.print(summary)


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
