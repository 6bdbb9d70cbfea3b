"""Time per point, error under attack and work per line search of PGDLineSearch (the paper's Algorithm 1) on
MNIST89, per paper model; side by side with the authors' library, secml 0.15.6, where it has the model.

    python bench/evasion.py --threads 1                      # embedded MNIST89 (400 train, 500 attacked points)
    python bench/evasion.py --data ../shared/data/mnist      # full MNIST89 (5,900 train, 1,000 attacked points)
    python bench/evasion.py --device cuda --models svm_rbf_h,nn_h

Side by side with secml (``bash ../shared/tools/secml-venv.sh`` builds a Python that has it and prints its path;
secml is not a dependency of transferlab), one thread each, in one run:

    python bench/evasion.py --threads 1 --secml ~/.cache/transferlab/secml-venv/bin/python \\
        --secml-solver '{"eta": 0.5, "eta_min": 2.0, "max_iter": 100, "eps": 1e-6}'

secml runs CAttackEvasionPGDLS (ℓ2, the same ε, box [0, 1], untargeted, no double initialisation unless
--double-init, secml's default solver parameters unless --secml-solver; the setting above is the one of secml's
own MNIST tutorial) on the same attacked points, one point at a time (bench/secml_reference.py, run by that
Python), against the same model: transferlab's fitted linear models and MLPs are handed to secml as they are (a
fixed affine classifier; the MLP as secml's own CClassifierPyTorch, how a secml user attacks a torch network,
when that Python has torch — ``SECML_PYTHON -m pip install torch==2.13.0``, then ``SECML_PYTHON -m pip install
setuptools==69.5.1`` again — else, or with ``--secml-mlp numpy``, its layers in numpy: a leaner reference than
secml ships), and the RBF SVMs are trained by libsvm on both
sides from the same points and hyperparameters (both clean errors are printed, and secml's classifier).

Per model and ε it prints: ms per point, attack only (training excluded), as CPU time of the process (the best of
--repeat runs for transferlab, one run for secml) and wall clock; their ratio (secml / transferlab); both errors
under attack and both clean errors; transferlab's line searches per point and secml's iterations per point; and
the work per line search (per iteration for secml): transferlab's gradients, projections, line-search candidates
(A at a point of the segment, from the closed forms of the model's family or a forward pass) and forward passes of
the model (the start and end of the attack, and the candidates of models without a closed form); secml's objective
and gradient evaluations (its solver's own counts). --threads-check then times the API as a user calls it, with
torch's default thread count, against one thread and against the default count with the attack's one-thread rule
lifted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import numpy as np
import torch

from transferlab import attacks, datasets, models
from transferlab.attacks import constraints, line_search, paths, pgd_line_search

PAPER_MODELS = ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_rbf_h", "svm_rbf_l",
                "nn_h", "nn_l", "cnn"]
SECML_MODELS = ["svm_l", "svm_h", "logistic_l", "logistic_h", "ridge_l", "ridge_h", "svm_rbf_l", "svm_rbf_h",
                "nn_l", "nn_h"]
NONLINEAR = ("svm_rbf_h", "svm_rbf_l", "nn_h", "nn_l", "cnn")


class Counts:
    """Work done by the attack, counted by wrappers around the functions that do it (never in the attack's code):
    rows given to gradients, projections, line-search candidates and forward passes of the model."""

    def __init__(self) -> None:
        self.reset()
        self.in_steps = self.in_path_gradient = 0

    def reset(self) -> None:
        self.gradients = self.projections = self.candidates = self.forwards = 0


COUNTS = Counts()


def install_counters() -> None:
    """Wrap the attack's path objects (gradients, candidates), its projections (``line_search.Steps`` and, for the arc line
    search, ``Intersection.project``)."""
    make_path = pgd_line_search.path_for

    def path_for(*args, **kwargs):
        path = make_path(*args, **kwargs)
        gradient, values, grid_values = path.gradient, path.values, path.grid_values

        def counted_gradient(rows=None, **kwargs):
            COUNTS.gradients += int(path.x.shape[0] if rows is None else rows.sum())
            COUNTS.in_path_gradient += 1
            try:
                return gradient(rows, **kwargs)
            finally:
                COUNTS.in_path_gradient -= 1

        def counted_values(alpha):
            COUNTS.candidates += int(alpha.shape[0])
            return values(alpha)

        def counted_grid_values(alphas):
            if type(path).grid_values is not paths.Path.grid_values:  # the generic one calls values
                COUNTS.candidates += int(alphas.shape[0]) * int(path.x.shape[0])
            return grid_values(alphas)

        path.gradient, path.values, path.grid_values = counted_gradient, counted_values, counted_grid_values
        return path

    pgd_line_search.path_for = path_for
    for name in ("project", "maximiser"):
        inner = getattr(line_search.Steps, name)

        def counted(self, t, *args, _inner=inner, **kwargs):
            COUNTS.projections += int(t.shape[0])
            COUNTS.in_steps += 1
            try:
                return _inner(self, t, *args, **kwargs)
            finally:
                COUNTS.in_steps -= 1

        setattr(line_search.Steps, name, counted)
    project = constraints.Intersection.project

    def counted_project(self, z, x0, bounds=None):
        if not COUNTS.in_steps:
            COUNTS.projections += int(z.numel() // max(1, x0[0].numel()))
        return project(self, z, x0, bounds)

    constraints.Intersection.project = counted_project


def count_model(model) -> None:
    """Count the model's forward passes (rows scored) and, for attacks without a closed form, its gradients."""
    scores, gradient = model.scores, model.input_gradient_tensor

    def counted_scores(X):
        COUNTS.forwards += int(X.shape[0])
        return scores(X)

    def counted_gradient(X, y, loss="margin"):
        if not COUNTS.in_path_gradient:  # the arc line search's gradients (the chord's are counted by its path)
            COUNTS.gradients += int(X.shape[0])
        return gradient(X, y, loss)

    model.scores, model.input_gradient_tensor = counted_scores, counted_gradient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated (default: {','.join(PAPER_MODELS)}; with --secml the models secml "
                             "has)")
    parser.add_argument("--eps", default="0.5,1,2")
    parser.add_argument("--n-attack", type=int, default=None, help="points attacked (default 500 / 1000)")
    parser.add_argument("--n-train", type=int, default=None, help="training points (default 400 / 5900)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads, here and in the secml process (default: the libraries' own)")
    parser.add_argument("--repeat", type=int, default=3, help="transferlab runs per cell; the best time is shown")
    parser.add_argument("--secml", metavar="PYTHON", help="a Python with secml 0.15.6: run it side by side")
    parser.add_argument("--n-secml", type=int, default=None,
                        help="attack only the first N attacked points with secml (default: all of them)")
    parser.add_argument("--secml-solver", default="{}", metavar="JSON",
                        help="solver_params of CAttackEvasionPGDLS, e.g. '{\"eta\": 0.5, \"eta_min\": 2.0, "
                             "\"max_iter\": 100, \"eps\": 1e-6}' (default {}: secml's defaults)")
    parser.add_argument("--secml-mlp", default="pytorch", choices=["pytorch", "numpy"],
                        help="secml's MLP: its own CClassifierPyTorch on transferlab's fitted network (the "
                             "default; that Python needs torch, else the numpy one is used) or the network's layers "
                             "in numpy, a leaner reference than secml ships")
    parser.add_argument("--double-init", action="store_true",
                        help="double initialisation (from the training point most confidently in the other class) "
                             "on both sides, for nonlinear models")
    parser.add_argument("--threads-check", action="store_true",
                        help="also time the API with torch's default threads, with and without its one-thread rule")
    args = parser.parse_args()
    from transferlab.experiments.executors import tune_malloc

    tune_malloc()  # as experiment cells do: large temporaries stay in the heap
    default_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # numpy/scikit-learn BLAS too, for the rest of the process
    install_counters()
    full = args.data is not None
    data = datasets.load("mnist89", path=args.data) if full else datasets.load("mnist89")
    n_train, n_attack = (5900, 1000) if full else (400, 500)
    n_train, n_attack = args.n_train or n_train, args.n_attack or n_attack
    split = datasets.split(data, n_target=n_train, n_surrogate=50, n_test=n_attack, seed=0)
    eps_list = [float(e) for e in args.eps.split(",")]
    if not all(0 < e < float("inf") for e in eps_list):
        parser.error(f"--eps takes budgets > 0 (ε = 0 is the clean error, never attacked), got {args.eps}")
    names = (args.models or ",".join(SECML_MODELS if args.secml else PAPER_MODELS)).split(",")
    n_ref = min(args.n_secml or n_attack, n_attack)
    solver = json.loads(args.secml_solver)
    pgd = attacks.PGDLineSearch(norm=2, eps=1.0, lb=0.0, ub=1.0)
    print(f"data: {'full' if full else 'embedded'} MNIST89, {n_train} training points, {n_attack} attacked points; "
          f"device {args.device}, {torch.get_num_threads()} torch threads, BLAS threads {args.threads or 'default'}"
          f"{' (both processes)' if args.secml else ''}")
    s = pgd.settings
    print(f"transferlab: PGDLineSearch(norm=2, lb=0, ub=1, max_iter={s.max_iter}, tol={s.tol:g}, grid={s.grid}, "
          f"warm_grid={s.warm_grid}, bisection={s.bisection}, double_init={args.double_init} for nonlinear "
          f"models), all {n_attack} points in one call; times: best CPU time of {args.repeat} runs")
    if args.secml:
        defaults = "None (defaults: eta=1e-3, eta_min=None, eta_max=None, max_iter=1000, eps=1e-4)"
        print(f"secml: CAttackEvasionPGDLS(distance='l2', lb=0, ub=1, y_target=None, double_init={args.double_init} "
              f"for nonlinear models, solver_params={solver or defaults}), one point at a time on the first "
              f"{n_ref} attacked points; errors of both on those points")
    print("ms: per attacked point, attack only (training excluded); cpu = CPU time of the process, wall = wall "
          "clock; ratio = secml / transferlab CPU time")
    print("work: transferlab per line search (gradients / projections / candidates / forward passes of the model), "
          "secml per iteration (objective / gradient evaluations)")
    header = (f"{'model':<11} {'ε':>4} | {'tl cpu':>7} {'tl wall':>7} {'secml cpu':>9} {'wall':>8} {'ratio':>6} | "
              f"{'tl err':>6} {'secml':>6} | {'clean':>11} | {'tl ls':>5} {'secml it':>8} | "
              f"{'tl g/p/cand/fwd per ls':>23} | {'secml f/g per it':>16}")
    print(header)
    print("-" * len(header))
    ratios: dict[str, list[float]] = {}
    strength: dict[str, list[bool]] = {}
    fitted = {}
    for name in names:
        model = models.create(name, device=args.device).fit(split.target.X, split.target.y)
        fitted[name] = model
        count_model(model)
        clean_tl = float(np.mean(model.predict(split.test.X[:n_ref]) != split.test.y[:n_ref]))
        tl = {eps: run_transferlab(args, name, model, split, eps) for eps in eps_list}
        ref = secml_side(args, name, model, split, eps_list, n_ref, solver) if args.secml else None
        for eps in eps_list:
            res, cpu, wall, work = tl[eps]
            err_tl = float(res.success[:n_ref].mean())
            searches = float(res.iterations.sum())
            tl_cpu, tl_wall = 1000 * cpu / n_attack, 1000 * wall / n_attack
            per_ls = "/".join(f"{w / max(searches, 1):.2f}" for w in work)
            cells = (f"{name:<11} {eps:>4g} | {tl_cpu:7.3f} {tl_wall:7.3f} ")
            if ref is None:
                print(cells + f"{'—':>9} {'—':>8} {'—':>6} | {err_tl:6.3f} {'—':>6} | {clean_tl:5.3f}/{'—':>5} | "
                      f"{res.iterations.mean():5.2f} {'—':>8} | {per_ls:>23} | {'—':>16}", flush=True)
                continue
            r = ref["eps"][repr(float(eps))]
            s_cpu, s_wall = 1000 * r["cpu_s"] / r["n"], 1000 * r["wall_s"] / r["n"]
            it_total = max(r["mean_iterations"] * r["n"], 1)
            secml_work = f"{r['objective_evaluations'] / it_total:.1f}/{r['gradient_evaluations'] / it_total:.1f}"
            ratios.setdefault(name, []).append(s_cpu / tl_cpu)
            strength.setdefault(name, []).append(err_tl >= r["error"])
            note = ""
            if abs(r["error"] - r["error_recheck"]) > 0:
                note += f"  (secml re-predicted error {r['error_recheck']:.3f})"
            if r["max_iterations_hit"]:
                note += f"  ({r['max_iterations_hit']} secml points hit max_iter)"
            if r["max_perturbation"] > eps * (1 + 1e-6) or r["min_x"] < -1e-9 or r["max_x"] > 1 + 1e-9:
                note += f"  (secml point outside Φ: ‖δ‖ ≤ {r['max_perturbation']:.4f}, x in " \
                        f"[{r['min_x']:.4f}, {r['max_x']:.4f}])"
            print(cells + f"{s_cpu:9.2f} {s_wall:8.2f} {s_cpu / tl_cpu:6.0f} | {err_tl:6.3f} {r['error']:6.3f} | "
                  f"{clean_tl:5.3f}/{ref['clean_error']:5.3f} | {res.iterations.mean():5.2f} "
                  f"{r['mean_iterations']:8.2f} | {per_ls:>23} | {secml_work:>16}{note}", flush=True)
        if ref is not None:
            fallback = args.secml_mlp == "pytorch" and ref["classifier"] == "mlp (numpy)"
            print(f"{'':<11} secml classifier: {ref['classifier']}" + (
                "  (that Python has no torch: the numpy layers ran, not secml's CClassifierPyTorch; "
                "PY -m pip install torch==2.13.0, then setuptools==69.5.1)" if fallback else ""))
    if ratios:
        print("per model: the smallest ratio over the budgets, and whether transferlab's error is at least secml's "
              "at every budget")
        for name, values in ratios.items():
            print(f"  {name:<11} ratio ≥ {min(values):6.0f}   error ≥ secml's: {all(strength[name])}")
        every = [v for values in ratios.values() for v in values]
        print(f"CPU-time ratio secml / transferlab per point: geometric mean {np.exp(np.mean(np.log(every))):.0f} "
              f"over {len(every)} model-ε cells (min {min(every):.0f}, max {max(every):.0f})")
    if args.threads_check:
        threads_check(args, fitted, split, eps_list[0], default_threads)


