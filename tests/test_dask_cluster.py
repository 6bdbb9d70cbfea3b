"""A run on a real Dask cluster without a shared filesystem: a ``dask scheduler`` and two ``dask worker`` processes
started by the test, in a working folder of their own, with the run folder made a path they cannot reach
(tests/dask_guard.py refuses, and logs, any file operation there). Cells get the trained models they need as the
futures of the cells that made them, or, on resume, as models the runner read back and scattered; the tables and
the stored models are identical to an inline run's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tables import SAME_MACHINE, assert_tables_equal
from transferlab.experiments import runner
from transferlab.experiments.config import parse_config
from transferlab.experiments.store import Store
from transferlab.report import build_report

pytest.importorskip("distributed")

TESTS = Path(__file__).resolve().parent
#: a golden-sized config with an ensemble surrogate and a detector: every kind of model input a craft cell takes
CONFIG = {
    "name": "dask-cluster", "dataset": {"name": "mnist89"},
    "split": {"n_target": 40, "n_surrogate": 40, "n_test": 12, "n_validation": 20}, "repetitions": 1,
    "surrogate_fractions": [1.0, 0.5], "surrogates": ["logistic_l", "svm_rbf_h", "nn_l", "ens"],
    "ensembles": {"ens": ["logistic_l", "svm_l"]}, "targets": ["logistic_l", "svm_rbf_h", "nn_l", "rf_l"],
    "model_overrides": {"nn_l": {"epochs": 2}}, "attack": {"norm": 2, "eps": [0, 1, 2], "solver": {"max_iter": 8}},
    "detector": {"fpr": 0.1}, "variance": {"n_surrogates": 2}, "seed": 5,
}
START_TIMEOUT = 45


def _start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for(what: str, ready, processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        dead = [p for p in processes if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            pytest.fail(f"the Dask cluster did not start ({what}):\n{tails}")
        time.sleep(0.2)


@pytest.fixture
def cluster(tmp_path):
    """(scheduler address, forbidden run folder, guard log) of a scheduler and two workers that cannot reach the
    run folder; every process is ended when the test ends."""
    run_dir, side = tmp_path / "run", tmp_path / "cluster"
    side.mkdir()
    guard_log = side / "guard.log"
    import transferlab

    env = {**os.environ, "PYTHONPATH": str(Path(transferlab.__file__).resolve().parents[1]),
           "TRANSFERLAB_FORBIDDEN": str(run_dir), "TRANSFERLAB_GUARD_LOG": str(guard_log),
           "OMP_NUM_THREADS": "1", "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    scheduler_file = side / "scheduler.json"
    processes, logs = [], [side / "scheduler.log", side / "worker0.log", side / "worker1.log"]
    try:
        processes.append(_start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                                 "--no-dashboard", "--scheduler-file", str(scheduler_file)], side, env, logs[0]))
        _wait_for("scheduler", scheduler_file.is_file, processes, logs)
        for k in range(2):
            folder = side / f"worker{k}"
            folder.mkdir()
            processes.append(_start(["distributed.cli.dask_worker", "--scheduler-file", str(scheduler_file),
                                     "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                     "--death-timeout", "60", "--local-directory", str(folder),
                                     "--preload", str(TESTS / "dask_guard.py")], folder, env, logs[1 + k]))
        armed = lambda: guard_log.is_file() and _armed(guard_log) == 2  # noqa: E731
        _wait_for("two workers with the guard", armed, processes, logs)
        yield json.loads(scheduler_file.read_text())["address"], run_dir, guard_log
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _armed(guard_log: Path) -> int:
    """How many worker processes armed the guard."""
    return len({line.split()[1] for line in guard_log.read_text().splitlines() if line.startswith("armed")})


def _model_checksums(run_dir: Path) -> dict[str, str]:
    with sqlite3.connect(run_dir / "store.sqlite") as db:
        rows = db.execute("SELECT cell_id, files FROM cells WHERE stage='train'").fetchall()
    return {cell_id: files for cell_id, files in rows}


def test_a_dask_cluster_needs_no_shared_filesystem(cluster, tmp_path):
    address, run_dir, guard_log = cluster
    config = parse_config(CONFIG)
    inline = runner.run_experiment(config, tmp_path / "inline", show_progress=False)
    build_report(inline)
    build_report(runner.run_experiment(config, run_dir, scheduler=address, show_progress=False))
    for table in ("results.csv", "metrics.csv"):
        assert_tables_equal(run_dir / table, inline / table, **SAME_MACHINE)
    assert _model_checksums(run_dir) == _model_checksums(inline)  # the same model files, byte for byte
    # resume: the craft cells run again on models a previous run stored (read back by the runner, scattered)
    store = Store(run_dir / "store.sqlite")
    try:
        for row in store.table("cells"):
            if row["stage"] == "craft":
                store.forget(row["cell_id"])
    finally:
        store.close()
    build_report(runner.run_experiment(config, run_dir, scheduler=address, show_progress=False))
    for table in ("results.csv", "metrics.csv"):
        assert_tables_equal(run_dir / table, inline / table, **SAME_MACHINE)
    log = guard_log.read_text()
    assert "blocked" not in log and _armed(guard_log) == 2
    # positive control: the guard does refuse a worker that reads the run folder, and logs it
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT) as client:
        with pytest.raises(PermissionError, match="touched the run folder"):
            client.submit(open, str(run_dir / "store.sqlite"), "rb", pure=False).result()
    assert "blocked open" in guard_log.read_text()
