"""The two optimisers of availability poisoning (paper Section 3.2), both projected gradient ascent on the box
[lb, ub] along the implicit gradient, each step's length found by retraining the surrogate on the poisoned set.
They share the start draw (:func:`start_indices`), the box blocking (:func:`unblocked`) and the result type
(:class:`PoisoningResult`):

* :func:`sequential` — the paper's algorithm: one point at a time (the others held fixed), the step the best of a
  geometric grid (the line search of Algorithm 1); passes over all points repeat until a pass improves the
  validation loss by less than ``tol`` (or ``max_passes``).
* :func:`batch` — all points at once: the implicit gradients of all points share one Hessian solve, every point
  moves along its own box-blocked, unit-length direction by one common step, found by backtracking, and the
  retraining of the accepted step is the next iterate (:meth:`Family.session`: cached kernels, warm starts). It
  stops when the ascent stalls and returns the iterate that misclassifies the most validation points.

Why the batch ascent stalls, and what the stall rule and the error selection are for: the validation loss of the
SVMs is only piecewise smooth — it has a kink wherever a training point moves between the error vectors, the margin
vectors and the rest, or a validation point crosses its margin — and a common step of many points meets the nearest
kink of any of them, so with more points the ascent stops earlier, at a ridge where every joint move lowers A
(measured on the bench's ``svm_h``: one clean training point leaving the error vectors at a step of 1e-6 turns the
slope from +128 to −120; single-point moves there gain 1e-5 of A ≈ 8.5). For a weakly regularised SVM the hinge loss
is also a poor proxy of the error — across starts its maximum and the test error it causes are uncorrelated —,
so the error of one fraction is a draw from the local optima and a larger attacker can end below a smaller one.
Hence: (1) a larger attacker may start from a smaller one's points (``start`` of :meth:`Poisoning.run`): the
attack then weighs the run from those points, the run from its own draw, and the given points with the extra ones
placed where the surrogate ignores them (:func:`padded`), which keeps the white-box curves from falling; (2) the batch returns the accepted iterate with the highest validation error
(``keep="error"``; the attacker's validation error tracks the test error to a correlation of 0.99 along a path),
never a worse one than its start; (3) it stops once the last ``STALL_WINDOW`` steps together added less than
``stall`` of the gain so far (the long tail of tiny steps along a ridge costs retrainings and changes no
prediction); (4) a heavy-ball momentum: on the smooth families (logistic H: the accepted step settles at 1/64 of the
largest and A creeps up for 100 steps) it reaches in 30 steps more than the plain ascent in 100.

The step length doubles after every step accepted at once (``growth="double"``, the default), and about half of
those doubled tries are then rejected: a retraining spent on no step (on the bench's ``svm_rbf_h`` at 5%, 62
retrainings for 36 steps). ``growth="model"`` (:func:`step_grows`) doubles only where the quadratic model of A
along the last step is still rising at the step's end; that skips most of the rejected tries and a few that
would have been accepted, so it is a different path: fewer retrainings, the same damage on ridge and
``logistic_l``, a little less on ``logistic_h`` and some SVM cells (measured in the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from transferlab.attacks.poisoning.base import Family
from transferlab.attacks.poisoning.solvers import signed


#: the accepted steps over which the batch ascent's stall rule measures its progress
STALL_WINDOW = 5
#: the accepted steps over which the error stall rule (``stall_error``) measures the validation error's progress
ERROR_STALL_WINDOW = 8
#: the first accepted steps, which double as with ``growth="double"`` whatever the model says, under
#: ``growth="model"``: the first moves choose the basin of the local optimum, and gating them lowered the damage of
#: the SVMs (bench split, 5 seeds: ``svm_h`` at 10% 0.430 → 0.403 test error without this warm-up, 0.428 with it)
GROWTH_WARMUP = 5
#: the step growth rules of :func:`step_grows` (``PoisoningSettings.growth`` is one)
GrowthRule = Literal["double", "model"]
GROWTH_RULES: tuple[str, ...] = get_args(GrowthRule)


@dataclass
class PoisoningResult:
    """Per poisoning point: the validation loss just before its first optimisation and just after its last one,
    the ascent iterations spent on it, and the index of the training point it started from (label flipped; −1 for
    a row given as ``start``, whose starting point is in ``X_start``). In batch mode all points share the first two
    (the loss at the start and of the returned points) and the iterations (the accepted steps up to the returned
    iterate); ``history`` is the loss after each accepted step, ``error_history`` the surrogate's validation error
    there, and ``retrainings`` counts every retraining (line-search candidates and the clean model included).
    ``validation_error_clean`` and ``validation_error_poisoned`` are the surrogate's errors on the validation set
    without and with the returned points; ``from_start`` whether they came from ``run(start=...)`` (``retrainings``
    then counts every candidate's), ``inert`` how many of them were placed where they leave the surrogate as the
    start points made it (:func:`padded`, not optimised). ``X_p`` and ``y_p`` are the poisoning points and their
    labels, set on the result that :meth:`Poisoning.run <transferlab.attacks.poisoning.Poisoning.run>` returns."""

    objective_before: np.ndarray
    objective_after: np.ndarray
    iterations: np.ndarray
    initial_indices: np.ndarray
    passes: int
    validation_loss_clean: float
    validation_loss_poisoned: float
    mode: str = "sequential"
    retrainings: int = 0
    history: np.ndarray | None = None
    error_history: np.ndarray | None = None
    validation_error_clean: float = float("nan")
    validation_error_poisoned: float = float("nan")
    X_start: np.ndarray | None = None
    from_start: bool = False
    inert: int = 0
    X_p: np.ndarray | None = None
    y_p: np.ndarray | None = None


@dataclass
class Problem:
    """What both strategies optimise: the family, the clean training set, the attacker's validation set, the box."""

    family: Family
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    lb: float
    ub: float


def start_indices(problem: Problem, n_points: int, init: str, seed: int) -> np.ndarray:
    """The training points the poisoning points start from, labels to be flipped (n_points <= len(X_train)):
    "random", a seeded draw without replacement, or "confident", the points the clean surrogate classifies with the
    largest margin."""
    if init == "confident":
        family = problem.family
        margins = signed(problem.y_train) * family.scores(family.fit(problem.X_train, problem.y_train),
                                                          problem.X_train)
        return np.argsort(-margins, kind="stable")[:n_points]
    rng = np.random.default_rng(seed)
    return rng.choice(len(problem.X_train), size=n_points, replace=False)


def unblocked(grad: np.ndarray, X: np.ndarray, lb: float, ub: float) -> np.ndarray:
    """The gradient with the coordinates a step could not follow (at a box bound) set to 0, as the evasion
    attacks do: such steps do not count in the direction."""
    grad[((grad > 0) & (X >= ub)) | ((grad < 0) & (X <= lb))] = 0.0
    return grad


def sequential(problem: Problem, X_p: np.ndarray, y_p: np.ndarray, chosen: np.ndarray, *, max_step: float,
               max_passes: int, max_iter: int, grid: int, tol: float) -> tuple[np.ndarray, PoisoningResult]:
    """The paper's algorithm: points optimised one at a time, ``max_iter`` line-searched steps per point and pass
    (candidates: ``grid`` steps halving from the point's last accepted step ×2, at most ``max_step``), passes until
    one improves A by at most ``tol``."""
    family, lb, ub = problem.family, problem.lb, problem.ub
    X_val, y_val = problem.X_val, problem.y_val
    n, k_points = len(problem.X_train), len(X_p)
    X_all, y_all = np.vstack([problem.X_train, X_p]), np.r_[problem.y_train, y_p]
    clean_params = family.fit(problem.X_train, problem.y_train)
    clean = family.validation_loss(clean_params, X_val, y_val)
    current = family.validation_loss(family.fit(X_all, y_all), X_val, y_val)
    before = np.full(k_points, np.nan)
    after = np.full(k_points, np.nan)
    iterations = np.zeros(k_points, dtype=int)
    steps = np.full(k_points, max_step)
    passes, retrainings = 0, 2     # the clean model and the start, then every fit and every candidate below
    for passes in range(1, max_passes + 1):
        start_of_pass = current
        for k in range(k_points):
            c = n + k
            if np.isnan(before[k]):
                before[k] = current
            for _ in range(max_iter):
                params = family.fit(X_all, y_all)
                retrainings += 1
                grad = unblocked(family.gradients(params, X_all, y_all, [c], X_val, y_val)[0], X_all[c], lb, ub)
                norm = np.linalg.norm(grad)
                iterations[k] += 1
                if norm == 0:
                    break
                etas = steps[k] * 2.0 ** -np.arange(grid)
                candidates = np.clip(X_all[c] + etas[:, None] * grad / norm, lb, ub)
                values = family.validation_losses(params, X_all, y_all, c, candidates, X_val, y_val)
                retrainings += len(candidates)
                best = int(np.argmax(values))
                if values[best] <= current + tol:
                    steps[k] = max(etas[-1], steps[k] / 2 ** grid)
                    break
                X_all[c], current = candidates[best], float(values[best])
                steps[k] = min(max_step, 2 * etas[best])        # reuse a step that worked, allowing it to grow
            after[k] = current
        if current - start_of_pass <= tol:
            break
    errors = [validation_error(family, params, X_val, y_val) for params in (clean_params, family.fit(X_all, y_all))]
    return X_all[n:], PoisoningResult(before, after, iterations, chosen, passes, clean, current,
                                      retrainings=retrainings + 1, validation_error_clean=errors[0],
                                      validation_error_poisoned=errors[1])


def validation_error(family: Family, params, X_val: np.ndarray, y_val: np.ndarray) -> float:
    """The surrogate's error on the validation set (class 1 where its score is positive)."""
    return float(np.mean((family.scores(params, X_val) > 0) != (np.asarray(y_val) == 1)))


def batch(problem: Problem, X_p: np.ndarray, y_p: np.ndarray, chosen: np.ndarray, *, max_step: float,
          max_steps: int, grid: int, tol: float, stall: float, keep: str, momentum: float,
          stall_error: float, growth: str) -> tuple[np.ndarray, PoisoningResult]:
    """All points together: one common step along every point's box-blocked unit direction plus ``momentum``
    times the previous step (per unit of step length: heavy-ball ascent, which crosses the narrow curved ridges of
    the smooth families' A in a fraction of the steps; dropped once when it overshoots), found by backtracking
    (halving at most ``grid`` times from the last accepted step, which doubles — up to ``max_step`` — after a step
    accepted at once, where :func:`step_grows` says so for ``growth``; the first try is a quarter of ``max_step``);
    stops after ``max_steps`` steps, when no step
    raises A by more than ``tol``, or — ``stall`` > 0 — when the last :data:`STALL_WINDOW` accepted steps together
    raised A by less than ``stall`` times the gain since the start, or — ``stall_error`` > 0 — when the best
    validation error of the last :data:`ERROR_STALL_WINDOW` accepted steps exceeds the best before them by less
    than ``stall_error`` times the best error's gain over the start, or falls below it (the steps that only deepen
    the hinge or log loss of points already misclassified; it can first stop after ERROR_STALL_WINDOW + 1 steps).
    Returns the last iterate (``keep="last"``, the highest A) or the accepted iterate, start included, with the
    highest validation error of the surrogate (``keep="error"``; ties go to the later one)."""
    check_growth(growth)
    lb, ub = problem.lb, problem.ub
    session = problem.family.session(problem.X_train, problem.y_train, problem.X_val, problem.y_val)
    clean_fit = session.fit(X_p[:0], y_p[:0])
    clean = session.validation_loss(clean_fit)
    fit = session.fit(X_p, y_p, warm=clean_fit)
    current = session.validation_loss(fit)
    history, errors, iterates = [current], [session.validation_error(fit)], [X_p]
    eta = max_step / 4      # a careful first step: the first moves choose the basin of the local optimum
    velocity = np.zeros_like(X_p)
    for _ in range(max_steps):
        grad = unblocked(session.gradients(fit), X_p, lb, ub)
        norms = np.linalg.norm(grad, axis=1)
        if not norms.any():
            break
        direction = grad / np.where(norms > 0, norms, 1.0)[:, None] + momentum * velocity
        accepted = False
        for attempt in range(grid):
            candidate = np.clip(X_p + eta * direction, lb, ub)
            trial = session.fit(candidate, y_p, warm=fit)
            value = session.validation_loss(trial)
            if value > current + tol:
                accepted = True
                break
            eta /= 2
        if not accepted:
            if momentum and velocity.any():     # the momentum overshot: drop it and try the gradient alone
                velocity[:] = 0.0
                continue
            break
        velocity = (candidate - X_p) / eta
        predicted = float(np.sum(grad * (candidate - X_p)))    # the first-order gain of the step, g·Δ
        gain = value - current
        X_p, fit, current = candidate, trial, value
        history.append(current)
        errors.append(session.validation_error(fit))
        iterates.append(X_p)
        if attempt == 0 and step_grows(growth, len(history) - 1, gain, predicted):   # accepted at once
            eta = min(max_step, 2 * eta)
        if stall > 0 and len(history) > STALL_WINDOW and \
                history[-1] - history[-1 - STALL_WINDOW] < stall * (history[-1] - history[0]):
            break
        if stall_error > 0 and error_stalled(errors, stall_error):
            break
    best = len(history) - 1
    if keep == "error":
        best = len(errors) - 1 - int(np.argmax(errors[::-1]))      # the highest error, the later one on ties
    k = len(X_p)
    result = PoisoningResult(np.full(k, history[0]), np.full(k, history[best]), np.full(k, best), chosen, 1, clean,
                             history[best], mode="batch", retrainings=session.fits, history=np.asarray(history),
                             error_history=np.asarray(errors),
                             validation_error_clean=session.validation_error(clean_fit),
                             validation_error_poisoned=errors[best])
    return iterates[best], result


def step_grows(growth: str, steps: int, gain: float, predicted: float) -> bool:
    """Whether the next try of the batch ascent doubles the step length, after a step accepted at once — its
    ``steps``-th accepted one, which raised A by ``gain`` where the gradient predicted ``predicted`` = g·Δ.

    ``growth="double"``: always. ``growth="model"``: during the first :data:`GROWTH_WARMUP` steps, and then where
    the quadratic model of A along the step, q(t) ≈ A(X + tΔ) − A(X) — its slope g·Δ at the start, its value
    ``gain`` at the end — is still rising at the step's end: q′(1) = g·Δ·(2ρ − 1) ≥ 0, i.e. ρ ≥ ½, with
    ρ = gain / g·Δ (the trust-region ratio of actual to predicted gain). The threshold ½ is a chosen one, not the
    model's verdict on the doubled try itself: that try, from the step's end to t = 3, gains q(3) − q(1) =
    2·g·Δ·(4ρ − 3) on the model, positive only where ρ ≥ ¾. A step whose predicted gain is not positive (the
    momentum can point off the gradient) says nothing of the model, and doubles."""
    check_growth(growth)
    if growth == "double" or steps <= GROWTH_WARMUP or predicted <= 0:
        return True
    return gain >= 0.5 * predicted


def check_growth(growth: str) -> None:
    """Raise ``ValueError`` unless ``growth`` names one of :data:`GROWTH_RULES`."""
    if growth not in GROWTH_RULES:
        raise ValueError(f"unknown step growth {growth!r}: use one of {', '.join(map(repr, GROWTH_RULES))}")


def error_stalled(errors: list[float], stall_error: float) -> bool:
    """Whether the best validation error of the last :data:`ERROR_STALL_WINDOW` iterates exceeds the best of the
    earlier ones (the start included) by less than ``stall_error`` times the best error's gain over the start, or
    falls below it (never while that gain is 0)."""
    if len(errors) <= ERROR_STALL_WINDOW:
        return False
    gain = max(errors) - errors[0]
    return gain > 0 and max(errors[-ERROR_STALL_WINDOW:]) - max(errors[:-ERROR_STALL_WINDOW]) < stall_error * gain


def padded(problem: Problem, X_s: np.ndarray, y_s: np.ndarray, labels: np.ndarray,
           mode: str) -> tuple[np.ndarray, PoisoningResult]:
    """The given points plus one point per entry of ``labels`` placed where it leaves the surrogate trained with
    the given points unchanged (:meth:`Family.inert_points`: exactly for the SVMs and ridge, nearly for logistic
    regression, whose corner points still pull with weight σ(−margin) — the validation loss moved by 3e-8 of
    itself for ``logistic_h`` on the embedded MNIST89, margin 42, while the strongly regularised ``logistic_l``
    reaches margin 5 there and its loss moves by 7e-4), not optimised: what a larger attacker can always do, so
    that it never does worse than a smaller one whose points it was given."""
    session = problem.family.session(problem.X_train, problem.y_train, problem.X_val, problem.y_val)
    clean_fit = session.fit(X_s[:0], y_s[:0])
    given = session.fit(X_s, y_s, warm=clean_fit)
    inert = problem.family.inert_points(given.params, problem.X_train, problem.y_train, labels, problem.lb,
                                        problem.ub)
    X_p = np.vstack([X_s, inert])
    y_p = np.r_[y_s, labels]
    fit = session.fit(X_p, y_p)
    value, error = session.validation_loss(fit), session.validation_error(fit)
    k = len(X_p)
    result = PoisoningResult(np.full(k, value), np.full(k, value), np.zeros(k, dtype=int), np.full(k, -1), 0,
                             session.validation_loss(clean_fit), value, mode=mode, retrainings=session.fits,
                             history=np.array([value]), error_history=np.array([error]),
                             validation_error_clean=session.validation_error(clean_fit),
                             validation_error_poisoned=error, X_start=X_p.copy(), from_start=True,
                             inert=len(labels))
    return X_p, result