def run_transferlab(args, name, model, split, eps):
    """PGDLineSearch on all attacked points, ``--repeat`` times; returns the result, the best CPU and wall
    seconds, and the work of one run (gradients, projections, candidates, forward passes)."""
    double_init = args.double_init and name in NONLINEAR
    attack = attacks.PGDLineSearch(norm=2, eps=eps, lb=0.0, ub=1.0)
    cpu_best = wall_best = float("inf")
    for _ in range(max(1, args.repeat)):
        COUNTS.reset()
        start, cpu = time.perf_counter(), time.process_time()
        result = attacks.security_curve(attack, model, split.test.X, split.test.y, [eps], double_init=double_init,
                                        pool=split.target.X if double_init else None).results[0]
        if args.device == "cuda":
            torch.cuda.synchronize()
        cpu_best = min(cpu_best, time.process_time() - cpu)
        wall_best = min(wall_best, time.perf_counter() - start)
    work = (COUNTS.gradients, COUNTS.projections, COUNTS.candidates, COUNTS.forwards)
    return result, cpu_best, wall_best, work


def secml_side(args, name, model, split, eps_list, n_ref, solver) -> dict | None:
    """secml's CAttackEvasionPGDLS on the same model (transferlab's fitted parameters for linear models and MLPs,
    libsvm's training for RBF SVMs) and the first ``n_ref`` attacked points; None where secml has no such model."""
    from secml_reference import call, fixed_spec, spec_for

    arrays = {"X_train": split.target.X, "y_train": split.target.y,
              "X_attack": split.test.X[:n_ref], "y_attack": split.test.y[:n_ref]}
    fixed = fixed_spec(name, model)
    if fixed is not None:
        spec, weights = fixed
        arrays.update(weights)
    else:
        spec = spec_for(name)
        if spec is None:
            return None
    config = {"models": [spec], "eps": eps_list, "lb": 0.0, "ub": 1.0, "solver_params": solver,
              "double_init": args.double_init, "mlp_backend": args.secml_mlp}
    return call(args.secml, "evasion", arrays, config, args.threads)["result"][name]


