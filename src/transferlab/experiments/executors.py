"""Where cells run: inline, in local worker processes, or on a Dask cluster. Every executor takes the parsed
config and the cells to run, and yields each cell's output as it finishes (in any order); the runner records it."""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from threadpoolctl import threadpool_limits

from transferlab.errors import ConfigError
from transferlab.experiments import evasion, poisoning
from transferlab.experiments.common import Cell, CellOutput
from transferlab.experiments.config import ExperimentConfig
from transferlab.experiments.lifeline import end_with_parent

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
        shown = repr(address) if len(repr(address)) <= 60 else repr(address)[:57] + "..."
        raise ConfigError(f"--scheduler {shown} is not a Dask scheduler address; give host:port or "
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


def execute(run_dir: str, config: ExperimentConfig, cell: Cell) -> CellOutput:
    """Compute one cell (in any process) with one torch and one BLAS thread; the caller records the output."""
    tune_malloc()
    torch.set_num_threads(1)
    start = time.perf_counter()
    with threadpool_limits(1):
        files, info, rows = KINDS[config.kind].run_cell(Path(run_dir), config, cell)
    return CellOutput(cell.cell_id, cell.stage, time.perf_counter() - start, files, info, rows)


def inline(run_dir: str, config: ExperimentConfig, todo: Sequence[Cell], workers: int,
           scheduler: str | None) -> Iterator[CellOutput]:
    for cell in todo:
        yield execute(run_dir, config, cell)


def processes(run_dir: str, config: ExperimentConfig, todo: Sequence[Cell], workers: int,
              scheduler: str | None) -> Iterator[CellOutput]:
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=end_with_parent, initargs=(os.getpid(),))
    try:
        futures = [pool.submit(execute, run_dir, config, cell) for cell in todo]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def dask(run_dir: str, config: ExperimentConfig, todo: Sequence[Cell], workers: int,
         scheduler: str | None) -> Iterator[CellOutput]:
    """Cells on a Dask distributed cluster (``scheduler`` address; a local cluster of ``workers`` processes when
    None). Workers must see the run folder and the data at the same paths (a shared file system)."""
    try:
        from distributed import Client, LocalCluster
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ConfigError("the dask executor needs dask[distributed]: pip install 'transferlab[dask]'") from None
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address=None)
    try:
        client = Client(scheduler or cluster, timeout="20s")
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise ConfigError(f"cannot reach the Dask scheduler {scheduler!r} ({exc}); check the address "
                          "(e.g. tcp://host:8786) and that the scheduler is running") from None
    try:
        futures = [client.submit(execute, run_dir, config, cell, key=cell.cell_id.replace("/", "-"), pure=False)
                   for cell in todo]
        for future in dask_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


EXECUTORS: dict[str, Callable[..., Iterator[CellOutput]]] = {"inline": inline, "processes": processes, "dask": dask}
