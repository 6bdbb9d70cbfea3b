"""Poisoning per model family (white-box: the surrogate is the target): seconds per poisoning point and the test error
of the family retrained on the poisoned set, for transferlab's default mode — side by side with the paper's
sequential algorithm (``--sequential``) and the authors' library secml 0.15.6 (``--secml PYTHON``) — and the
white-box curve over the poisoning fractions.

    python bench/poisoning.py --data ../shared/data/mnist   # 300 training, 500 validation, 1,000 test points
    python bench/poisoning.py                               # embedded MNIST89: 300 / 250 / 400
    python bench/poisoning.py --threads 1 --data ../shared/data/mnist --sequential \\
        --secml ~/.cache/transferlab/secml-venv/bin/python          # the README's table, one run

``bash ../shared/tools/secml-venv.sh`` builds a Python that has secml and prints its path (secml is not a
dependency of transferlab). For every model (linear SVM, RBF SVM, logistic, ridge, H and L; the registry's
hyperparameters) secml trains the same family on the same training points and runs its attack
(CAttackPoisoningSVM — RBF, or linear kernel in the dual —, CAttackPoisoningLogisticRegression,
CAttackPoisoningRidge) with the same number of points, the same validation set, box [0, 1], and the same starting
points as transferlab (training points with flipped labels, passed as ds_init); its solver parameters default to
those of secml's MNIST poisoning tutorial (--secml-solver), ℓ2 steps (--secml-distance) and one pass over the
points (--secml-passes, secml's default). Each library's poisoned training set is retrained by that library's own
classifier and scored on the same clean test set. secml's results depend only on the data, the starting points and
its settings, so they are kept in --secml-cache (keyed by a hash of all of them) and a rerun reuses them.

Table 1, per model and fraction: s per poisoning point (CPU time of the process, attack only; the least of
--repeat runs for the default mode) and test error of
transferlab's default mode, the sequential mode and secml (at --secml-fractions), and the ratios secml / default and
sequential / default.
Then, where secml ran, the same points on one classifier: both libraries' points scored by transferlab's classifier
of the family and by secml's (the libraries' classifiers differ: secml's logistic regression is liblinear's, which
penalises the intercept), so that the attacks are compared on one target.
Table 2, the white-box curve: the default mode's test error per fraction with each fraction starting from the
previous fraction's points plus new ones (``run(start=...)``, as the experiments' craft cells chain the fractions
with ``attack.warm_start``, their default), and whether it rises.
With --equal-error, Table 3 compares the attacks at equal damage: the default mode cut after k ascent iterations
(``max_steps=k``), the smallest k whose points cause at least secml's test error, its CPU per point and the ratio.
With --stall-error 0.02,0.05, Table 4 runs the default mode with its error stall rule on at each value
(``Poisoning(..., stall_error=v)``), and with --variant '{"growth": "model", "stall_error": 0.05}' (repeatable) with
those settings changed: CPU per point, test error, retrainings and the ratio to secml per variant, then each
variant's white-box curve. With --seeds 5, Table 5 gives the mean test error and retrainings over the start draws of
seeds 0..4 for the default and every variant: one draw's error moves with any change of path, the mean less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from transferlab import attacks, datasets, models
from transferlab.errors import ConfigError

#: the settings a cell fixes, which a --variant may not change
CELL_KEYS = ("surrogate", "n_points", "seed")
#: the training points of the bench's split (:func:`bench_split`)
N_TRAIN = 300
MODELS = ["svm_h", "svm_l", "logistic_h", "logistic_l", "ridge_h", "ridge_l", "svm_rbf_h", "svm_rbf_l"]
# secml's MNIST poisoning tutorial (tutorials/06-MNIST_dataset.ipynb); secml has no default (it reads
# solver_params['eta'] in CAttackPoisoning.__init__)
SECML_SOLVER = {"eta": 0.25, "eta_min": 2.0, "eta_max": None, "max_iter": 100, "eps": 1e-6}
SEQUENTIAL = {"mode": "sequential", "max_passes": 2, "max_iter": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (IDX files or mnist.npz)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fractions", default="0.05,0.1,0.2")
    parser.add_argument("--sequential", action="store_true",
                        help=f"also run the paper's sequential algorithm ({SEQUENTIAL})")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads, here and in the secml process (default: the libraries' own)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of the default mode per cell, the least CPU time shown (the points are the same "
                             "every run); the sequential mode and secml run once")
    parser.add_argument("--secml", metavar="PYTHON", help="a Python with secml 0.15.6: run it side by side")
    parser.add_argument("--secml-fractions", default="0.05,0.1",
                        help="the fractions secml runs at (default 0.05,0.1: its 20%% runs take the longest)")
    parser.add_argument("--secml-cache", default=str(Path.home() / ".cache" / "transferlab" / "secml-poisoning"),
                        help="folder of secml's results, reused when data, starts and settings are the same "
                             "('' to always rerun)")
    parser.add_argument("--secml-solver", default=json.dumps(SECML_SOLVER), metavar="JSON",
                        help=f"secml's solver_params (default {json.dumps(SECML_SOLVER)})")
    parser.add_argument("--secml-passes", type=int, default=1,
                        help="secml's passes over the poisoning points (run(max_iter=...); default 1, secml's)")
    parser.add_argument("--equal-error", action="store_true",
                        help="also time the default mode until its points cause secml's test error (Table 3)")
    parser.add_argument("--stall-error", metavar="VALUES",
                        help="also run the default mode with these values of its error stall rule (stall_error, "
                             "comma-separated; Table 4)")
    parser.add_argument("--variant", action="append", default=[], metavar="JSON",
                        help="also run the default mode with these settings changed, e.g. "
                             "'{\"growth\": \"model\", \"stall_error\": 0.05}' (repeatable; Table 4)")
    parser.add_argument("--seeds", type=int, default=0, metavar="N",
                        help="also run the default mode and every --variant from the start draws of seeds 0..N-1 "
                             "and print their mean test error and retrainings (Table 5)")
    parser.add_argument("--secml-distance", default="l2", choices=["l1", "l2"],
                        help="secml's step geometry: l2 moves all pixels along the gradient (as transferlab), "
                             "l1 one pixel per step (the default of secml's SVM and logistic attacks)")
    args = parser.parse_args()
    try:
        values = [float(v) for v in args.stall_error.split(",")] if args.stall_error else []
    except ValueError as error:
        parser.error(f"--stall-error: {error}")
    args.variants = [{"stall_error": v} for v in values]
    flags = [f"--stall-error {v:g}" for v in values]        # where each variant came from, for its error
    for text in args.variant:
        try:
            variant = json.loads(text)
        except json.JSONDecodeError as error:
            parser.error(f"--variant {text!r}: not JSON ({error})")
        if not isinstance(variant, dict) or not variant:
            parser.error(f"--variant {text!r}: give the settings to change as a JSON object")
        fixed = sorted(set(variant) & set(CELL_KEYS))
        if fixed:
            parser.error(f"--variant {text!r}: {', '.join(fixed)} is set by the cell (use --models, --fractions "
                         "and --seeds), not by a variant")
        args.variants.append(variant)
        flags.append(f"--variant {text!r}")
    if args.seeds < 0 or args.seeds == 1:
        parser.error("--seeds must be 0 (off) or at least 2")
    for flag, variant in zip(flags, args.variants):
        try:
            attacks.Poisoning(**variant)                # the attack's own check, before any run
        except (ConfigError, TypeError) as error:
            parser.error(f"{flag}: {error}")
    if args.threads:
        limit_threads(args.threads)
    names, fractions = parse_cells(parser, args.models, args.fractions)
    args.secml_fractions = parse_fractions(parser, "--secml-fractions", args.secml_fractions)
    split = bench_split(args.data)
    print(f"data: {'full' if args.data else 'embedded'} MNIST89, {len(split.target)} training, "
          f"{len(split.validation)} validation, {len(split.test)} test points; BLAS/torch threads "
          f"{args.threads or 'default'}")
    print(f"transferlab default: Poisoning(surrogate=..., n_points=..., seed=0) = {default_settings()}; "
          f"time: the least CPU time of {args.repeat} run(s)")
    if args.sequential:
        print(f"transferlab sequential (the paper's algorithm): Poisoning(..., {SEQUENTIAL})")
    if args.secml:
        print(f"secml: CAttackPoisoning*(distance='{args.secml_distance}', lb=0, ub=1, "
              f"solver_params={json.loads(args.secml_solver)}, run(max_iter={args.secml_passes} pass(es))), "
              "starting from transferlab's starting points")
    print("s/pt: CPU seconds per poisoning point, attack only; err: clean test error of the family retrained on the "
          "training set plus the points (each library's own classifier); x: secml (or sequential) time / default "
          "time")
    table(args, split, names, fractions)
    curves(split, names, fractions)
    for variant in args.variants:
        curves(split, names, fractions, **variant)
    if args.seeds:
        print_seeds(split, names, fractions, args.variants, args.seeds)


def limit_threads(threads: int) -> None:
    """torch and BLAS threads for the rest of the process (every BLAS loaded first, so that each is limited)."""
    import scipy.linalg  # noqa: F401
    import sklearn.svm  # noqa: F401
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # numpy/scipy/scikit-learn BLAS too


def bench_split(path: str | None):
    """The bench's split of MNIST89: 300 training points, 500 validation and 1,000 test points from the full MNIST
    in ``path``, or 250 and 400 from the embedded subset (``path`` None)."""
    data = datasets.load("mnist89", path=path) if path else datasets.load("mnist89")
    n_val, n_test = (500, 1000) if path else (250, 400)
    return datasets.split(data, n_target=N_TRAIN, n_surrogate=2, n_test=n_test, n_validation=n_val, seed=0)


def parse_cells(parser: argparse.ArgumentParser, models: str, fractions: str) -> tuple[list[str], list[float]]:
    """The --models and --fractions of a bench, checked (a parser error names what is wrong)."""
    names = models.split(",")
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    return names, parse_fractions(parser, "--fractions", fractions)


def parse_fractions(parser: argparse.ArgumentParser, flag: str, text: str) -> list[float]:
    """A comma-separated list of poisoning fractions, each in (0, 1), or a parser error naming ``flag``."""
    try:
        values = [float(f) for f in text.split(",")]
    except ValueError as error:
        parser.error(f"{flag}: {error}")
    if not all(0 < f < 1 for f in values):
        parser.error(f"{flag}: each fraction must lie in (0, 1)")
    if any(point_count(f, N_TRAIN) < 1 for f in values):
        parser.error(f"{flag}: each fraction must give at least one of the {N_TRAIN} training points "
                     f"(at least {0.5 / N_TRAIN:g})")
    return values


def point_count(fraction: float, n_train: int) -> int:
    """The poisoning points of a cell: ``fraction`` of the training set, rounded."""
    return int(round(fraction * n_train))


def label(i: int) -> str:
    """The letter of the ``i``-th variant in the tables' headers: (a), (b), ..."""
    return chr(ord("a") + i)


