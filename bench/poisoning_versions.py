"""The default poisoning mode's CPU time per point under two versions of transferlab, run by run in turn: the
speed-up of a code change, measured so that a machine whose speed drifts (a shared 2-core VM: the same attack's
time moved by 30% within minutes here) slows both versions alike.

    git worktree add /tmp/before 9a9d1aa          # the version to compare against
    python bench/poisoning_versions.py /tmp/before . --data ../shared/data/mnist

Each round runs every cell (model × fraction, the split of bench/poisoning.py) twice in a fresh process per
version, one BLAS/torch thread, the versions alternating; a cell's time is the least over all its runs. It prints
both times, their ratio, and the surrogate's validation error and retrainings, which a change that keeps the path
leaves equal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_rbf_h", "svm_rbf_l"]


def child(args: argparse.Namespace) -> None:
    """Runs in a process whose transferlab is one version: every cell, ``--runs`` times, as JSON."""
    from poisoning import bench_split, limit_threads       # bench/poisoning.py, on this version's transferlab

    from transferlab import attacks

    limit_threads(1)
    split = bench_split(args.data)
    X, y = split.target.X, split.target.y
    out = {}
    for name in args.models.split(","):
        for fraction in args.fractions.split(","):
            k = int(round(float(fraction) * len(X)))          # as bench/poisoning.py
            attack = attacks.Poisoning(surrogate=name, n_points=k, seed=0)
            best = float("inf")
            for _ in range(args.runs):
                begin = time.process_time()
                result = attack.run(X, y, split.validation.X, split.validation.y)
                best = min(best, time.process_time() - begin)
            out[f"{name} {fraction}"] = [best / k, result.validation_error_poisoned, result.retrainings]
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="a checkout of the version to compare against (its src/ is imported)")
    parser.add_argument("after", help="a checkout of the version measured")
    parser.add_argument("--data", help="folder with the full MNIST (default: the embedded MNIST89)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fractions", default="0.05,0.1,0.2")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of both versions (default 4)")
    parser.add_argument("--runs", type=int, default=2, help="runs of each cell per round and version (default 2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.runs < 1:
        parser.error("--rounds and --runs must be at least 1")
    if args.child:
        return child(args)
    trees = {}
    for label in ("before", "after"):
        src = Path(getattr(args, label)).resolve() / "src"
        if not (src / "transferlab" / "__init__.py").is_file():
            parser.error(f"{label}: {src} holds no transferlab package; give a checkout of the project")
        trees[label] = src
    best: dict[str, dict[str, list]] = {"before": {}, "after": {}}
    command = [sys.executable, __file__, "--child", "x", "x", "--models", args.models, "--fractions",
               args.fractions, "--runs", str(args.runs)] + (["--data", args.data] if args.data else [])
    for _ in range(args.rounds):
        for label, src in trees.items():
            env = dict(os.environ, PYTHONPATH=str(src))
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{label} ({src}) failed:\n{done.stderr.strip()[-2000:]}")
            for cell, row in json.loads(done.stdout).items():
                if cell not in best[label] or row[0] < best[label][cell][0]:
                    best[label][cell] = row
    print(f"before: {trees['before']}\nafter:  {trees['after']}")
    print(f"ms/pt: CPU per poisoning point of the default mode, the least of {args.rounds * args.runs} runs per "
          "version (one thread); err, fits: the surrogate's validation error and the retrainings")
    print(f"{'model':11s} {'p':>5s} | {'before':>7s} {'after':>7s} {'x':>5s} | err, fits before / after")
    for cell, (b, e_b, f_b) in best["before"].items():
        a, e_a, f_a = best["after"][cell]
        name, fraction = cell.split()
        same = "same" if (e_a, f_a) == (e_b, f_b) else "DIFFER"
        print(f"{name:11s} {fraction:>5s} | {1e3 * b:7.2f} {1e3 * a:7.2f} {b / a:5.2f} | {e_b:.3f}, {f_b} / "
              f"{e_a:.3f}, {f_a}  {same}")


if __name__ == "__main__":
    main()
