"""Seconds per poisoning point and poisoned test error (white-box: the surrogate is the target) per model family.

    python bench/poisoning.py --data ../shared/data/mnist   # 300 training, 500 validation, 1,000 test points
    python bench/poisoning.py                               # embedded MNIST89: 300 / 250 / 400

Side by side with the authors' library, secml 0.15.6 (``bash ../shared/tools/secml-venv.sh`` builds a Python that
has it and prints its path; secml is not a dependency of transferlab):

    python bench/poisoning.py --threads 1 --secml ~/.cache/transferlab/secml-venv/bin/python \\
        --data ../shared/data/mnist --models svm_rbf_l,logistic_l --fractions 0.05

For every model (linear SVM, RBF SVM, logistic, ridge; the registry's hyperparameters) secml trains the same family
on the same training points and runs its attack (CAttackPoisoningSVM — RBF, or linear kernel in the dual —,
CAttackPoisoningLogisticRegression, CAttackPoisoningRidge) with the same number of points, the same validation set,
box [0, 1], and the same starting points as transferlab (training points with flipped labels, passed as ds_init);
its solver parameters default to those of secml's MNIST poisoning tutorial (--secml-solver), ℓ2 steps
(--secml-distance) and one pass over the points (--secml-passes, secml's default). Each library's poisoned training
set is retrained by that library's own classifier and scored on the same clean test set. Prints s per poisoning
point of both (CPU time of the process, attack only; wall clock beside it), the ratio secml / transferlab, and both
poisoned and clean test errors.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from transferlab import attacks, datasets, models

# secml's MNIST poisoning tutorial (tutorials/06-MNIST_dataset.ipynb); secml has no default (it reads
# solver_params['eta'] in CAttackPoisoning.__init__)
SECML_SOLVER = {"eta": 0.25, "eta_min": 2.0, "eta_max": None, "max_iter": 100, "eps": 1e-6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default="svm_h,logistic_h,ridge_h,svm_rbf_h")
    parser.add_argument("--fractions", default="0.05,0.1,0.2")
    parser.add_argument("--mode", default="batch", choices=["batch", "sequential"],
                        help="transferlab's algorithm (batch: the presets'; sequential: the paper's)")
    parser.add_argument("--max-passes", type=int, default=2)
    parser.add_argument("--max-iter", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads, here and in the secml process (default: the libraries' own)")
    parser.add_argument("--secml", metavar="PYTHON", help="a Python with secml 0.15.6: run it side by side")
    parser.add_argument("--secml-solver", default=json.dumps(SECML_SOLVER), metavar="JSON",
                        help=f"secml's solver_params (default {json.dumps(SECML_SOLVER)})")
    parser.add_argument("--secml-passes", type=int, default=1,
                        help="secml's passes over the poisoning points (run(max_iter=...); default 1, secml's)")
    parser.add_argument("--secml-distance", default="l2", choices=["l1", "l2"],
                        help="secml's step geometry: l2 moves all pixels along the gradient (as transferlab), "
                             "l1 one pixel per step (the default of secml's SVM and logistic attacks)")
    args = parser.parse_args()
    if args.threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # numpy/scikit-learn BLAS too, for the rest of the process
    full = args.data is not None
    data = datasets.load("mnist89", path=args.data) if full else datasets.load("mnist89")
    n_val, n_test = (500, 1000) if full else (250, 400)
    split = datasets.split(data, n_target=300, n_surrogate=1, n_test=n_test, n_validation=n_val, seed=0)
    X, y = split.target.X, split.target.y
    if args.secml:
        compare(args, split, n_val, n_test)
        return
    print(f"data: {'full' if full else 'embedded'} MNIST89, 300 training, {n_val} validation, {n_test} test points; "
          f"mode {args.mode}" + (f", passes {args.max_passes}, steps per point and pass {args.max_iter}"
                                   if args.mode == "sequential" else ""))
    print(f"{'model':<11} {'clean err':>9} " + " ".join(f"{'p=' + f:>22}" for f in args.fractions.split(",")))
    total_points, total_time = 0, 0.0
    for name in args.models.split(","):
        clean = models.create(name).fit(X, y)
        cells = []
        for fraction in (float(f) for f in args.fractions.split(",")):
            n_points = int(round(fraction * len(y)))
            _, cpu, _, error, _ = run_transferlab(args, name, split, n_points)
            total_points, total_time = total_points + n_points, total_time + cpu
            cells.append(f"{cpu / n_points:7.3f} s/pt err {error:5.3f}")
        clean_error = np.mean(clean.predict(split.test.X) != split.test.y)
        print(f"{name:<11} {clean_error:9.3f} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"overall: {total_time / total_points:.2f} s of CPU time per poisoning point")


def run_transferlab(args, name, split, n_points):
    """One poisoning run; returns the attack, CPU and wall seconds, the test error of the retrained model, and the
    poisoning points."""
    X, y = split.target.X, split.target.y
    attack = attacks.Poisoning(surrogate=name, n_points=n_points, max_passes=args.max_passes,
                               max_iter=args.max_iter, mode=args.mode, seed=0)
    start, wall = time.process_time(), time.perf_counter()
    X_p, y_p = attack.run(X, y, split.validation.X, split.validation.y)
    cpu, wall = time.process_time() - start, time.perf_counter() - wall
    poisoned = models.create(name).fit(np.vstack([X, X_p]), np.r_[y, y_p])
    return attack, cpu, wall, float(np.mean(poisoned.predict(split.test.X) != split.test.y)), X_p


def compare(args, split, n_val, n_test) -> None:
    """transferlab and secml side by side on the same training, validation and test points."""
    from secml_reference import call, spec_for

    X, y = split.target.X, split.target.y
    solver = json.loads(args.secml_solver)
    fractions = [float(f) for f in args.fractions.split(",")]
    print(f"data: {'full' if args.data else 'embedded'} MNIST89, {len(y)} training, {n_val} validation, {n_test} "
          f"test points; BLAS/torch threads {args.threads or 'default'} (both processes)")
    print(f"transferlab: Poisoning(mode={args.mode}, max_passes={args.max_passes}, max_iter={args.max_iter} "
          "(sequential mode only) steps per point and pass, "
          f"lb=0, ub=1, seed=0)")
    print(f"secml: CAttackPoisoning*(distance='{args.secml_distance}', lb=0, ub=1, solver_params={solver}, "
          f"run(max_iter={args.secml_passes} pass(es))), starting from transferlab's starting points")
    print("times: s per poisoning point, attack only (training and scoring excluded); cpu = CPU time of the process, "
          "wall = wall clock; ratio = secml / transferlab. errors: clean test set, poisoned training set retrained by "
          "each library's own classifier; ‖Δ‖ = mean ℓ2 distance of the points from their start; secml evals = "
          "evaluations of its objective (each retrains the classifier unless the point is unchanged)")
    header = (f"{'model':<11} {'p':>5} {'n':>4} | {'tl cpu':>7} {'secml cpu':>9} {'ratio':>6} | {'tl wall':>7} "
              f"{'secml wall':>10} {'ratio':>6} | {'tl err':>6} {'secml err':>9} | {'tl clean':>8} "
              f"{'secml clean':>11} | {'tl ‖Δ‖':>6} {'secml ‖Δ‖':>9} {'secml evals':>11}")
    print(header)
    print("-" * len(header))
    ratios = []
    for name in args.models.split(","):
        spec = spec_for(name)
        if spec is None:
            print(f"{name:<11} no secml equivalent (secml poisons SVMs, logistic regression and ridge only)")
            continue
        clean = models.create(name).fit(X, y)
        clean_tl = float(np.mean(clean.predict(split.test.X) != split.test.y))
        arrays = {"X_train": X, "y_train": y, "X_val": split.validation.X, "y_val": split.validation.y,
                  "X_test": split.test.X, "y_test": split.test.y}
        runs, tl = [], []
        for k, fraction in enumerate(fractions):
            n_points = int(round(fraction * len(y)))
            attack, cpu, wall, error, X_p = run_transferlab(args, name, split, n_points)
            chosen = attack.result_.initial_indices
            moved = float(np.linalg.norm(X_p - X[chosen], axis=1).mean())
            arrays[f"init{k}_X"], arrays[f"init{k}_y"] = X[chosen], 1 - y[chosen]
            runs.append({"n_points": n_points, "init_key": f"init{k}"})
            tl.append((fraction, n_points, cpu, wall, error, moved))
        config = {"model": spec, "runs": runs, "lb": 0.0, "ub": 1.0, "solver_params": solver,
                  "passes": args.secml_passes, "distance": args.secml_distance, "seed": 0}
        ref = call(args.secml, "poisoning", arrays, config, args.threads)["result"]
        for (fraction, n_points, cpu, wall, error, moved), r in zip(tl, ref["runs"]):
            s_cpu, s_wall = r["cpu_s"] / n_points, r["wall_s"] / n_points
            t_cpu, t_wall = cpu / n_points, wall / n_points
            ratios.append(s_cpu / t_cpu)
            note = ""
            if abs(r["test_error"] - r["test_error_from_run"]) > 0:
                note += f"  (secml run() itself returned error {r['test_error_from_run']:.3f})"
            if r["min_x"] < -1e-9 or r["max_x"] > 1 + 1e-9:
                note += f"  (secml points outside [0, 1]: [{r['min_x']:.4f}, {r['max_x']:.4f}])"
            print(f"{name:<11} {fraction:>5g} {n_points:>4} | {t_cpu:7.2f} {s_cpu:9.2f} {s_cpu / t_cpu:6.1f} | "
                  f"{t_wall:7.2f} {s_wall:10.2f} {s_wall / t_wall:6.1f} | {error:6.3f} {r['test_error']:9.3f} | "
                  f"{clean_tl:8.3f} {ref['clean_error']:11.3f} | {moved:6.2f} {r['mean_distance_moved']:9.2f} "
                  f"{r['objective_evaluations']:11d}{note}", flush=True)
    if ratios:
        print(f"CPU-time ratio secml / transferlab per poisoning point: geometric mean "
              f"{np.exp(np.mean(np.log(ratios))):.1f} over {len(ratios)} cells (min {min(ratios):.1f}, "
              f"max {max(ratios):.1f})")


if __name__ == "__main__":
    main()