def default_settings() -> str:
    s = attacks.PoisoningSettings()
    return (f"mode={s.mode!r}, max_steps={s.max_steps}, momentum={s.momentum}, stall={s.stall}, "
            f"stall_error={s.stall_error}, growth={s.growth!r}, keep={s.keep!r}, grid={s.grid}, tol={s.tol}, "
            f"init={s.init!r}")


def run_transferlab(name, split, n_points, start=None, seed=0, **settings):
    """One poisoning run; returns its result, its CPU seconds, the test error of the retrained model and the points."""
    X, y = split.target.X, split.target.y
    attack = attacks.Poisoning(surrogate=name, n_points=n_points, seed=seed, **settings)
    begin = time.process_time()
    result = attack.run(X, y, split.validation.X, split.validation.y, start=start)
    cpu = time.process_time() - begin
    X_p, y_p = result.X_p, result.y_p
    poisoned = models.create(name).fit(np.vstack([X, X_p]), np.r_[y, y_p])
    return result, cpu, float(np.mean(poisoned.predict(split.test.X) != split.test.y)), X_p, y_p


def table(args, split, names, fractions) -> None:
    X, y = split.target.X, split.target.y
    header = f"{'model':<11} {'clean':>5} {'p':>5} {'n':>3} | {'default s/pt':>12} {'err':>5}"
    if args.sequential:
        header += f" | {'sequential s/pt':>15} {'err':>5} {'x':>6}"
    if args.secml:
        header += f" | {'secml s/pt':>10} {'err':>5} {'x':>6}"
    print_head(header)
    ratios, common, every_row = [], [], []
    for name in names:
        clean = models.create(name).fit(X, y)
        clean_error = float(np.mean(clean.predict(split.test.X) != split.test.y))
        rows = []
        for fraction in fractions:
            n_points = point_count(fraction, len(y))
            result, cpu, error, X_p, y_p = run_transferlab(name, split, n_points)
            for _ in range(args.repeat - 1):    # the machine's noise: keep the least CPU time of identical runs
                again = run_transferlab(name, split, n_points)
                assert np.array_equal(again[3], X_p), "the default mode is deterministic for a seed"
                cpu = min(cpu, again[1])
            rows.append({"name": name, "fraction": fraction, "n": n_points, "cpu": cpu, "error": error,
                         "steps": len(result.history) - 1, "fits": result.retrainings,
                         "start": result.initial_indices, "X_p": X_p, "y_p": y_p})
            if args.sequential:
                _, cpu_s, error_s, _, _ = run_transferlab(name, split, n_points, **SEQUENTIAL)
                rows[-1].update(seq_cpu=cpu_s, seq_error=error_s)
        if args.secml:
            wanted = set(args.secml_fractions)
            compared = [row for row in rows if row["fraction"] in wanted]
            reference = secml_runs(args, split, name, compared)
            for row, r in zip(compared, reference["runs"] if reference else []):
                row.update(secml_cpu=r["cpu_s"], secml_error=r["test_error"])
                if "X_p" in r:      # results cached before the points were kept have none
                    row.update(secml_X_p=np.asarray(r["X_p"], dtype=float), secml_y_p=np.asarray(r["y_p"]))
            common.extend(common_scores(args, split, name, [row for row in compared if "secml_X_p" in row]))
        every_row.extend(rows)
        for row in rows:
            n = row["n"]
            line = (f"{name:<11} {clean_error:5.3f} {row['fraction']:>5g} {n:>3} | {row['cpu'] / n:12.4f} "
                    f"{row['error']:5.3f}")
            if args.sequential:
                line += f" | {row['seq_cpu'] / n:15.4f} {row['seq_error']:5.3f} {row['seq_cpu'] / row['cpu']:6.1f}"
            if args.secml and "secml_cpu" in row:
                ratio = row["secml_cpu"] / row["cpu"]
                ratios.append(ratio)
                line += f" | {row['secml_cpu'] / n:10.3f} {row['secml_error']:5.3f} {ratio:6.0f}"
            elif args.secml:
                line += " |          -     -      -"
            print(line, flush=True)
    if common:
        print_common(common)
    if ratios:
        print(f"CPU-time ratio secml / transferlab default per poisoning point: geometric mean "
              f"{np.exp(np.mean(np.log(ratios))):.0f} over {len(ratios)} cells (min {min(ratios):.0f}, "
              f"max {max(ratios):.0f})")
    if args.equal_error:
        print_equal_error(split, [row for row in every_row if "secml_error" in row])
    if args.variants:
        print_variants(args, split, every_row, args.variants)


