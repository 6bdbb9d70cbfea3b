"""Throughput and error under attack of PGDLineSearch (the paper's Algorithm 1) on MNIST89, per paper model.

    python bench/evasion.py                          # embedded MNIST89 (400 train, 500 attacked points)
    python bench/evasion.py --data ../shared/data/mnist  # full MNIST89 (5,900 train, 1,000 attacked points)
    python bench/evasion.py --device cuda --models svm_rbf_h,nn_h

Prints, per model and ε: points attacked per second (all points batched) and the white-box error under attack.

Side by side with the authors' library, secml 0.15.6 (``bash ../shared/tools/secml-venv.sh`` builds a Python that
has it and prints its path; secml is not a dependency of transferlab):

    python bench/evasion.py --threads 1 --secml ~/.cache/transferlab/secml-venv/bin/python \\
        --data ../shared/data/mnist --n-train 1000 --n-attack 200 --eps 1 --models svm_rbf_h,svm_l,logistic_l

For every model with a secml equivalent (linear/RBF SVM, logistic, ridge; the registry's hyperparameters) secml
trains the same family on the same training points and runs CAttackEvasionPGDLS (ℓ2, the same ε, box [0, 1],
untargeted, no double initialisation unless --double-init, secml's default solver parameters unless
--secml-solver) on the same attacked points, one point at a time (bench/secml_reference.py, run by that Python).
Prints per model and ε: ms per point of both (CPU time of the process and wall clock, attack only, training
excluded), their ratio (secml / transferlab), both errors under attack, both clean errors and mean iterations.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from transferlab import attacks, datasets, models

PAPER_MODELS = ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_rbf_h", "svm_rbf_l",
                "nn_h", "nn_l", "cnn"]
NONLINEAR = ("svm_rbf_h", "svm_rbf_l", "nn_h", "nn_l", "cnn")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default=",".join(PAPER_MODELS))
    parser.add_argument("--eps", default="0.5,1,2,5")
    parser.add_argument("--n-attack", type=int, default=None, help="points attacked (default 500 / 1000)")
    parser.add_argument("--n-train", type=int, default=None, help="training points (default 400 / 5900)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads, here and in the secml process (default: the libraries' own)")
    parser.add_argument("--secml", metavar="PYTHON", help="a Python with secml 0.15.6: run it side by side")
    parser.add_argument("--n-secml", type=int, default=None,
                        help="attack only the first N attacked points with secml (default: all of them)")
    parser.add_argument("--secml-solver", default="{}", metavar="JSON",
                        help="solver_params of CAttackEvasionPGDLS, e.g. '{\"eta\": 0.5, \"eta_min\": 2.0, "
                             "\"max_iter\": 100, \"eps\": 1e-6}' (default {}: secml's defaults)")
    parser.add_argument("--double-init", action="store_true",
                        help="double initialisation (from the training point most confidently in the other class) "
                             "on both sides, for nonlinear models")
    args = parser.parse_args()
    from transferlab.experiments.executors import tune_malloc

    tune_malloc()  # as experiment cells do: large temporaries stay in the heap
    if args.threads:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # numpy/scikit-learn BLAS too, for the rest of the process
    full = args.data is not None
    data = datasets.load("mnist89", path=args.data) if full else datasets.load("mnist89")
    n_train, n_attack = (5900, 1000) if full else (400, 500)
    n_train, n_attack = args.n_train or n_train, args.n_attack or n_attack
    split = datasets.split(data, n_target=n_train, n_surrogate=50,
                           n_test=n_attack, seed=0)
    eps_list = [float(e) for e in args.eps.split(",")]
    if args.secml:
        compare(args, split, n_train, n_attack, eps_list)
        return
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
            attack, elapsed, _ = run_transferlab(args, name, model, split, eps)
            total_points += n_attack
            total_time += elapsed
            cells.append(f"{n_attack / elapsed:8.0f} pt/s err {attack.result_.error:5.3f}")
        print(f"{name:<11} {train_s:8.1f} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"overall: {total_points / total_time:.0f} points/s ({1000 * total_time / total_points:.2f} ms per point)")


def run_transferlab(args, name, model, split, eps):
    """One PGDLineSearch run on all attacked points; returns the attack, wall seconds and CPU seconds."""
    double_init = args.double_init and name in NONLINEAR
    attack = attacks.PGDLineSearch(norm=2, eps=eps, lb=0.0, ub=1.0, double_init=double_init)
    start, cpu = time.perf_counter(), time.process_time()
    attack.run(model, split.test.X, split.test.y, init_pool=split.target.X if double_init else None)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return attack, time.perf_counter() - start, time.process_time() - cpu


def compare(args, split, n_train, n_attack, eps_list) -> None:
    """transferlab and secml side by side on the same training points and the same attacked points."""
    from secml_reference import call, spec_for

    n_secml = min(args.n_secml or n_attack, n_attack)
    solver = json.loads(args.secml_solver)
    arrays = {"X_train": split.target.X, "y_train": split.target.y,
              "X_attack": split.test.X[:n_secml], "y_attack": split.test.y[:n_secml]}
    print(f"data: {'full' if args.data else 'embedded'} MNIST89, {n_train} training points, {n_attack} attacked "
          f"points; device {args.device}, {torch.get_num_threads()} torch threads, BLAS threads "
          f"{args.threads or 'default'} (both processes)")
    pgd = attacks.PGDLineSearch(norm=2, eps=1.0, lb=0.0, ub=1.0)
    print(f"transferlab: PGDLineSearch(norm=2, lb=0, ub=1, max_iter={pgd.max_iter}, tol={pgd.tol:g}, grid={pgd.grid}, "
          f"bisection={pgd.bisection}, double_init={args.double_init} for nonlinear models), all {n_attack} points in "
          "one batch")
    defaults = "None (defaults: eta=1e-3, eta_min=None, eta_max=None, max_iter=1000, eps=1e-4)"
    print(f"secml: CAttackEvasionPGDLS(distance='l2', lb=0, ub=1, y_target=None, double_init={args.double_init} for "
          f"RBF SVMs, solver_params={solver or defaults}), one point at a time on the first {n_secml} attacked points")
    if n_secml < n_attack:
        print(f"  (--n-secml {n_secml}: secml attacks {n_secml} of the {n_attack} points; per-point times are "
              f"comparable, errors are both on those {n_secml} points)")
    print("times: ms per attacked point, attack only (training excluded); cpu = CPU time of the process, "
          "wall = wall clock; ratio = secml / transferlab")
    header = (f"{'model':<11} {'ε':>5} | {'tl cpu':>8} {'secml cpu':>10} {'ratio':>7} | {'tl wall':>8} "
              f"{'secml wall':>10} {'ratio':>7} | {'tl err':>6} {'secml err':>9} | {'tl clean':>8} "
              f"{'secml clean':>11} | {'tl it':>5} {'secml it':>8}")
    print(header)
    print("-" * len(header))
    ratios = []
    for name in args.models.split(","):
        model = models.create(name, device=args.device).fit(split.target.X, split.target.y)
        clean_tl = float(np.mean(model.predict(split.test.X[:n_secml]) != split.test.y[:n_secml]))
        tl = {eps: run_transferlab(args, name, model, split, eps) for eps in eps_list}
        spec = spec_for(name)
        ref = None
        if spec is not None:
            config = {"models": [spec], "eps": eps_list, "lb": 0.0, "ub": 1.0, "solver_params": solver,
                      "double_init": args.double_init}
            ref = call(args.secml, "evasion", arrays, config, args.threads)["result"][name]
        for eps in eps_list:
            attack, wall, cpu = tl[eps]
            res = attack.result_
            err_tl = float(res.success[:n_secml].mean())
            it_tl = float(res.iterations[:n_secml].mean())
            tl_cpu, tl_wall = 1000 * cpu / n_attack, 1000 * wall / n_attack
            if ref is None:
                print(f"{name:<11} {eps:>5g} | {tl_cpu:8.2f} {'—':>10} {'—':>7} | {tl_wall:8.2f} {'—':>10} "
                      f"{'—':>7} | {err_tl:6.3f} {'—':>9} | {clean_tl:8.3f} {'—':>11} | {it_tl:5.1f} {'—':>8}  "
                      f"(no secml equivalent)", flush=True)
                continue
            r = ref["eps"][repr(float(eps))]
            s_cpu, s_wall = 1000 * r["cpu_s"] / r["n"], 1000 * r["wall_s"] / r["n"]
            ratios.append(s_cpu / tl_cpu)
            note = ""
            if abs(r["error"] - r["error_recheck"]) > 0:
                note += f"  (secml re-predicted error {r['error_recheck']:.3f})"
            if r["max_iterations_hit"]:
                note += f"  ({r['max_iterations_hit']} secml points hit max_iter)"
            if r["max_perturbation"] > eps * (1 + 1e-6) or r["min_x"] < -1e-9 or r["max_x"] > 1 + 1e-9:
                note += f"  (secml point outside Φ: ‖δ‖ ≤ {r['max_perturbation']:.4f}, x in " \
                        f"[{r['min_x']:.4f}, {r['max_x']:.4f}])"
            print(f"{name:<11} {eps:>5g} | {tl_cpu:8.2f} {s_cpu:10.2f} {s_cpu / tl_cpu:7.1f} | {tl_wall:8.2f} "
                  f"{s_wall:10.2f} {s_wall / tl_wall:7.1f} | {err_tl:6.3f} {r['error']:9.3f} | {clean_tl:8.3f} "
                  f"{ref['clean_error']:11.3f} | {it_tl:5.1f} {r['mean_iterations']:8.1f}{note}", flush=True)
    if ratios:
        print(f"CPU-time ratio secml / transferlab per point: geometric mean {np.exp(np.mean(np.log(ratios))):.1f} "
              f"over {len(ratios)} model-ε cells (min {min(ratios):.1f}, max {max(ratios):.1f})")


if __name__ == "__main__":
    main()