def threads_check(args, fitted, split, eps, default_threads) -> None:
    """The API as a user calls it (torch's default thread count), one thread, and the default count with the
    attack's one-thread rule lifted: wall ms per point, best of --repeat runs, for every batch of the bench."""
    print(f"threads: wall ms per point at ε = {eps:g}, best of {args.repeat} runs, with torch's default of "
          f"{default_threads} threads (the API: the attack runs on one), with 1 thread, and with {default_threads} "
          f"threads used by the attack (its rule lifted)")
    rule = pgd_line_search.one_thread_on_cpu
    for name, model in fitted.items():
        timings = []
        for threads, lifted in ((default_threads, False), (1, False), (default_threads, True)):
            torch.set_num_threads(threads)
            if lifted:
                pgd_line_search.one_thread_on_cpu = lambda device: contextlib.nullcontext()  # noqa: E731
            try:
                _, _, wall, _ = run_transferlab(args, name, model, split, eps)
            finally:
                pgd_line_search.one_thread_on_cpu = rule
            timings.append(1000 * wall / split.test.X.shape[0])
        print(f"  {name:<11} API {timings[0]:7.3f}   1 thread {timings[1]:7.3f}   {default_threads} threads "
              f"{timings[2]:7.3f}", flush=True)
    torch.set_num_threads(args.threads or default_threads)


if __name__ == "__main__":
    main()
