"""Gradient-based availability poisoning (paper Section 3.2, Eqs. 5–7): add n points to the training set so that
the surrogate trained on it has the largest loss on the attacker's validation set.

Each poisoning point starts as a training point with its label flipped (``init``: random, or the points the clean
surrogate classifies most confidently). Two optimisers, both projected gradient ascent on the box [lb, ub] along
the implicit gradient (:mod:`transferlab.attacks.poisoning_gradients`), each step's length found by retraining the
surrogate on the poisoned set:

* ``mode="sequential"`` — the paper's algorithm: one point at a time (the others held fixed), the step the best of a
  geometric grid (the line search of Algorithm 1); passes over all points repeat until a pass improves the
  validation loss by less than ``tol`` (or ``max_passes``).
* ``mode="batch"`` — all points at once: the implicit gradients of all points share one Hessian solve
  (:meth:`Family.gradients`), every point moves along its own box-blocked, unit-length direction by one common
  step, found by backtracking (halving at most ``grid`` times from the last accepted step, which doubles — up to
  ``step`` — after a step accepted at once; the first try is a quarter of ``step``), and the retraining of the
  accepted step is the next iterate. Retraining is cheap (:meth:`Family.session`): the Gram or kernel matrix of
  the clean rows is cached, logistic regression is warm-started Newton in the n×n dual form, ridge one n×n
  Cholesky, the SVMs an exact active-set solve of the dual warm-started from the previous support-vector
  partition. Stops after ``max_steps`` steps or when no step raises the loss by ``tol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.attacks.base import check_settings
from transferlab.attacks.poisoning_gradients import Family, family_for, signed
from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, check_X, check_y


@dataclass
class PoisoningResult:
    """Per poisoning point: the validation loss just before its first optimisation and just after its last one,
    the ascent iterations spent on it, and the index of the training point it started from (label flipped). In
    batch mode all points share the first two (the loss at the start and at the end) and the iterations (the
    accepted steps); ``history`` is the loss after each accepted step and ``retrainings`` counts every retraining
    (line-search candidates and the clean model included)."""

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


@dataclass
class Poisoning:
    """Availability poisoning against a surrogate (a registry name or an unfitted classifier from
    ``models.create``: logistic, ridge, linear SVM or RBF SVM).

    Parameters: ``n_points`` poisoning points; ``lb``/``ub`` the box; ``mode`` "sequential" (the paper's
    one-point-at-a-time algorithm) or "batch" (all points together, see the module docstring); ``max_passes``
    passes over the points and ``max_iter`` ascent steps per point and pass (sequential); ``max_steps`` common
    steps (batch); ``step`` the largest step (ℓ2 length per point; default 0.25·‖ub − lb‖·√d); ``grid`` step sizes
    tried per line search; ``tol`` stopping tolerance on the validation loss; ``init`` the starting points
    ("random": a seeded random draw, or "confident": the training points the clean surrogate classifies with the
    largest margin), labels flipped; ``seed``.
    """

    surrogate: Any = "logistic_l"
    n_points: int = 10
    lb: float = 0.0
    ub: float = 1.0
    max_passes: int = 3
    max_iter: int = 5
    step: float | None = None
    grid: int = 4
    tol: float = 1e-5
    seed: int = 0
    mode: str = "sequential"
    max_steps: int = 100
    init: str = "random"
    result_: PoisoningResult | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Every setting checked here, once, before any work (the config builds the attack once to report them)."""
        check_settings(self)  # n_points, max_passes, max_iter, step, grid, tol, seed, max_steps: types and ranges
        for name in ("lb", "ub"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if not self.lb < self.ub:
            raise ConfigError(f"the box needs lb < ub, got [{self.lb}, {self.ub}]")
        if self.mode not in ("sequential", "batch"):
            raise ConfigError(f"mode must be 'sequential' or 'batch', got {self.mode!r}")
        if self.init not in ("random", "confident"):
            raise ConfigError(f"init must be 'random' or 'confident', got {self.init!r}")

    def _family(self) -> Family:
        if isinstance(self.surrogate, str):
            from transferlab.models import create

            return family_for(create(self.surrogate))
        if isinstance(self.surrogate, Classifier):
            return family_for(self.surrogate)
        raise ConfigError("surrogate must be a registry name or a classifier from transferlab.models.create")

    def run(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any) -> tuple[np.ndarray, np.ndarray]:
        """Craft the poisoning points; returns (X_p, y_p) only (the points to add to the training set)."""
        X_train, X_val = check_X(X_train, "X_train"), check_X(X_val, "X_val")
        y_train, y_val = check_y(y_train, len(X_train)), check_y(y_val, len(X_val))
        if len(X_val) == 0:
            raise DataError("poisoning needs the attacker's validation set: X_val has no rows")
        if self.n_points > len(X_train):
            raise ConfigError(f"n_points ({self.n_points}) exceeds the {len(X_train)} training points the poisoning "
                              "points start from; ask for fewer points")
        if set(np.unique(np.r_[y_train, y_val])) - {0, 1}:
            raise DataError("poisoning is implemented for binary problems (labels 0 and 1), the paper's setting; "
                            "pick two classes first")
        if X_train.min() < self.lb - 1e-12 or X_train.max() > self.ub + 1e-12:
            raise DataError(f"training data lie outside the box [{self.lb}, {self.ub}]; rescale them or set lb/ub")
        family = self._family()
        chosen = self._initial_indices(family, X_train, y_train)
        X_p, y_p = X_train[chosen].copy(), 1 - y_train[chosen]
        d = X_train.shape[1]
        max_step = self.step if self.step is not None else 0.25 * (self.ub - self.lb) * np.sqrt(d)
        if self.mode == "batch":
            X_p, self.result_ = self._run_batch(family, X_train, y_train, X_val, y_val, X_p, y_p, chosen, max_step)
        else:
            X_p, self.result_ = self._run_sequential(family, X_train, y_train, X_val, y_val, X_p, y_p, chosen,
                                                     max_step)
        return X_p.copy(), y_p.copy()

    def _initial_indices(self, family: Family, X_train: np.ndarray, y_train: np.ndarray) -> np.ndarray:
        """The training points the poisoning points start from (n_points <= len(X_train), checked by run)."""
        if self.init == "confident":
            margins = signed(y_train) * family.scores(family.fit(X_train, y_train), X_train)
            return np.argsort(-margins, kind="stable")[:self.n_points]
        rng = np.random.default_rng(self.seed)
        return rng.choice(len(X_train), size=self.n_points, replace=False)

    def _unblocked(self, grad: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The gradient with the coordinates a step could not follow (at a box bound) set to 0, as the evasion
        attacks do: such steps do not count in the direction."""
        grad[((grad > 0) & (X >= self.ub)) | ((grad < 0) & (X <= self.lb))] = 0.0
        return grad

    def _run_sequential(self, family, X_train, y_train, X_val, y_val, X_p, y_p, chosen, max_step):
        n = len(X_train)
        X_all, y_all = np.vstack([X_train, X_p]), np.r_[y_train, y_p]
        clean = family.validation_loss(family.fit(X_train, y_train), X_val, y_val)
        current = family.validation_loss(family.fit(X_all, y_all), X_val, y_val)
        before = np.full(self.n_points, np.nan)
        after = np.full(self.n_points, np.nan)
        iterations = np.zeros(self.n_points, dtype=int)
        steps = np.full(self.n_points, max_step)
        passes = 0
        for passes in range(1, self.max_passes + 1):
            start_of_pass = current
            for k in range(self.n_points):
                c = n + k
                if np.isnan(before[k]):
                    before[k] = current
                for _ in range(self.max_iter):
                    params = family.fit(X_all, y_all)
                    grad = self._unblocked(family.gradient(params, X_all, y_all, c, X_val, y_val), X_all[c])
                    norm = np.linalg.norm(grad)
                    iterations[k] += 1
                    if norm == 0:
                        break
                    etas = steps[k] * 2.0 ** -np.arange(self.grid)
                    candidates = np.clip(X_all[c] + etas[:, None] * grad / norm, self.lb, self.ub)
                    values = family.validation_losses(params, X_all, y_all, c, candidates, X_val, y_val)
                    best = int(np.argmax(values))
                    if values[best] <= current + self.tol:
                        steps[k] = max(etas[-1], steps[k] / 2 ** self.grid)
                        break
                    X_all[c], current = candidates[best], float(values[best])
                    # reuse a step that worked, allowing it to grow again next time
                    steps[k] = min(max_step, 2 * etas[best])
                after[k] = current
            if current - start_of_pass <= self.tol:
                break
        return X_all[n:], PoisoningResult(before, after, iterations, chosen, passes, clean, current)

    def _run_batch(self, family, X_train, y_train, X_val, y_val, X_p, y_p, chosen, max_step):
        session = family.session(X_train, y_train, X_val, y_val)
        clean_fit = session.fit(X_p[:0], y_p[:0])
        clean = session.validation_loss(clean_fit)
        fit = session.fit(X_p, y_p, warm=clean_fit)
        current = session.validation_loss(fit)
        history = [current]
        eta = max_step / 4      # a careful first step: the first moves choose the basin of the local optimum
        steps = 0
        for _ in range(self.max_steps):
            grad = self._unblocked(session.gradients(fit), X_p)
            norms = np.linalg.norm(grad, axis=1)
            if not norms.any():
                break
            direction = grad / np.where(norms > 0, norms, 1.0)[:, None]
            accepted = False
            for attempt in range(self.grid):
                candidate = np.clip(X_p + eta * direction, self.lb, self.ub)
                trial = session.fit(candidate, y_p, warm=fit)
                value = session.validation_loss(trial)
                if value > current + self.tol:
                    accepted = True
                    break
                eta /= 2
            if not accepted:
                break
            X_p, fit, current = candidate, trial, value
            history.append(current)
            steps += 1
            if attempt == 0:                                   # grow only a step that was accepted at once
                eta = min(max_step, 2 * eta)
        k = self.n_points
        result = PoisoningResult(np.full(k, history[0]), np.full(k, current), np.full(k, steps), chosen, 1, clean,
                                 current, mode="batch", retrainings=session.fits, history=np.asarray(history))
        return X_p, result
