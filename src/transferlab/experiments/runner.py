"""Run an experiment: plan its cells (the module of its kind), execute what is not in the store yet (inline, in
local worker processes, or on a Dask cluster), and store each finished cell: its artifacts (trained models,
crafted points) written into the run folder first, then its rows recorded in one transaction. The runner is the run
folder's one writer; cells only return what they make. The report is built from the store afterwards, by the
caller (``transferlab.report``; experiments never import it)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import transferlab
from transferlab.errors import ConfigError
from transferlab.experiments.artifacts import read_model, write_artifact
from transferlab.experiments.data import clear_cache, load_dataset
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.executors import EXECUTORS, KINDS, check_scheduler
from transferlab.experiments.store import Store, check_run_folder, run_path, saved_model_files, sha256_file


def run_experiment(config: ExperimentConfig, out: str | os.PathLike, workers: int = 1, executor: str | None = None,
                   scheduler: str | None = None, force: bool = False, show_progress: bool = True) -> Path:
    """Run (or resume) ``config`` in folder ``out``; returns the run folder (``transferlab.report.build_report``
    then writes its tables, figures and report).

    ``executor``: ``inline`` (default for one worker), ``processes`` (default for several), or ``dask`` (with a
    ``scheduler`` address, or a local cluster). Results are the same whatever the executor and worker count.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a whole number >= 1, got {workers!r}")
    executor = executor or ("inline" if workers == 1 and scheduler is None else
                            "dask" if scheduler else "processes")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if scheduler is not None:
        if executor != "dask":
            raise ConfigError(f"--scheduler goes with the dask executor, not {executor!r}; drop --executor or one of "
                              "them")
        check_scheduler(scheduler)
    run_dir = _check_folder(out)
    clear_cache()
    kind = KINDS[config.kind]
    kind.check_data(config)  # load, split and check the data first: a data problem stops the run before any write
    fingerprint = data_fingerprint(load_dataset(config), config.saved_models)
    config_yaml = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    _make_folder(run_dir)
    with run_folder_lock(run_dir):
        store = Store(run_path(run_dir, "store.sqlite"))
        try:
            store.claim(config.identity_hash(), config_yaml, force, fingerprint)
            tmp = run_path(run_dir, "config.yaml.tmp")
            tmp.write_text(config_yaml)
            os.replace(tmp, run_path(run_dir, "config.yaml"))
            done = store.done_cells(run_dir)
            stages = kind.plan(config)
            started = time.time()
            columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            todo = [[c for c in stage if c.cell_id not in done] for stage in stages]
            with Progress(*columns, disable=not show_progress, transient=False) as progress:
                tasks = {stage[0].stage: progress.add_task(stage[0].stage, total=len(stage),
                                                           completed=len(stage) - len(cells))
                         for stage, cells in zip(stages, todo)}
                stored = lambda cell: read_model(run_dir, cell)  # noqa: E731 (a model this run or an earlier stored)
                # closed explicitly on any exception (Ctrl-C while a cell is stored): its workers stop there
                outputs = contextlib.closing(EXECUTORS[executor](config, todo, stored, workers, scheduler))
                with outputs as cells_done:
                    for output in cells_done:
                        files: dict[str, str] = {}
                        for rel, artifact in output.artifacts.items():  # in place before the cell is marked complete
                            files.update(write_artifact(run_dir, rel, artifact))
                        store.record(output.cell_id, output.stage, output.seconds, files, output.info, output.rows)
                        progress.advance(tasks[output.stage])
            store.set_meta("versions", json.dumps(_versions()))
            store.set_meta("last_run", json.dumps({"seconds": time.time() - started, "workers": workers,
                                                   "executor": executor}))
        except OSError as exc:
            if exc.errno not in _WRITE_ERRORS:
                raise
            raise ConfigError(f"cannot write to the run folder {run_dir}: {exc.strerror or exc}; free space or "
                              "choose another --out") from None
        finally:
            store.close()
    return run_dir


#: errors of a folder that cannot take writes (full, read-only, no permission); any other OSError is a bug to show
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _check_folder(out: str | os.PathLike) -> Path:
    """The run folder's path, checked without writing anything: not a file, and no symbolic link inside (a planted
    link could make the run write or delete outside its folder)."""
    if isinstance(out, str) and not out.strip():  # an empty shell variable: Path("") is the current folder
        raise ConfigError("--out is empty; give a run folder, or leave --out out for runs/<config name>")
    run_dir = Path(out).resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir} is a file, not a folder; choose a folder for the run")
    if run_dir.is_dir():
        check_run_folder(run_dir)
    return run_dir


def _make_folder(run_dir: Path) -> None:
    """Create the run folder if needed (once the config and the data are checked); one that cannot be written is a
    clear error."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_path(run_dir, f".write-test-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to the run folder {run_dir}: {exc.strerror or exc}; choose another --out") \
            from None


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """One writer per run folder: an exclusive lock on ``.lock`` held while the run lasts. The operating system
    releases it when the process ends, even by kill -9, so a crashed run never blocks the next one."""
    handle = open(run_path(run_dir, ".lock"), "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise ConfigError(f"another transferlab run (pid {holder}) is writing to {run_dir}; wait for it to end "
                              "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def data_fingerprint(dataset, saved_models: dict[str, str] | None = None) -> str:
    """SHA-256 of the data a run reads (features, labels, class and feature names, and the files of any saved
    model it imports: a ``.skops`` or ``.onnx`` file, or every file of a ``models.save`` folder): part of the run's
    identity, so resuming a run on other data, or with a changed model file, is refused."""
    import numpy as np
    import scipy.sparse as sp

    digest = hashlib.sha256()
    X = dataset.X
    if sp.issparse(X):
        X = X.tocsr()
        for part in (X.data, X.indices, X.indptr):
            digest.update(np.ascontiguousarray(part).tobytes())
    else:
        digest.update(np.ascontiguousarray(X).tobytes())
    digest.update(str(X.shape).encode())
    digest.update(np.ascontiguousarray(dataset.y).tobytes())
    digest.update(json.dumps([list(map(str, dataset.classes)), list(dataset.feature_names or [])]).encode())
    for name, location in sorted((saved_models or {}).items()):
        digest.update(name.encode())
        for file in saved_model_files(Path(location)):
            digest.update(file.name.encode())
            digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import scipy
    import sklearn
    import torch

    return {"transferlab": transferlab.__version__, "python": platform.python_version(), "numpy": numpy.__version__,
            "scipy": scipy.__version__, "scikit-learn": sklearn.__version__, "torch": torch.__version__,
            "matplotlib": matplotlib.__version__, "platform": platform.platform()}
