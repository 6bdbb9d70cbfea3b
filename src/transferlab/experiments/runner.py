"""Run an experiment: plan its cells (the module of its kind), execute what is not in the store yet (inline, in
local worker processes, or on a Dask cluster), and record each finished cell in one transaction. The report is
built from the store afterwards, by the caller (``transferlab.report``; experiments never import it)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import transferlab
from transferlab.errors import ConfigError
from transferlab.experiments.common import clear_cache
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.executors import EXECUTORS, KINDS
from transferlab.experiments.store import Store


def run_experiment(config: ExperimentConfig, out: str | os.PathLike, workers: int = 1, executor: str | None = None,
                   scheduler: str | None = None, force: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) ``config`` in folder ``out``; returns the run folder (``transferlab.report.build_report``
    then writes its tables, figures and report).

    ``executor``: ``inline`` (default for one worker), ``processes`` (default for several), or ``dask`` (with a
    ``scheduler`` address, or a local cluster). Results are the same whatever the executor and worker count.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    executor = executor or ("inline" if workers == 1 and scheduler is None else
                            "dask" if scheduler else "processes")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    run_dir = Path(out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_yaml = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    store = Store(run_dir / "store.sqlite")
    try:
        store.claim(config.identity_hash(), config_yaml, force)
        tmp = run_dir / "config.yaml.tmp"
        tmp.write_text(config_yaml)
        os.replace(tmp, run_dir / "config.yaml")
        clear_cache()
        kind = KINDS[config.kind]
        kind.check_data(config)  # load and split the data here: a data problem stops the run at once
        done = store.done_cells(run_dir)
        stages = kind.plan(config)
        started = time.time()
        columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not show_progress, transient=False) as progress:
            for stage in stages:
                todo = [c for c in stage if c.cell_id not in done]
                task = progress.add_task(stage[0].stage, total=len(stage), completed=len(stage) - len(todo))
                for output in EXECUTORS[executor](str(run_dir), config, todo, workers, scheduler):
                    store.record(output.cell_id, output.stage, output.seconds, output.files, output.info,
                                 output.rows)
                    progress.advance(task)
        store.set_meta("versions", json.dumps(_versions()))
        store.set_meta("last_run", json.dumps({"seconds": time.time() - started, "workers": workers,
                                               "executor": executor}))
    finally:
        store.close()
    return run_dir


def _versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import scipy
    import sklearn
    import torch

    return {"transferlab": transferlab.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "matplotlib": matplotlib.__version__, "platform": platform.platform()}
