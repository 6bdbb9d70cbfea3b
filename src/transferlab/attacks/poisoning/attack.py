"""Gradient-based availability poisoning (paper Section 3.2, Eqs. 5–7): add n points to the training set so that
the surrogate trained on it has the largest loss on the attacker's validation set.

Each poisoning point starts as a training point with its label flipped (``init``: random, or the points the clean
surrogate classifies most confidently) or at a point the caller gives (``run(start=...)``: a larger attacker
continuing from a smaller one's points), then follows the implicit gradient of its family
(:mod:`transferlab.attacks.poisoning`) under one of two strategies (:mod:`transferlab.attacks.poisoning.strategies`):
``mode="batch"`` (the default), all points together, or ``mode="sequential"``, the paper's one-point-at-a-time
algorithm.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, StrictInt
from threadpoolctl import threadpool_limits

from transferlab.attacks.settings import MAX_GRID, MAX_SEED, MAX_STEPS, AttackSettings, plain
from transferlab.attacks.poisoning.base import Family
from transferlab.attacks.poisoning.strategies import (GrowthRule, PoisoningResult, Problem, batch, padded,
                                                      sequential, start_indices)
from transferlab.errors import ConfigError, DataError, shown
from transferlab.models.base import Classifier, check_X, check_y

#: up to this many rows (training plus poisoning points) the attack runs with one BLAS thread: its matrices are too
#: small for threads to pay, and on a busy machine they cost (sequential ridge, 120 rows: 3.6 s of CPU time with one
#: thread, 23–30 s with the default two on a loaded 2-core machine)
ONE_THREAD_ROWS = 2000
#: a run replaces the given points padded with inert ones (``run(start=...)``) when it is at least as good on both
#: the validation error and loss, or misclassifies more validation points by this many and this fraction of them:
#: one validation point is within the noise (an LFW svm_h case: a 10% run that misclassified one more of the 150
#: validation faces than the padded 5% points misclassified 11 fewer of the 200 test faces)
REPLACE_POINTS, REPLACE_FRACTION = 2, 0.01


class PoisoningSettings(AttackSettings):
    """The settings of :class:`Poisoning` (the config's ``attack.solver`` for ``kind: poisoning``).

    ``mode`` "batch" (the default: all points together, one implicit-gradient solve per step, warm-started
    retraining) or "sequential" (the paper's one-point-at-a-time algorithm; see
    :mod:`transferlab.attacks.poisoning.strategies`); ``max_steps`` common steps, ``momentum`` the weight of the
    previous step in the next direction (heavy ball; 0: the gradient alone), ``stall`` the stall rule (stop once the
    last five steps added less than this fraction of the gain so far; 0: only ``tol`` and ``max_steps`` stop it),
    ``stall_error`` the error stall rule (stop once the best validation error of the last eight steps is above the
    best before them by less than this fraction of its gain, or below it; 0, the default: off — a faster, weaker
    attack where it is on, measured in the README), ``growth`` when the line search's step doubles ("double", the
    default: after every step accepted at once; "model": only where the quadratic model of the validation loss
    along the last step is still rising at the step's end — fewer retrainings, another path; see
    :func:`~transferlab.attacks.poisoning.strategies.step_grows`) and ``keep`` which iterate to return ("error": the one with the
    highest validation error of the surrogate; "last": the last, of the highest validation loss) — batch;
    ``max_passes`` passes over the points and ``max_iter`` ascent steps per point and pass — sequential; ``step``
    the largest step (ℓ2 length per point; default 0.25·‖ub − lb‖·√d); ``grid`` step sizes tried per line search;
    ``tol`` the least gain of the validation loss a step must bring; ``init`` the starting points ("random": a
    seeded random draw, or "confident": the training points the clean surrogate classifies with the largest margin),
    labels flipped."""

    mode: Literal["batch", "sequential"] = "batch"
    max_steps: StrictInt = Field(100, ge=1, le=MAX_STEPS)
    momentum: float = Field(0.9, ge=0, lt=1, allow_inf_nan=False)
    stall: float = Field(0.01, ge=0, lt=1, allow_inf_nan=False)
    stall_error: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False)
    growth: GrowthRule = "double"
    keep: Literal["error", "last"] = "error"
    max_passes: StrictInt = Field(3, ge=1, le=10 ** 6)
    max_iter: StrictInt = Field(5, ge=1, le=MAX_STEPS)
    step: Optional[float] = Field(None, gt=0, allow_inf_nan=False)
    grid: StrictInt = Field(4, ge=1, le=MAX_GRID)
    tol: float = Field(1e-5, ge=0, allow_inf_nan=False)
    init: Literal["random", "confident"] = "random"


class Poisoning:
    """Availability poisoning against a surrogate (a registry name or an unfitted classifier from
    ``models.create``: logistic, ridge, linear SVM or RBF SVM): ``n_points`` poisoning points in the box
    ``lb``/``ub``, the start draw seeded by ``seed``; the attack's own settings (:class:`PoisoningSettings`) as
    ``settings`` and/or keyword arguments (``mode="sequential"``), read back as ``attack.settings``. Every value is
    checked here, once, before any work."""

    Settings = PoisoningSettings

    def __init__(self, surrogate: Any = "logistic_l", n_points: int = 10, lb: float = 0.0, ub: float = 1.0,
                 seed: int = 0, settings: PoisoningSettings | Mapping[str, Any] | None = None,
                 **values: Any) -> None:
        n_points, seed, lb, ub = plain(n_points), plain(seed), plain(lb), plain(ub)
        for name, value, least, most in (("n_points", n_points, 1, MAX_STEPS), ("seed", seed, 0, MAX_SEED)):
            if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
                raise ConfigError(f"{name} must be a whole number >= {least} and <= {most:,}, got {shown(value)}")
        for name, value in (("lb", lb), ("ub", ub)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {shown(value)}")
        if not lb < ub:
            raise ConfigError(f"the box needs lb < ub, got [{lb}, {ub}]")
        self.surrogate, self.n_points, self.lb, self.ub, self.seed = surrogate, n_points, lb, ub, seed
        self.settings: PoisoningSettings = self.Settings.checked(settings, values)  # type: ignore[assignment]
        # built once, here: an unknown or unsupported surrogate is an error when the attack is built
        self._surrogate_family = self._built_family()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.settings)
        return f"Poisoning(surrogate={self.surrogate!r}, n_points={self.n_points}, seed={self.seed}, {fields})"

    def _family(self) -> Family:
        """The surrogate's poisoning family (its hyperparameters only), built when the attack was."""
        return self._surrogate_family

    def _built_family(self) -> Family:
        from transferlab.attacks.poisoning import family_for

        if isinstance(self.surrogate, str):
            from transferlab.models import create

            return family_for(create(self.surrogate))
        if isinstance(self.surrogate, Classifier):
            return family_for(self.surrogate)
        raise ConfigError("surrogate must be a registry name or a classifier from transferlab.models.create")

    def run(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any,
            start: tuple[Any, Any] | PoisoningResult | None = None) -> PoisoningResult:
        """Craft the poisoning points: the result holds them (``X_p``, ``y_p``: the points to add to the training
        set) with the run's diagnostics. The attack itself is not changed by a run.

        ``start`` = (X_s, y_s) or an earlier run's result, at most ``n_points`` rows in the box with labels 0/1,
        offers a second starting set: the first poisoning points start there with those labels (a larger attacker
        continuing from a smaller one's points), the rest are drawn by ``init`` (the last n_points − len(X_s) of
        its draw of ``n_points`` training points). The attack then runs from that set and from its own draw alone and takes
        the run whose points give the surrogate the higher validation error (ties: the higher validation loss, then
        the warm-started run). It also scores the given points with the rest placed where they leave the surrogate
        as the given points made it (:func:`~transferlab.attacks.poisoning.strategies.padded`: what a larger
        attacker can always do — exactly for the SVMs and ridge) and keeps that instead unless the run is at least
        as good on both the validation error and the validation loss, or misclassifies clearly more validation
        points (:data:`REPLACE_POINTS`, :data:`REPLACE_FRACTION`): a new set of points replaces the smaller
        attacker's only where the attacker's own data say it is better. The result's ``from_start`` and
        ``inert`` say which one it kept. Up to :data:`ONE_THREAD_ROWS` rows the attack runs with one BLAS
        thread, and on the features that some row uses (:func:`live_features`; the others stay 0)."""
        X_train, X_val = check_X(X_train, "X_train"), check_X(X_val, "X_val")
        y_train, y_val = check_y(y_train, len(X_train), name="y_train"), check_y(y_val, len(X_val), name="y_val")
        if len(X_val) == 0:
            raise DataError("poisoning needs the attacker's validation set: X_val has no rows")
        if X_val.shape[1] != X_train.shape[1]:
            raise DataError(f"X_val has {X_val.shape[1]} features, X_train {X_train.shape[1]}: the validation "
                            "points must be rows of the same feature space")
        if self.n_points > len(X_train):
            raise ConfigError(f"n_points ({self.n_points}) exceeds the {len(X_train)} training points the poisoning "
                              "points start from; ask for fewer points")
        if set(np.unique(np.r_[y_train, y_val])) - {0, 1}:
            raise DataError("poisoning is implemented for binary problems (labels 0 and 1), the paper's setting; "
                            "pick two classes first")
        if len(X_train) and len(np.unique(y_train)) < 2:
            raise DataError(f"y_train holds only class {int(y_train[0])}: the surrogate needs training points of "
                            "both classes")
        if X_train.min() < self.lb - 1e-12 or X_train.max() > self.ub + 1e-12:
            raise DataError(f"training data lie outside the box [{self.lb}, {self.ub}]; rescale them or set lb/ub")
        X_s, y_s = self._checked_start(start, X_train.shape[1])
        small = len(X_train) + self.n_points <= ONE_THREAD_ROWS
        with threadpool_limits(1) if small else nullcontext():
            X_p, y_p, result = self._crafted(X_train, y_train, X_val, y_val, X_s, y_s)
        result.X_p, result.y_p = X_p.copy(), y_p.copy()
        return result

    def _crafted(self, X_train, y_train, X_val, y_val, X_s, y_s) -> tuple[np.ndarray, np.ndarray, PoisoningResult]:
        d = X_train.shape[1]
        s = self.settings
        max_step = s.step if s.step is not None else 0.25 * (self.ub - self.lb) * np.sqrt(d)
        live = live_features(self.lb, self.ub, X_train, X_val, X_s)
        if live is not None:        # the attack on the other features: the same points, the dead ones stay 0
            X_train, X_val, X_s = X_train[:, live], X_val[:, live], X_s[:, live]
        X_p, y_p, result = self._from_draw(X_train, y_train, X_val, y_val, X_s, y_s, max_step)
        if live is not None:
            X_p, result.X_start = widened(X_p, live, d), widened(result.X_start, live, d)
        return X_p, y_p, result

    def _from_draw(self, X_train, y_train, X_val, y_val, X_s, y_s,
                   max_step: float) -> tuple[np.ndarray, np.ndarray, PoisoningResult]:
        """The points from the seeded draw and, with start points, the choice described in :meth:`run`."""
        problem = Problem(self._family(), X_train, y_train, X_val, y_val, float(self.lb), float(self.ub))
        drawn = start_indices(problem, self.n_points, self.settings.init, self.seed)
        X_p, y_p, result = self._optimise(problem, X_train[drawn], 1 - y_train[drawn], drawn, max_step)
        if len(X_s):
            rest = drawn[len(X_s):]
            labels = 1 - y_train[rest]
            candidates = [(X_p, y_p, result), self._optimise(problem, np.vstack([X_s, X_train[rest]]),
                                                             np.r_[y_s, labels], np.r_[np.full(len(X_s), -1), rest],
                                                             max_step)]
            candidates[1][2].from_start = True
            X_p, y_p, result = max(reversed(candidates), key=lambda c: (c[2].validation_error_poisoned,
                                                                        c[2].validation_loss_poisoned))
            retrainings = sum(c[2].retrainings for c in candidates)
            if len(rest):
                X_i, inert = padded(problem, X_s, y_s, labels, self.settings.mode)
                retrainings += inert.retrainings
                margin = max(REPLACE_POINTS / len(X_val), REPLACE_FRACTION)
                dominates = result.validation_error_poisoned >= inert.validation_error_poisoned and \
                    result.validation_loss_poisoned >= inert.validation_loss_poisoned
                if not dominates and result.validation_error_poisoned < inert.validation_error_poisoned + margin:
                    X_p, y_p, result = X_i, np.r_[y_s, labels], inert
            result.retrainings = retrainings
        return X_p, y_p, result

    def _optimise(self, problem: Problem, X_p: np.ndarray, y_p: np.ndarray, chosen: np.ndarray,
                  max_step: float) -> tuple[np.ndarray, np.ndarray, PoisoningResult]:
        """One run of the configured strategy from (X_p, y_p) (``chosen``: their training indices, −1 for given
        rows; ``max_step``: the largest step, from the full feature space)."""
        X_start, s = X_p.copy(), self.settings
        if s.mode == "batch":
            X_p, result = batch(problem, X_p.copy(), y_p, chosen, max_step=max_step, max_steps=s.max_steps,
                                grid=s.grid, tol=s.tol, stall=s.stall, keep=s.keep, momentum=s.momentum,
                                stall_error=s.stall_error, growth=s.growth)
        else:
            X_p, result = sequential(problem, X_p.copy(), y_p, chosen, max_step=max_step, max_passes=s.max_passes,
                                     max_iter=s.max_iter, grid=s.grid, tol=s.tol)
        result.X_start = X_start
        return X_p, y_p, result

    def _checked_start(self, start: tuple[Any, Any] | PoisoningResult | None,
                       d: int) -> tuple[np.ndarray, np.ndarray]:
        if start is None:
            return np.empty((0, d)), np.empty(0, dtype=np.int64)
        if isinstance(start, PoisoningResult):
            start = (start.X_p, start.y_p)
        if not isinstance(start, (tuple, list)) or len(start) != 2:
            raise DataError("start must be a pair (X_start, y_start) of points and their labels")
        X_s = check_X(start[0], "start X")
        y_s = check_y(start[1], len(X_s))
        if X_s.shape[1] != d:
            raise DataError(f"start points have {X_s.shape[1]} features, the training data {d}")
        if len(X_s) > self.n_points:
            raise DataError(f"start holds {len(X_s)} points, more than n_points ({self.n_points})")
        if len(X_s) and (set(np.unique(y_s)) - {0, 1}):
            raise DataError("start labels must be 0 or 1")
        if len(X_s) and (X_s.min() < self.lb - 1e-12 or X_s.max() > self.ub + 1e-12):
            raise DataError(f"start points lie outside the box [{self.lb}, {self.ub}]")
        return X_s, y_s


