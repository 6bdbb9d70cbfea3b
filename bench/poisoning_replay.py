"""How much a better step rule could save at most: the default poisoning mode against a replay of its own path
without the line-search candidates it rejected.

    python bench/poisoning_replay.py --data ../shared/data/mnist --models svm_rbf_h,svm_h --fractions 0.05,0.1

The batch ascent (``strategies.batch``) retrains the surrogate once per line-search candidate: the accepted one,
which becomes the next iterate, and the rejected ones, which a step rule that guessed every step length right
would not have tried. The replay runs the same accepted iterates in the same order — the clean fit, the first fit,
then per accepted step one gradient and one retraining warm-started from the previous iterate, with the
validation loss and error that the ascent computes for it — and nothing else. Any step rule that takes these
accepted steps costs at least that much (up to the warm starts of the active-set solves, which the rejected
candidates also move), so ``default / replay`` bounds what fewer retrainings per step can buy without taking fewer
or longer steps, which changes the points and the damage.

Per cell (the split of bench/poisoning.py, one BLAS/torch thread): the accepted steps, the retrainings, the CPU
time per point of the default mode and of the replay (the least of --rounds each, the two alternating so that a
machine whose speed drifts slows both alike) and their ratio. The replay checks that it reaches the default's
validation loss at every step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from poisoning import MODELS, bench_split, limit_threads, parse_cells, point_count

from transferlab import attacks
from transferlab.attacks.poisoning import attack as attack_module
from transferlab.attacks.poisoning.strategies import unblocked



def recorded_path(attack: attacks.Poisoning, split):
    """One run of ``attack`` whose batch ascent is watched: its problem (the features the attack kept), the
    poisoning points of every accepted iterate in order (the start first) and the result."""
    seen: dict = {}
    real_batch = attack_module.batch

    def watched_batch(problem, X_p, y_p, *args, **kwargs):
        family = problem.family
        fits: list[tuple[np.ndarray, float]] = []
        real_session = family.session

        def session(*session_args):
            s = real_session(*session_args)
            real_fit = s.fit

            def fit(X, y, warm=None):
                out = real_fit(X, y, warm=warm)
                fits.append((X.copy(), s.validation_loss(out)))
                return out
            s.fit = fit
            return s
        family.session = session
        try:
            X_best, result = real_batch(problem, X_p, y_p, *args, **kwargs)
        finally:
            del family.session
        accepted, j = [], 0
        for X, loss in fits[1:]:            # after the clean fit: the start, then each candidate in turn
            if j < len(result.history) and loss == result.history[j]:
                accepted.append(X)
                j += 1
        if j != len(result.history):
            raise RuntimeError("the accepted iterates could not be matched to the ascent's history")
        seen.update(problem=problem, accepted=accepted, y_p=y_p, history=result.history)
        return X_best, result

    attack_module.batch = watched_batch
    try:
        result = attack.run(split.target.X, split.target.y, split.validation.X, split.validation.y)
    finally:
        attack_module.batch = real_batch
    return seen, result


def replay(seen: dict) -> float:
    """The accepted path alone; returns its CPU seconds (checked against the recorded validation losses)."""
    problem, accepted, y_p, history = seen["problem"], seen["accepted"], seen["y_p"], seen["history"]
    begin = time.process_time()
    session = problem.family.session(problem.X_train, problem.y_train, problem.X_val, problem.y_val)
    clean = session.fit(accepted[0][:0], y_p[:0])
    session.validation_loss(clean)
    session.validation_error(clean)
    fit = session.fit(accepted[0], y_p, warm=clean)
    losses = [session.validation_loss(fit)]
    session.validation_error(fit)
    for X_next in accepted[1:]:
        unblocked(session.gradients(fit), fit.X_p, problem.lb, problem.ub)
        fit = session.fit(X_next, y_p, warm=fit)
        losses.append(session.validation_loss(fit))
        session.validation_error(fit)
    seconds = time.process_time() - begin
    if not np.allclose(losses, history, rtol=1e-9, atol=1e-12):
        raise RuntimeError("the replay left the recorded path")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the full MNIST (default: the embedded MNIST89)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--fractions", default="0.05,0.1,0.2")
    parser.add_argument("--rounds", type=int, default=5, help="runs of the default and the replay (default 5)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    names, fractions = parse_cells(parser, args.models, args.fractions)
    limit_threads(1)
    split = bench_split(args.data)
    print(f"data: {'full' if args.data else 'embedded'} MNIST89, {len(split.target)} training, "
          f"{len(split.validation)} validation points; BLAS/torch threads 1; the least CPU time of {args.rounds} "
          "run(s), default and replay alternating")
    print("steps: accepted steps; fits: the default's retrainings (the replay's: steps + 2); s/pt: CPU seconds per "
          "poisoning point; bound: default / replay, the most any step rule along these steps could gain")
    print(f"{'model':11s} {'p':>5s} {'n':>3s} | {'steps':>5s} {'fits':>4s} | {'default s/pt':>12s} "
          f"{'replay s/pt':>11s} {'bound':>6s}")
    print("-" * 68)
    X = split.target.X
    for name in names:
        for fraction in fractions:
            k = point_count(fraction, len(X))
            attack = attacks.Poisoning(surrogate=name, n_points=k, seed=0)
            seen, result = recorded_path(attack, split)
            default_times, replay_times = [], []
            for _ in range(args.rounds):
                begin = time.process_time()
                attack.run(split.target.X, split.target.y, split.validation.X, split.validation.y)
                default_times.append(time.process_time() - begin)
                replay_times.append(replay(seen))
            best, floor = min(default_times) / k, min(replay_times) / k
            print(f"{name:11s} {float(fraction):5.2f} {k:3d} | {len(seen['history']) - 1:5d} "
                  f"{result.retrainings:4d} | {best:12.4f} {floor:11.4f} {best / floor:6.2f}", flush=True)


if __name__ == "__main__":
    main()
