"""Where cells run: inline, in local worker processes, or on a Dask cluster. Every executor takes the parsed
config, the stages of cells to run and a way to read back a stored model, and yields each cell's output as it
finishes (in any order); the runner, the run folder's one writer, stores it. No executor hands a cell the run
folder: a cell receives the trained models it needs (its kind's ``needs``) as artifacts — the futures of the cells
that make them on Dask, the parent's read-back of what the runner stored otherwise (and for models a previous run
stored) — so Dask workers need no shared filesystem."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from threadpoolctl import threadpool_limits

from transferlab.errors import ConfigError, shown
from transferlab.experiments import evasion, poisoning
from transferlab.experiments.artifacts import ModelArtifact
from transferlab.experiments.common import Cell, CellOutput
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.lifeline import end_with_parent

#: reads back the stored model of a train cell (the runner's :func:`~transferlab.experiments.artifacts.read_model`)
Stored = Callable[[Cell], ModelArtifact]

#: experiment kind -> the module with its ``plan``, ``check_data`` and ``run_cell``
KINDS = {"evasion": evasion, "poisoning": poisoning}

#: a Dask scheduler address: ``host:port`` or ``scheme://host:port`` (host a name, an IPv4 or a bracketed IPv6)
SCHEDULER_ADDRESS = re.compile(r"^(?:(?P<scheme>tcp|tls|ws|wss|ucx)://)?"
                               r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?)"
                               r":(?P<port>[0-9]{1,5})$")


def check_scheduler(address: object) -> str:
    """A Dask scheduler address checked for its form before anything connects or writes (e.g. ``tcp://host:8786``
    or ``host:8786``); a ConfigError naming ``--scheduler`` otherwise."""
    match = SCHEDULER_ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"--scheduler {shown(address, 60)} is not a Dask scheduler address; give host:port or "
                          "tcp://host:port (port 1 to 65535), e.g. tcp://10.0.0.5:8786")
    return address


_MALLOC_TUNED = False


def tune_malloc() -> None:
    """Keep freed memory in the process instead of returning it to the kernel at once (glibc's mallopt).

    An attack allocates temporaries of tens of MB per line-search candidate (candidates × points × features);
    with glibc's defaults each is mapped and unmapped, and a paper-scale craft cell spent as much time in page
    faults (system time) as in computation. Raising the trim threshold and the top pad, and the mmap threshold to
    its 32 MB maximum, halves such a cell's wall time; results are unchanged. A no-op off glibc."""
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
        libc.mallopt(m_top_pad, 256 << 20)
    except (OSError, AttributeError):
        pass


def execute(config: ExperimentConfig, cell: Cell, inputs: Mapping[str, ModelArtifact | CellOutput]) -> CellOutput:
    """Compute one cell (in any process) with one torch and one BLAS thread from the trained models it needs
    (``inputs``: {cell id: the artifact, or the output of the train cell that made it}); the caller stores the
    output. The caller's torch thread count is restored afterwards (the inline executor runs cells in the user's
    own process)."""
    tune_malloc()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        models = {cell_id: _model_of(value) for cell_id, value in inputs.items()}
        start, cpu_start = time.perf_counter(), time.process_time()
        with threadpool_limits(1):
            info, rows, artifacts = KINDS[config.kind].run_cell(config, cell, models)
    finally:
        torch.set_num_threads(threads)
    info = {**info, "cpu_seconds": time.process_time() - cpu_start}  # the cell's CPU time (one thread), for benches
    return CellOutput(cell.cell_id, cell.stage, time.perf_counter() - start, info, rows, artifacts)


def _model_of(value: ModelArtifact | CellOutput) -> ModelArtifact:
    """A trained model given as its artifact, or as the output of its train cell (a resolved Dask future)."""
    if isinstance(value, CellOutput):
        return next(a for a in value.artifacts.values() if isinstance(a, ModelArtifact))
    return value


def _stored_inputs(config: ExperimentConfig, cell: Cell, stored: Stored) -> dict[str, ModelArtifact]:
    return {need.cell_id: stored(need) for need in KINDS[config.kind].needs(config, cell)}


def inline(config: ExperimentConfig, stages: Sequence[Sequence[Cell]], stored: Stored, workers: int,
           scheduler: str | None) -> Iterator[CellOutput]:
    """Cells one after the other in this process (a stage's inputs are read back once the runner stored the
    stages before)."""
    for stage in stages:
        for cell in stage:
            yield execute(config, cell, _stored_inputs(config, cell, stored))


def processes(config: ExperimentConfig, stages: Sequence[Sequence[Cell]], stored: Stored, workers: int,
              scheduler: str | None) -> Iterator[CellOutput]:
    """Cells in ``workers`` local processes, each handed out as soon as the models it needs are stored (not stage
    after stage: a white-box cell starts once its target is trained, while other models still train), the most
    expensive ready cell first (:func:`schedule_key`), so the workers finish together rather than one waiting
    for a long cell handed out last. At most two cells per worker are handed out at a time, so the parent holds
    the inputs of a few cells only. Where a cell runs changes nothing it computes."""
    kind = KINDS[config.kind]
    waiting = sorted((cell for stage in stages for cell in stage), key=lambda c: schedule_key(config, c))
    unfinished = {cell.cell_id for cell in waiting}  # a need not among them is stored (this run or an earlier one)
    needs = {cell.cell_id: [n.cell_id for n in kind.needs(config, cell)] for cell in waiting}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=end_with_parent, initargs=(os.getpid(),))
    try:
        pending: set = set()
        while waiting or pending:
            while len(pending) < 2 * workers:
                ready = next((c for c in waiting if not any(n in unfinished for n in needs[c.cell_id])), None)
                if ready is None:
                    break
                waiting.remove(ready)
                pending.add(pool.submit(execute, config, ready, _stored_inputs(config, ready, stored)))
            if not pending:  # cannot happen for a plan whose needs are its own earlier cells or stored ones
                raise RuntimeError(f"cells wait for models no cell makes: {[c.cell_id for c in waiting[:3]]}")
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                output = future.result()
                yield output
                unfinished.discard(output.cell_id)  # the runner stored it when the generator resumes
    except BaseException:
        # Ctrl-C or a failed cell: the cells still running would be discarded anyway, so the workers are stopped
        # rather than waited for (the resumed run recomputes them)
        stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the pool's worker processes (they ignore Ctrl-C, see :func:`~transferlab.experiments.lifeline.
    end_with_parent`, and store nothing themselves): ``kill_workers`` where the executor has it (Python 3.14),
    else through its process table. The parent's own end of the result pipe is closed first: a worker killed half
    way through sending a result would otherwise leave the pool's reader waiting for the rest of the message
    forever (the parent holds a writing end too, so no end of file comes), and the pool's shutdown with it."""
    if hasattr(pool, "kill_workers"):
        pool.kill_workers()
        return
    writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
    if writer is not None:
        writer.close()
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.kill()


def schedule_key(config: ExperimentConfig, cell: Cell) -> tuple[int, float]:
    """The order cells are handed out in (smallest first): the train cells of targets first (every transfer cell
    needs all of them), then by the kind's cost estimate, largest first (a kind without one keeps its plan's
    order)."""
    cost = getattr(KINDS[config.kind], "cost", None)
    first = cell.stage == "train" and cell.role == "target"
    return (0 if first else 1, -(cost(config, cell) if cost is not None else 0.0))


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ignore SIGINT while the block starts processes, which keep ignoring it (a disposition set to ignore is
    inherited, and Python leaves it so): Ctrl-C, which the terminal sends to the whole process group, then reaches
    the run alone, which stops its workers itself. A Ctrl-C pressed inside the block itself (while a local Dask
    cluster starts, a few seconds) is ignored too: press it again. A no-op outside the main thread, where Python
    cannot set it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def dask(config: ExperimentConfig, stages: Sequence[Sequence[Cell]], stored: Stored, workers: int,
         scheduler: str | None) -> Iterator[CellOutput]:
    """Cells on a Dask distributed cluster (``scheduler`` address; a local cluster of ``workers`` processes when
    None), every stage submitted at once: a cell that needs a trained model gets the future of the train cell that
    makes it (Dask moves the model between workers), or a model a previous run stored, read back here and
    scattered once. Workers never see the run folder; they read only the data (an embedded dataset, or the
    config's data and saved-model paths, which they must see)."""
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("the dask executor needs dask[distributed]: pip install 'transferlab[dask]'") from None
    cluster = None
    if not scheduler:
        with ctrl_c_ignored():  # the local workers start ignoring it; the run closes the cluster on Ctrl-C
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        client = Client(scheduler or cluster, timeout="20s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r} ({exc}); check the address "
                          "(e.g. tcp://host:8786) and that the scheduler is running") from None
    try:
        run = uuid.uuid4().hex[:12]  # task keys are global on a scheduler: another run's cells must not match
        made: dict[str, Any] = {}  # cell id -> the future of a cell of this run, or of a stored model scattered
        futures = []
        for stage in stages:
            for cell in stage:
                inputs = {}
                for need in KINDS[config.kind].needs(config, cell):
                    if need.cell_id not in made:
                        made[need.cell_id] = client.scatter(stored(need), hash=False)
                    inputs[need.cell_id] = made[need.cell_id]
                future = client.submit(execute, config, cell, inputs, key=f"{cell.cell_id.replace('/', '-')}-{run}",
                                       pure=False)
                made[cell.cell_id] = future
                futures.append(future)
        made.clear()  # a model stays on the cluster while a cell that needs it has not finished
        pending = dask_completed(futures)
        del futures  # a finished cell's output leaves the cluster once it is stored
        for future in pending:
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


EXECUTORS: dict[str, Callable[..., Iterator[CellOutput]]] = {"inline": inline, "processes": processes, "dask": dask}
