"""Gradient-based availability poisoning (paper Section 3.2, Eqs. 5–7): add n points to the training set so that
the surrogate trained on it has the largest loss on the attacker's validation set.

Each poisoning point starts as a random training point with its label flipped, and is optimised one at a time
(the others held fixed) by projected gradient ascent with the line search of Algorithm 1 on the box [lb, ub]: the
direction is the implicit gradient (:mod:`transferlab.attacks.poisoning_gradients`), the step is the best of a
geometric grid of steps, each evaluated by retraining the surrogate on the poisoned set. Passes over all points
repeat until a pass improves the validation loss by less than ``tol`` (or ``max_passes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from transferlab.attacks.poisoning_gradients import Family, family_for
from transferlab.errors import ConfigError, DataError
from transferlab.models.base import Classifier, check_X, check_y


@dataclass
class PoisoningResult:
    """Per poisoning point: the validation loss just before its first optimisation and just after its last one,
    the ascent iterations spent on it, and the index of the training point it started from (label flipped)."""

    objective_before: np.ndarray
    objective_after: np.ndarray
    iterations: np.ndarray
    initial_indices: np.ndarray
    passes: int
    validation_loss_clean: float
    validation_loss_poisoned: float


@dataclass
class Poisoning:
    """Availability poisoning against a surrogate (a registry name or an unfitted classifier from
    ``models.create``: logistic, ridge, linear SVM or RBF SVM).

    Parameters: ``n_points`` poisoning points; ``lb``/``ub`` the box; ``max_passes`` passes over the points;
    ``max_iter`` ascent steps per point and pass; ``step`` the largest step (ℓ2 length; default 0.25·‖ub − lb‖·√d);
    ``grid`` step sizes tried per line search; ``tol`` stopping tolerance on the validation loss; ``seed``.
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
    result_: PoisoningResult | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.n_points < 1:
            raise ConfigError(f"n_points must be at least 1, got {self.n_points}")
        if not self.lb < self.ub:
            raise ConfigError(f"the box needs lb < ub, got [{self.lb}, {self.ub}]")

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
        if set(np.unique(np.r_[y_train, y_val])) - {0, 1}:
            raise DataError("poisoning is implemented for binary problems (labels 0 and 1), the paper's setting; "
                            "pick two classes first")
        if X_train.min() < self.lb - 1e-12 or X_train.max() > self.ub + 1e-12:
            raise DataError(f"training data lie outside the box [{self.lb}, {self.ub}]; rescale them or set lb/ub")
        family = self._family()
        rng = np.random.default_rng(self.seed)
        chosen = rng.choice(len(X_train), size=self.n_points, replace=self.n_points > len(X_train))
        X_p, y_p = X_train[chosen].copy(), 1 - y_train[chosen]
        n = len(X_train)
        X_all, y_all = np.vstack([X_train, X_p]), np.r_[y_train, y_p]
        d = X_train.shape[1]
        max_step = self.step if self.step is not None else 0.25 * (self.ub - self.lb) * np.sqrt(d)
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
                    grad = family.gradient(params, X_all, y_all, c, X_val, y_val)
                    # steps blocked by the box do not count in the direction (as in the evasion attacks)
                    grad[((grad > 0) & (X_all[c] >= self.ub)) | ((grad < 0) & (X_all[c] <= self.lb))] = 0.0
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
        X_p = X_all[n:]
        self.result_ = PoisoningResult(before, after, iterations, chosen, passes, clean, current)
        return X_p.copy(), y_p.copy()
