"""Run an experiment: plan its cells, execute what is not in the store yet (inline, in local worker processes, or on
a Dask cluster), record each finished cell in one transaction, then write tables, figures and the report."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Iterator, Sequence

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import transferlab
from transferlab.errors import ConfigError
from transferlab.experiments import cells as cells_mod
from transferlab.experiments.cells import Cell, CellOutput, execute, plan
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.store import Store


def _execute_inline(run_dir: str, todo: Sequence[Cell], workers: int, scheduler: str | None) -> Iterator[CellOutput]:
    for cell in todo:
        yield execute(run_dir, cell)


def _execute_processes(run_dir: str, todo: Sequence[Cell], workers: int,
                       scheduler: str | None) -> Iterator[CellOutput]:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = [pool.submit(execute, run_dir, cell) for cell in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _execute_dask(run_dir: str, todo: Sequence[Cell], workers: int, scheduler: str | None) -> Iterator[CellOutput]:
    """Cells on a Dask distributed cluster (``scheduler`` address; a local cluster of ``workers`` processes when
    None). Workers must see the run folder and the data at the same paths (a shared file system)."""
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("the dask executor needs dask[distributed]: pip install 'transferlab[dask]'") from None
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    client = Client(scheduler or cluster)
    try:
        futures = [client.submit(execute, run_dir, cell, key=cell.cell_id.replace("/", "-"), pure=False)
                   for cell in todo]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


EXECUTORS = {"inline": _execute_inline, "processes": _execute_processes, "dask": _execute_dask}


def run_experiment(config: ExperimentConfig, out: str | os.PathLike, workers: int = 1, executor: str | None = None,
                   scheduler: str | None = None, force: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) ``config`` in folder ``out``; returns the path of ``report.html``.

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
        for cache in (cells_mod._config, cells_mod._dataset, cells_mod._split):
            cache.cache_clear()
        cells_mod._split(str(run_dir), 0)  # load and split the data here: a data problem stops the run at once
        done = store.done_cells(run_dir)
        stages = plan(config)
        started = time.time()
        columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, disable=not show_progress, transient=False) as progress:
            for stage in stages:
                todo = [c for c in stage if c.cell_id not in done]
                task = progress.add_task(stage[0].stage, total=len(stage), completed=len(stage) - len(todo))
                for output in EXECUTORS[executor](str(run_dir), todo, workers, scheduler):
                    store.record(output.cell_id, output.stage, output.seconds, output.files, output.info,
                                 output.rows)
                    progress.advance(task)
        store.set_meta("versions", json.dumps(_versions()))
        store.set_meta("last_run", json.dumps({"seconds": time.time() - started, "workers": workers,
                                               "executor": executor}))
    finally:
        store.close()
    from transferlab.report import build_report

    return build_report(run_dir)


def _versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import scipy
    import sklearn
    import torch

    return {"transferlab": transferlab.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "matplotlib": matplotlib.__version__, "platform": platform.platform()}