def common_scores(args, split, name, rows) -> list[dict]:
    """Both libraries' points scored by the same classifiers: each library's points are already scored by its own
    classifier (``row["error"]``, ``row["secml_error"]``); here transferlab's family is retrained on secml's points
    and secml's classifier on transferlab's (a ``scoring`` call of secml_reference.py, never cached: one fit per
    point set), each on the training set plus the points. The libraries' classifiers differ in places (secml's
    logistic regression is liblinear's, which penalises the intercept), so the main table's errors mix the attack
    with the scoring classifier; here the attacks meet on one target."""
    if not rows:
        return []
    from secml_reference import call, spec_for

    X, y = split.target.X, split.target.y
    arrays = {"X_train": X, "y_train": y, "X_test": split.test.X, "y_test": split.test.y}
    secml_on_ours = []
    for k, row in enumerate(rows):
        arrays[f"set{k}_X"], arrays[f"set{k}_y"] = row["X_p"], row["y_p"]
        model = models.create(name).fit(np.vstack([X, row["secml_X_p"]]), np.r_[y, row["secml_y_p"]])
        secml_on_ours.append(float(np.mean(model.predict(split.test.X) != split.test.y)))
    ours_on_secml = call(args.secml, "scoring", arrays, {"model": spec_for(name), "sets": len(rows)},
                         args.threads)["result"]["test_errors"]
    return [{"name": name, "fraction": row["fraction"], "n": row["n"],
             "ours_on_ours": row["error"], "secml_on_ours": secml_on_ours[i],
             "ours_on_secml": ours_on_secml[i], "secml_on_secml": row["secml_error"]}
            for i, row in enumerate(rows)]


