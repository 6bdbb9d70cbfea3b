"""Throughput and error under attack of PGDLineSearch (the paper's Algorithm 1) on MNIST89, per paper model.

    python bench/evasion.py                          # embedded MNIST89 (500 train, 500 attacked points)
    python bench/evasion.py --data ../shared/data/mnist  # full MNIST89 (5,900 train, 1,000 attacked points)
    python bench/evasion.py --device cuda --models svm_rbf_h,nn_h

Prints, per model and ε: points attacked per second (all points batched) and the white-box error under attack.
The authors' library (secml 0.15.6) attacks one point at a time; run it beside this script to get a ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from transferlab import attacks, datasets, models

PAPER_MODELS = ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_rbf_h", "svm_rbf_l",
                "nn_h", "nn_l", "cnn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default=",".join(PAPER_MODELS))
    parser.add_argument("--eps", default="0.5,1,2,5")
    parser.add_argument("--n-attack", type=int, default=None, help="points attacked (default 500 / 1000)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    full = args.data is not None
    data = datasets.load("mnist89", path=args.data) if full else datasets.load("mnist89")
    n_train, n_attack = (5900, args.n_attack or 1000) if full else (400, args.n_attack or 500)
    split = datasets.split(data, n_target=n_train, n_surrogate=50,
                           n_test=n_attack, seed=0)
    eps_list = [float(e) for e in args.eps.split(",")]
    print(f"data: {'full' if full else 'embedded'} MNIST89, {n_train} training points, {n_attack} attacked points, "
          f"device {args.device}, {torch.get_num_threads()} torch threads")
    print(f"{'model':<11} {'train s':>8} " + " ".join(f"{'ε=' + str(e):>22}" for e in eps_list))
    total_points, total_time = 0, 0.0
    for name in args.models.split(","):
        start = time.perf_counter()
        model = models.create(name, device=args.device).fit(split.target.X, split.target.y)
        train_s = time.perf_counter() - start
        cells = []
        for eps in eps_list:
            attack = attacks.PGDLineSearch(norm=2, eps=eps, lb=0.0, ub=1.0)
            start = time.perf_counter()
            attack.run(model, split.test.X, split.test.y)
            if args.device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            total_points += n_attack
            total_time += elapsed
            cells.append(f"{n_attack / elapsed:8.0f} pt/s err {attack.result_.error:5.3f}")
        print(f"{name:<11} {train_s:8.1f} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"overall: {total_points / total_time:.0f} points/s ({1000 * total_time / total_points:.2f} ms per point)")


if __name__ == "__main__":
    main()
