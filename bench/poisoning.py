"""Seconds per poisoning point and poisoned test error (white-box: the surrogate is the target) per model family.

    python bench/poisoning.py --data ../shared/data/mnist   # 300 training, 500 validation, 1,000 test points
    python bench/poisoning.py                               # embedded MNIST89: 300 / 250 / 400

The authors' library (secml 0.15.6) needs 1–20 s of CPU time per poisoning point at that size (linear SVM 1–3 s,
RBF SVM 2–7 s, logistic and ridge about 20 s, as the project's issue reports for this machine); run it beside this
script for a measured ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from transferlab import attacks, datasets, models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default="svm_h,logistic_h,ridge_h,svm_rbf_h")
    parser.add_argument("--fractions", default="0.05,0.1,0.2")
    parser.add_argument("--max-passes", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=4)
    args = parser.parse_args()
    full = args.data is not None
    data = datasets.load("mnist89", path=args.data) if full else datasets.load("mnist89")
    n_val, n_test = (500, 1000) if full else (250, 400)
    split = datasets.split(data, n_target=300, n_surrogate=1, n_test=n_test, n_validation=n_val, seed=0)
    X, y, X_val, y_val = split.target.X, split.target.y, split.validation.X, split.validation.y
    print(f"data: {'full' if full else 'embedded'} MNIST89, 300 training, {n_val} validation, {n_test} test points; "
          f"passes {args.max_passes}, steps per point and pass {args.max_iter}")
    print(f"{'model':<11} {'clean err':>9} " + " ".join(f"{'p=' + f:>22}" for f in args.fractions.split(",")))
    total_points, total_time = 0, 0.0
    for name in args.models.split(","):
        clean = models.create(name).fit(X, y)
        cells = []
        for fraction in (float(f) for f in args.fractions.split(",")):
            n_points = int(round(fraction * len(y)))
            attack = attacks.Poisoning(surrogate=name, n_points=n_points, max_passes=args.max_passes,
                                       max_iter=args.max_iter, seed=0)
            start = time.process_time()
            X_p, y_p = attack.run(X, y, X_val, y_val)
            cpu = time.process_time() - start
            total_points, total_time = total_points + n_points, total_time + cpu
            poisoned = models.create(name).fit(np.vstack([X, X_p]), np.r_[y, y_p])
            error = np.mean(poisoned.predict(split.test.X) != split.test.y)
            cells.append(f"{cpu / n_points:6.2f} s/pt err {error:5.3f}")
        clean_error = np.mean(clean.predict(split.test.X) != split.test.y)
        print(f"{name:<11} {clean_error:9.3f} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"overall: {total_time / total_points:.2f} s of CPU time per poisoning point")


if __name__ == "__main__":
    main()