def print_head(header: str, title: str = "") -> None:
    """A blank line, the table's title (if any), its column header and a rule."""
    print()
    if title:
        print(title)
    print(header)
    print("-" * len(header))


#: the header of the first columns that :func:`cell` fills
CELL_HEAD = f"{'model':<11} {'p':>5} {'n':>3} | "


def cell(row: dict) -> str:
    """The first columns of a per-cell row: model, fraction, number of points."""
    return f"{row['name']:<11} {row['fraction']:>5g} {row['n']:>3} | "


def print_common(common: list[dict]) -> None:
    print_head(CELL_HEAD + f"{'transferlab clf: tl':>19} {'secml':>5}    | "
               f"{'secml clf: tl':>13} {'secml':>5}",
               "the same points on one classifier: test error of the family retrained on the training set plus "
               "transferlab's points (tl) or secml's (secml), scored by transferlab's classifier and by secml's; "
               ">= where transferlab's points cause at least secml's error")
    for c in common:
        mark = [">=" if a >= b else "< " for a, b in ((c["ours_on_ours"], c["secml_on_ours"]),
                                                       (c["ours_on_secml"], c["secml_on_secml"]))]
        print(f"{cell(c)}{c['ours_on_ours']:19.3f} "
              f"{c['secml_on_ours']:5.3f} {mark[0]} | {c['ours_on_secml']:13.3f} {c['secml_on_secml']:5.3f} "
              f"{mark[1]}", flush=True)