def live_features(lb: float, ub: float, *blocks: np.ndarray) -> np.ndarray | None:
    """The columns where some row of ``blocks`` (the training, validation and given start points) is not 0, or
    None where every column is, none is, or 0 is outside the box [lb, ub].

    A feature that is 0 in every row the attack sees stays 0: every family's implicit gradient vanishes there (the
    model does not use the feature: the regularised weight w_j is 0, and a kernel's ∇_x K(a, x) has the entry
    a_j − x_j or a_j, 0 for all rows), a step leaves it at 0, and the clip to the box keeps it where 0 ∈ [lb, ub].
    So the attack runs on the other columns — the same points, at a fraction of the cost where the data have
    such features (the pixels at the border of MNIST digits: 255 of 784 in the bench's 800 training and validation
    images) — and the dead features are put back as 0 (:func:`widened`)."""
    if not lb <= 0.0 <= ub:
        return None
    live = np.flatnonzero(np.any([np.any(block != 0, axis=0) for block in blocks], axis=0))
    return live if 0 < live.size < blocks[0].shape[1] else None


def widened(X: np.ndarray, live: np.ndarray, d: int) -> np.ndarray:
    """The rows of X (the ``live`` columns of points in d features) with the other features put back as 0."""
    out = np.zeros((len(X), d))
    out[:, live] = X
    return out
