"""Time of the paper's MNIST89 evasion grid (the ``mnist89-evasion`` preset): repetitions run by the experiment
engine as ``transferlab run`` runs them, into a temporary run folder, with the time of every stage and cell read
back from the run's store, the projection for the preset's 10 repetitions, and the peak memory.

    python bench/grid.py --data ../shared/data/mnist                      # one repetition without the CNN, 2 workers
    python bench/grid.py --data ../shared/data/mnist --with-cnn           # the whole preset (13 targets)
    python bench/grid.py --data ../shared/data/mnist --repetitions 10     # the grid itself
    python bench/grid.py --data ../shared/data/mnist --surrogates svm_rbf_h,nn_h --eps 0,1,5 --no-sweep
                                                                          # a piece of the grid, to profile it

Default setup: the preset (13 targets, 10 surrogates on 100% and 20% of their data, 5 resampled surrogates per
surrogate and fraction for V, 9 l2 budgets, 1,000 attacked points, the MLP's weight-decay sweep) without the CNN
target, on the full MNIST (``--data``; without it the embedded 400-image MNIST89 sample, which cannot hold the
preset's split), in ``--workers`` local worker processes (the ``processes`` executor; one torch and one BLAS
thread per cell, as every cell runs). ``--targets``, ``--surrogates``, ``--eps``, ``--n-surrogates`` (V's draws,
1 turns V off) and ``--no-sweep`` cut the grid down, for profiling a piece of it.

It prints:

- wall time per repetition (the run's wall time / repetitions: cells of all repetitions share the stages), the
  machine's load averages (``uptime``) before and after (other jobs on the machine inflate wall times), and the
  CPU seconds of the main process and of the worker processes together (``resource.getrusage``);
- per stage (train, craft, sweep): cells, total cell-seconds (each cell's wall time in its worker, as the store
  records it) and cell CPU seconds (the ``cpu_seconds`` the engine records in each cell's info: the worker's
  process time, one thread), per stage and per model;
- the slowest cells;
- the projection for 10 repetitions: the measured wall per repetition × 10, and the lower bound
  max(cell-seconds / workers, the slowest cell) per repetition × 10;
- peak memory: the largest resident set (``ru_maxrss``) of the main process (``RUSAGE_SELF``) and of the largest
  worker process (``RUSAGE_CHILDREN``: the largest of the finished children, the workers being joined when the
  run ends). getrusage is used rather than psutil (installed here) because it gives the kernel's true peak, not
  a sampled one.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t for t in text.split(",") if t]


def build_config(args: argparse.Namespace):
    from transferlab.errors import ConfigError
    from transferlab.experiments.config import load_config, parse_config

    config = load_config(args.config, data_path=args.data, device=args.device)
    data = config.model_dump(mode="json")
    if args.targets is not None:
        data["targets"] = _csv(args.targets)
    elif not args.with_cnn:
        data["targets"] = [t for t in data["targets"] if t != "cnn"]
    if args.surrogates is not None:
        data["surrogates"] = _csv(args.surrogates)
    if args.eps is not None:
        data["attack"]["eps"] = [float(e) for e in _csv(args.eps)]
    if args.n_surrogates is not None:
        data["variance"]["n_surrogates"] = args.n_surrogates
    if args.no_sweep:
        data["nn_sweep"] = None
    if args.fractions is not None:
        data["surrogate_fractions"] = [float(f) for f in _csv(args.fractions)]
    named = {*data["targets"], *data["surrogates"]}
    data["attack"]["double_init"] = [m for m in data["attack"].get("double_init") or [] if m in named]
    data["repetitions"] = args.repetitions
    data["keep_points"] = False
    if not data["targets"]:
        raise ConfigError("--targets: no target left")
    return parse_config(data, "bench/grid.py")


def read_cells(run_dir: Path) -> list[dict]:
    db = sqlite3.connect(run_dir / "store.sqlite")
    try:
        rows = db.execute("SELECT cell_id, stage, seconds, info FROM cells").fetchall()
    finally:
        db.close()
    return [{"cell_id": c, "stage": s, "seconds": t, "cpu": json.loads(i).get("cpu_seconds")} for c, s, t, i in rows]


def model_of(cell_id: str) -> str:
    """The model a cell trains or attacks with (with its role), from its id."""
    parts = cell_id.split("/")
    if parts[0] == "sweep":
        return "nn_h sweep"
    if parts[0] == "train":
        return f"{parts[3]} ({parts[2]})"
    return f"{parts[3]} ({parts[2]})"


def _cpu(values: list) -> str:
    return "n/a" if any(v is None for v in values) else f"{sum(values):8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="mnist89-evasion", help="preset name or YAML config")
    parser.add_argument("--data", default=None, help="dataset path (the full MNIST folder)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=1)
    parser.add_argument("--with-cnn", action="store_true", help="keep the CNN target")
    parser.add_argument("--targets", default=None, help="comma-separated targets (replaces the config's)")
    parser.add_argument("--surrogates", default=None, help="comma-separated surrogates (replaces the config's)")
    parser.add_argument("--fractions", default=None, help="comma-separated surrogate data fractions")
    parser.add_argument("--eps", default=None, help="comma-separated budgets (replaces the config's)")
    parser.add_argument("--n-surrogates", type=int, default=None, help="draws per surrogate for V (1: no V)")
    parser.add_argument("--no-sweep", action="store_true", help="drop the weight-decay sweep")
    parser.add_argument("--slowest", type=int, default=12, help="how many of the slowest cells to list")
    parser.add_argument("--keep", default=None, help="run folder to keep (default: a temporary one, deleted)")
    args = parser.parse_args()

    from transferlab.experiments.runner import run_experiment

    config = build_config(args)
    executor = "processes executor" if args.workers > 1 else "inline executor"
    print(f"grid: {config.name}, {config.repetitions} repetition(s), {args.workers} worker(s) ({executor}); "
          f"dataset {config.dataset.name} ({config.dataset.path or 'embedded'}); split {config.split.n_target} + "
          f"{config.split.n_surrogate} training, {config.split.n_test} test points")
    print(f"targets ({len(config.targets)}): {', '.join(config.targets)}")
    print(f"surrogates ({len(config.surrogates)}) × fractions {config.surrogate_fractions}: "
          f"{', '.join(config.surrogates)}; V from {config.variance.n_surrogates} draws; budgets {config.attack.eps}; "
          f"sweep {config.nn_sweep.weight_decays if config.nn_sweep else 'off'}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    print(f"load before: {_uptime()}")

    with tempfile.TemporaryDirectory(prefix="transferlab-grid-") as tmp:
        run_dir = Path(args.keep) if args.keep else Path(tmp) / "run"
        before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        run_experiment(config, run_dir, workers=args.workers, executor="processes" if args.workers > 1 else None,
                       show_progress=False)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cells = read_cells(run_dir)
    print(f"load after:  {_uptime()}")

    cpu_self = (after[0].ru_utime + after[0].ru_stime) - (before[0].ru_utime + before[0].ru_stime)
    cpu_children = (after[1].ru_utime + after[1].ru_stime) - (before[1].ru_utime + before[1].ru_stime)
    reps = config.repetitions
    print()
    print(f"wall: {wall:.1f} s in all, {wall / reps:.1f} s per repetition")
    print(f"CPU: main process {cpu_self:.1f} s, worker processes {cpu_children:.1f} s "
          f"({(cpu_self + cpu_children) / reps:.1f} s per repetition; {(cpu_self + cpu_children) / wall:.2f} cores busy)")

    print()
    print(f"{'stage':<8} {'cells':>6} {'cell-s':>9} {'cell CPU s':>10}")
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for c in cells:
        by_stage[c["stage"]].append(c)
    for stage, rows in by_stage.items():
        print(f"{stage:<8} {len(rows):>6} {sum(r['seconds'] for r in rows):9.1f} {_cpu([r['cpu'] for r in rows]):>10}")
    total = sum(c["seconds"] for c in cells)
    print(f"{'all':<8} {len(cells):>6} {total:9.1f} {_cpu([c['cpu'] for c in cells]):>10}")

    print()
    print(f"{'stage':<8} {'model (role)':<26} {'cells':>6} {'cell-s':>9} {'cell CPU s':>10}")
    by_model: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for c in cells:
        by_model[(c["stage"], model_of(c["cell_id"]))].append(c)
    for (stage, model), rows in sorted(by_model.items(), key=lambda kv: -sum(r["seconds"] for r in kv[1])):
        print(f"{stage:<8} {model:<26} {len(rows):>6} {sum(r['seconds'] for r in rows):9.1f} "
              f"{_cpu([r['cpu'] for r in rows]):>10}")

    print()
    print(f"slowest {args.slowest} cells:")
    for c in sorted(cells, key=lambda c: -c["seconds"])[:args.slowest]:
        cpu = "" if c["cpu"] is None else f"  (CPU {c['cpu']:.1f} s)"
        print(f"  {c['seconds']:8.1f} s  {c['cell_id']}{cpu}")

    slowest = max((c["seconds"] for c in cells), default=0.0)
    bound = max(total / reps / args.workers, slowest)
    print()
    print(f"projection for 10 repetitions on {args.workers} worker(s): {10 * wall / reps / 60:.1f} min at the measured "
          f"wall per repetition; lower bound {10 * bound / 60:.1f} min (max(cell-seconds / workers, slowest cell) "
          "per repetition)")
    self_peak = after[0].ru_maxrss / 1024
    child_peak = after[1].ru_maxrss / 1024
    workers = f"largest worker process {child_peak:.0f} MiB" if args.workers > 1 else "no worker processes (inline)"
    print(f"peak memory (ru_maxrss): main process {self_peak:.0f} MiB, {workers}")


if __name__ == "__main__":
    main()