def print_equal_error(split, rows: list[dict]) -> None:
    """Table 3: the default mode cut after k = 1, 2, ... ascent iterations (``max_steps=k``: the same ascent, cut
    short; the returned iterate is the best of those k), up to the first k whose points cause at least secml's
    test error (each library's own classifier): that k, its CPU per point and secml's time over it — the attacks
    compared at equal damage instead of at their own stopping rules. A cell whose full run stays below secml's
    error shows "never"."""
    if not rows:
        return
    print_head(CELL_HEAD + f"{'secml err':>9} | {'k':>3} {'full':>4} {'err':>5} {'s/pt':>8} "
               f"{'x':>6}",
               "equal error: the default mode cut at k ascent iterations (max_steps=k), the smallest k whose points "
               "cause at least secml's test error; s/pt: CPU per poisoning point of that run; x: secml's time / that "
               "time; full: the uncut run's accepted steps")
    for row in rows:
        line = f"{cell(row)}{row['secml_error']:9.3f} | "
        previous = None
        for k in range(1, attacks.PoisoningSettings().max_steps + 1):
            result, cpu, error, _, _ = run_transferlab(row["name"], split, row["n"], max_steps=k)
            if error >= row["secml_error"]:
                line += (f"{k:>3} {row['steps']:>4} {error:5.3f} {cpu / row['n']:8.4f} "
                         f"{row['secml_cpu'] / cpu:6.0f}")
                break
            if result.retrainings == previous:      # the ascent stopped by itself before k: so will every longer one
                line += f"{'never':>5} {row['steps']:>4} (the full run's error {row['error']:.3f})"
                break
            previous = result.retrainings
        print(line, flush=True)


def variant_name(variant: dict) -> str:
    """A variant's settings as ``key=value`` pairs (the column label of Table 4)."""
    return ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in variant.items())


def print_variants(args, split, rows: list[dict], variants: list[dict]) -> None:
    """Table 4: the default mode with some settings changed — the error stall rule on (``stall_error=v``: the same
    ascent, stopped once the validation error stops rising), the step growth gated by its model
    (``growth="model"``: another path) —, per variant its CPU per point (the least of --repeat runs), test error,
    retrainings and secml's time over it where secml ran: the speed a variant buys and the damage it costs, next to
    the default."""
    names = [variant_name(v) for v in variants]
    head = f"{'default: s/pt':>13} {'err':>5} {'fits':>4}" + "".join(
        f" | {'(' + label(i) + ') s/pt':>13} {'err':>5} {'fits':>4} {'x':>5}" for i in range(len(names)))
    print_head(CELL_HEAD + head, "variants: the default mode with " + "; ".join(
        f"({label(i)}) {name}" for i, name in enumerate(names)) + "; fits: retrainings; x: secml's time / "
        "that time (where secml ran)")
    for row in rows:
        line = f"{cell(row)}{row['cpu'] / row['n']:13.4f} {row['error']:5.3f} {row['fits']:4d}"
        for variant in variants:
            runs = [run_transferlab(row["name"], split, row["n"], **variant) for _ in range(args.repeat)]
            result, _, error, _, _ = runs[0]
            cpu, fits = min(run[1] for run in runs), result.retrainings
            ratio = f"{row['secml_cpu'] / cpu:5.0f}" if "secml_cpu" in row else f"{'-':>5}"
            line += f" | {cpu / row['n']:13.4f} {error:5.3f} {fits:4d} {ratio}"
        print(line, flush=True)


def print_seeds(split, names, fractions, variants: list[dict], seeds: int) -> None:
    """Table 5: the damage and retrainings of the default mode and of each variant over the start draws of seeds
    0..seeds-1 — one seed's test error is a draw among the local optima (``svm_h``: ±0.03 from a change of path),
    so a change of path is judged on the mean: per cell the default's mean test error and retrainings, and per
    variant its mean test error, its mean difference to the default's with the standard error of that mean, and
    its mean retrainings."""
    head = f"{'default: err':>12} {'fits':>5}" + "".join(
        f" | {'(' + label(i) + ') err':>9} {'diff':>6} {'± se':>5} {'fits':>5}" for i in range(len(variants)))
    print_head(CELL_HEAD + head, f"over seeds 0..{seeds - 1} (start draws; the split stays): mean test error and "
               "retrainings of the default mode and of the variants " + "; ".join(
                   f"({label(i)}) {variant_name(v)}" for i, v in enumerate(variants)))
    y = split.target.y
    for name in names:
        for fraction in fractions:
            n_points = point_count(fraction, len(y))
            runs = [run_transferlab(name, split, n_points, seed=seed) for seed in range(seeds)]
            errors = np.array([run[2] for run in runs])
            line = (f"{cell({'name': name, 'fraction': fraction, 'n': n_points})}{errors.mean():12.3f} "
                    f"{np.mean([run[0].retrainings for run in runs]):5.1f}")
            for variant in variants:
                other = [run_transferlab(name, split, n_points, seed=seed, **variant) for seed in range(seeds)]
                diff = np.array([run[2] for run in other]) - errors
                line += (f" | {errors.mean() + diff.mean():9.3f} {diff.mean():+6.3f} "
                         f"{diff.std(ddof=1) / np.sqrt(seeds):5.3f} {np.mean([run[0].retrainings for run in other]):5.1f}")
            print(line, flush=True)


def curves(split, names, fractions, **settings) -> None:
    """The default mode's white-box curve (or, with ``settings``, that of the default mode with them changed), each
    fraction warm-started from the previous fraction's points."""
    print()
    print(f"white-box curve of the default mode{' with ' + variant_name(settings) if settings else ''}, each "
          "fraction starting from the previous fraction's points (run(start=...)); test error per fraction (rises: "
          "never falls and ends higher; flat; FALLS):")
    y = split.target.y
    for name in names:
        errors, start = [], None
        for fraction in sorted(fractions):
            n_points = point_count(fraction, len(y))
            _, _, error, X_p, y_p = run_transferlab(name, split, n_points, start=start, **settings)
            errors.append(error)
            start = (X_p, y_p)
        never_falls = all(b >= a for a, b in zip(errors, errors[1:]))
        verdict = ("rises" if errors[-1] > errors[0] else "flat") if never_falls else "FALLS"
        print(f"{name:<11} " + "  ".join(f"p={f:g}: {e:.3f}" for f, e in zip(sorted(fractions), errors))
              + f"   {verdict}", flush=True)


def secml_runs(args, split, name, rows) -> dict | None:
    """secml on the same points as ``rows`` (their starting indices); None where secml has no such model."""
    from secml_reference import call, spec_for

    spec = spec_for(name)
    if spec is None:
        return None
    X, y = split.target.X, split.target.y
    arrays = {"X_train": X, "y_train": y, "X_val": split.validation.X, "y_val": split.validation.y,
              "X_test": split.test.X, "y_test": split.test.y}
    runs = []
    for k, row in enumerate(rows):
        arrays[f"init{k}_X"], arrays[f"init{k}_y"] = X[row["start"]], 1 - y[row["start"]]
        runs.append({"n_points": row["n"], "init_key": f"init{k}"})
    config = {"model": spec, "runs": runs, "lb": 0.0, "ub": 1.0, "solver_params": json.loads(args.secml_solver),
              "passes": args.secml_passes, "distance": args.secml_distance, "seed": 0}
    digest = hashlib.sha256(json.dumps([config, args.threads], sort_keys=True).encode())
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    path = Path(args.secml_cache) / f"{name}-{digest.hexdigest()[:20]}.json" if args.secml_cache else None
    if path is not None and path.exists():
        return json.loads(path.read_text())
    result = call(args.secml, "poisoning", arrays, config, args.threads)["result"]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


if __name__ == "__main__":
    main()
